using Mamba.Generation;
using Mamba.Model;

namespace Mamba.Tests.Generation;

/// <summary>
/// The generation core every generate method and the bench run through: compaction (when finished rows leave the
/// batch, and that it changes no token), a caller's cache, chunked prefill, the GenerateGreedy wrapper, and the one
/// error for a row with nothing to choose.
/// </summary>
public class GenerationLoopTests
{
    private static MambaForCausalLM Fixture(string name = "tiny") => MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model(name), "model"));

    private static int[] Prompt(int length, int seed, int vocab)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(1, vocab)).ToArray();
    }

    private static int[][] Prompts(int vocab) => [Prompt(3, 41, vocab), Prompt(8, 42, vocab), Prompt(1, 43, vocab), Prompt(5, 44, vocab), Prompt(12, 45, vocab)];

    /// <summary>Runs a loop to the end, recording how many cache slots each step ran with.</summary>
    private static (IReadOnlyList<GenerationResult> Results, List<int> Slots) Run(GenerationLoop loop)
    {
        var slots = new List<int>();
        loop.Prefill();
        while (!loop.IsFinished)
        {
            loop.Step();
            slots.Add(loop.BatchSlots);
        }
        return (loop.Results(), slots);
    }

    /// <summary>Eos ids that end rows 1, 3 and 0 of a free run at different steps.</summary>
    private static int[] StaggeredEos(IReadOnlyList<GenerationResult> free) => [free[1].OutputIds[2], free[3].OutputIds[5], free[0].OutputIds[9]];

    [TestCase(false, 1.0), TestCase(true, 1.0), TestCase(false, 1.3)]
    public void KeepingFinishedRowsInTheBatchChangesNoToken(bool sample, double penalty)
    {
        using var lm = Fixture("small-long");
        var prompts = Prompts(lm.Config.VocabSize);
        // max_length 21 gives prompts of 3, 8, 1, 5 and 12 tokens 18, 13, 20, 16 and 9 new ones: rows end one at a time.
        var options = new GenerationOptions { MaxLength = 21, EosTokenIds = [], DoSample = sample, Seed = 3, TopK = 0, Temperature = 2.0, RepetitionPenalty = penalty };
        using var compacting = GenerationLoop.ForPrompts(lm, null, prompts, options, []);
        compacting.RetainFinishedRows = false;
        var (expected, compactSlots) = Run(compacting);
        using var retaining = GenerationLoop.ForPrompts(lm, null, prompts, options, []);
        retaining.RetainFinishedRows = true;
        var (got, retainSlots) = Run(retaining);
        Assert.That(expected.Select(r => r.OutputIds.Count), Is.EqualTo(new[] { 18, 13, 20, 16, 9 }));
        for (int i = 0; i < prompts.Length; i++)
            Assert.That(got[i].OutputIds, Is.EqualTo(expected[i].OutputIds), $"row {i}");
        // Compacting at once: the batch is the live rows after every step. Retaining: it shrinks only once at most
        // half its slots are live (5 slots until 2 rows are left, then 2, 1, 0).
        Assert.That(compactSlots, Is.EqualTo(Enumerable.Range(0, 20).Select(s => expected.Count(r => r.OutputIds.Count > s + 1))));
        Assert.That(retainSlots, Is.EqualTo(Enumerable.Range(0, 20).Select(s => s < 15 ? 5 : s < 17 ? 2 : s < 19 ? 1 : 0)));
    }

    [Test]
    public void RowsEndingAtEosKeepTheirTokensWhenFinishedRowsStay()
    {
        using var lm = Fixture("small-long");
        var prompts = Prompts(lm.Config.VocabSize);
        var free = new GenerationOptions { MaxNewTokens = 16, EosTokenIds = [], DoSample = true, Seed = 3, TopK = 0, Temperature = 2.0 };
        using var freeLoop = GenerationLoop.ForPrompts(lm, null, prompts, free, []);
        var freeResults = Run(freeLoop).Results;
        var options = free with { EosTokenIds = StaggeredEos(freeResults) };
        var runs = new[] { false, true }.Select(retain =>
        {
            using var loop = GenerationLoop.ForPrompts(lm, null, prompts, options, []);
            loop.RetainFinishedRows = retain;
            return Run(loop).Results;
        }).ToArray();
        Assert.That(runs[0].Count(r => r.FinishReason == FinishReason.EndOfSequence), Is.GreaterThanOrEqualTo(2), "the eos ids should end rows early");
        for (int i = 0; i < prompts.Length; i++)
        {
            // Each row's own sampler: its tokens are the free run's, cut after its first eos.
            var cut = freeResults[i].OutputIds.TakeWhile(t => !options.EosTokenIds!.Contains(t)).ToList();
            if (cut.Count < freeResults[i].OutputIds.Count) cut.Add(freeResults[i].OutputIds[cut.Count]);
            Assert.That(runs[0][i].OutputIds, Is.EqualTo(cut), $"row {i}, compacting");
            Assert.That(runs[1][i].OutputIds, Is.EqualTo(cut), $"row {i}, retaining");
        }
    }

    [Test]
    public void BatchedRowsEqualEachPromptAloneWhileRowsFinish()
    {
        // use_bias = false (tiny): padding, masks and compaction leave every row as it is alone.
        using var lm = Fixture();
        var prompts = Prompts(lm.Config.VocabSize);
        var free = new GenerationOptions { MaxNewTokens = 14, EosTokenIds = [] };
        using var freeLoop = GenerationLoop.ForPrompts(lm, null, prompts, free, []);
        var options = free with { EosTokenIds = StaggeredEos(Run(freeLoop).Results) };
        foreach (var retain in new[] { false, true })
        {
            using var batch = GenerationLoop.ForPrompts(lm, null, prompts, options, []);
            batch.RetainFinishedRows = retain;
            var results = Run(batch).Results;
            for (int i = 0; i < prompts.Length; i++)
            {
                using var alone = GenerationLoop.ForPrompts(lm, null, [prompts[i]], options, []);
                Assert.That(results[i].OutputIds, Is.EqualTo(Run(alone).Results[0].OutputIds), $"row {i}, retain {retain}");
            }
        }
    }

    [Test]
    public void ACallersCacheIsFilledAndLeftUndisposed()
    {
        using var lm = Fixture();
        var ids = new int[2, 5];
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 5; t++) ids[b, t] = 7 * b + t + 1;
        var options = new GenerationOptions { MaxNewTokens = 6 };
        using var own = GenerationLoop.ForBatch(lm, ids, null, options, []);
        var expected = Run(own).Results;
        using var cache = lm.CreateCache(2);
        for (int round = 0; round < 2; round++)
        {
            cache.Reset();
            using var loop = GenerationLoop.ForBatch(lm, ids, null, options, [], cache);
            var got = Run(loop).Results;
            Assert.That(got.Select(r => r.OutputIds), Is.EqualTo(expected.Select(r => r.OutputIds)), $"round {round}");
            Assert.That(cache.SeenTokens, Is.EqualTo(5 + 5), "prefill and five decode steps advanced the caller's cache");
        }
        Assert.Throws<ArgumentException>(() => GenerationLoop.ForBatch(lm, ids, null, options, [], cache), "a filled cache");
        using var wrongSize = lm.CreateCache(3);
        Assert.Throws<ArgumentException>(() => GenerationLoop.ForBatch(lm, ids, null, options, [], wrongSize));
    }

    [TestCase(1.0), TestCase(1.3)]
    public void AChunkedPrefillGivesTheSameTokens(double penalty)
    {
        // 1.0 chooses on the backend (PrefillChunked), 1.3 brings logits to the host (chunk by chunk forwards).
        using var lm = Fixture("small-long");
        var ids = new int[2, 9];
        var rng = new Random(11);
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 9; t++) ids[b, t] = rng.Next(lm.Config.VocabSize);
        var options = new GenerationOptions { MaxNewTokens = 8, EosTokenIds = [], RepetitionPenalty = penalty };
        using var whole = GenerationLoop.ForBatch(lm, ids, null, options, []);
        using var chunked = GenerationLoop.ForBatch(lm, ids, null, options, [], prefillChunkTokens: 4);
        Assert.That(Run(chunked).Results.Select(r => r.OutputIds), Is.EqualTo(Run(whole).Results.Select(r => r.OutputIds)));
        Assert.Throws<ArgumentException>(() => GenerationLoop.ForBatch(lm, ids, new int[2, 9], options, [], prefillChunkTokens: 4), "a mask with chunks");
    }

    [Test]
    public void GenerateGreedyPadsFinishedRowsAndStopsWhenAllAreDone()
    {
        var config = new MambaConfig { VocabSize = 100, HiddenSize = 32, NumHiddenLayers = 2, StateSize = 4, EosTokenIds = [], PadTokenId = 99 };
        var weights = MambaInitializer.Create(config, seed: 3);
        var ids = new int[,] { { 5, 6, 7, 8 }, { 1, 2, 3, 4 }, { 9, 9, 9, 9 } };
        int[,] free;
        using (var lm = new MambaForCausalLM(weights))
            free = lm.GenerateGreedy(ids, maxNewTokens: 10);
        Assert.That(free.GetLength(1), Is.EqualTo(14));
        int eos = free[0, 4 + 1];
        var withEos = new MambaWeights(new ParameterStore<float[]>(config with { EosTokenIds = [eos] }, entry => weights.Values[entry.Key]));
        using var model = new MambaForCausalLM(withEos);
        var got = model.GenerateGreedy(ids, maxNewTokens: 10);
        // Each row is its free run cut after its first eos and padded; the output is as wide as the longest row.
        var lengths = Enumerable.Range(0, 3).Select(b =>
        {
            for (int s = 0; s < 10; s++)
                if (free[b, 4 + s] == eos) return s + 1;
            return 10;
        }).ToArray();
        Assert.That(got.GetLength(1), Is.EqualTo(4 + lengths.Max()));
        for (int b = 0; b < 3; b++)
            for (int t = 0; t < got.GetLength(1); t++)
                Assert.That(got[b, t], Is.EqualTo(t < 4 + lengths[b] ? free[b, t] : 99), $"row {b}, position {t}");
        Assert.That(model.GenerateGreedy(ids, maxNewTokens: 0), Is.EqualTo(ids));
        // min_new_tokens keeps eos out of the first tokens; a minimum above the maximum keeps it out throughout.
        var late = model.GenerateGreedy(ids, maxNewTokens: 10, minNewTokens: 50);
        Assert.That(late.GetLength(1), Is.EqualTo(14));
        for (int b = 0; b < 3; b++)
            for (int t = 4; t < 14; t++) Assert.That(late[b, t], Is.Not.EqualTo(eos));
    }

    [Test]
    public void ARowWithNoUsableScoreFailsTheSameWayOnEveryPath()
    {
        var config = new MambaConfig { VocabSize = 100, HiddenSize = 32, NumHiddenLayers = 2, StateSize = 4 };
        var weights = MambaInitializer.Create(config, seed: 3);
        Array.Fill(weights[ParameterId.NormF], float.NaN); // every logit NaN
        using var lm = new MambaForCausalLM(weights);
        const string message = "every logit is NaN: the model produced no usable scores";
        Assert.That(() => lm.GenerateGreedy(new int[,] { { 1, 2, 3 } }, maxNewTokens: 4),
            Throws.TypeOf<MambaNumericalException>().With.Message.StartsWith(message), "argmax on the backend");
        foreach (var options in new[]
                 {
                     new GenerationOptions { MaxNewTokens = 4 },                            // on the backend
                     new GenerationOptions { MaxNewTokens = 4, RepetitionPenalty = 1.2 },   // on the host
                     new GenerationOptions { MaxNewTokens = 4, MinNewTokens = 2 },          // on the host (no eos to mask: a −∞ would be a value)
                 })
        {
            using var loop = GenerationLoop.ForPrompts(lm, null, [[1, 2, 3]], options, []);
            loop.Prefill();
            Assert.That(() => loop.Step(), Throws.TypeOf<MambaNumericalException>().With.Message.StartsWith(message), $"penalty {options.RepetitionPenalty}, min {options.MinNewTokens}");
        }
    }

    [Test]
    public void MinNewTokensMovesTheChoiceToTheBackendOnceEveryRowIsPastIt()
    {
        // The loop brings logits to the host while eos is suppressed, then lets the backend choose. Oracle: each prompt
        // alone, every logit on the host, eos set to -inf for the first tokens, then the rule.
        using var lm = Fixture("small-long");
        var prompts = Prompts(lm.Config.VocabSize);
        const int minNew = 3, maxNew = 12;
        int[] eos = [64, 7, 55, 89];
        using var loop = GenerationLoop.ForPrompts(lm, null, prompts, new GenerationOptions { MaxNewTokens = maxNew, MinNewTokens = minNew, EosTokenIds = eos }, []);
        var got = Run(loop).Results;
        for (int i = 0; i < prompts.Length; i++)
        {
            using var cache = lm.CreateCache(1);
            var expected = new List<int>();
            var input = new int[1, prompts[i].Length];
            for (int t = 0; t < prompts[i].Length; t++) input[0, t] = prompts[i][t];
            while (expected.Count < maxNew)
            {
                var logits = lm.Forward(input, new ForwardOptions { Cache = cache, LogitsToKeep = 1 }).Logits.Row(0, 0).ToArray();
                if (expected.Count < minNew)
                    foreach (var id in eos) logits[id] = float.NegativeInfinity;
                int token = ArgMaxRule.Of(logits);
                expected.Add(token);
                if (eos.Contains(token)) break;
                input = new int[,] { { token } };
            }
            Assert.That(got[i].OutputIds, Is.EqualTo(expected), $"row {i}");
        }
    }
}
