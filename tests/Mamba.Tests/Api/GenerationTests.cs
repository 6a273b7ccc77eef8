using Mamba.Generation;
using Mamba.IO;

namespace Mamba.Tests.Api;

public class GenerationTests
{
    private static int[] Prompt(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(1, 512)).ToArray();
    }

    [Test]
    public async Task GreedyGenerationEqualsTheFixture()
    {
        foreach (var name in new[] { "tiny", "tiny-untied-bias", "small-long" })
        {
            using var model = MambaModel.Load(Path.Combine(TestFixtures.Model(name), "model"), new MambaModelOptions { Backend = BackendPreference.Cpu });
            using var reference = SafeTensorsFile.Open(Path.Combine(TestFixtures.Model(name), "reference.safetensors"));
            var prompt = reference.ReadInt64("generate.prompt").Select(x => (int)x).ToArray();
            var greedy = reference.ReadInt64("generate.greedy").Select(x => (int)x).ToArray();
            var result = await model.GenerateAsync(prompt, new GenerationOptions { MaxNewTokens = greedy.Length - prompt.Length });
            Assert.That(prompt.Concat(result.OutputIds).ToArray(), Is.EqualTo(greedy), name);
        }
    }

    [Test]
    public async Task BatchedGreedyEqualsEachPromptAlone()
    {
        // use_bias = false (tiny): left padding + mask must not change any row. Lengths 1, < K, = K, > K.
        var model = ApiTestModels.Tiny;
        int[][] prompts = [Prompt(1, 1), Prompt(3, 2), Prompt(4, 3), Prompt(9, 4), Prompt(17, 5)];
        var options = new GenerationOptions { MaxNewTokens = 12, EosTokenIds = [] };
        var batch = await model.GenerateBatchAsync(prompts, options);
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = await model.GenerateAsync(prompts[i], options);
            Assert.That(batch[i].OutputIds, Is.EqualTo(alone.OutputIds), $"prompt {i} (length {prompts[i].Length})");
            Assert.That(batch[i].PromptIds, Is.EqualTo(prompts[i]));
        }
    }

    [Test]
    public async Task RowsFinishingEarlyLeaveTheBatchWithoutChangingOthers()
    {
        var model = ApiTestModels.Tiny;
        int[][] prompts = [Prompt(5, 11), Prompt(2, 12), Prompt(8, 13)];
        var free = await model.GenerateBatchAsync(prompts, new GenerationOptions { MaxNewTokens = 10, EosTokenIds = [] });
        // Make row 1's third token an eos id: row 1 stops there, the others continue unchanged.
        int eos = free[1].OutputIds[2];
        var stopped = await model.GenerateBatchAsync(prompts, new GenerationOptions { MaxNewTokens = 10, EosTokenIds = [eos] });
        Assert.That(stopped[1].FinishReason, Is.EqualTo(FinishReason.EndOfSequence));
        Assert.That(stopped[1].OutputIds, Is.EqualTo(free[1].OutputIds.Take(free[1].OutputIds.ToList().IndexOf(eos) + 1)));
        for (int i = 0; i < 3; i++)
        {
            int cut = free[i].OutputIds.ToList().IndexOf(eos);
            var expected = cut >= 0 ? free[i].OutputIds.Take(cut + 1) : free[i].OutputIds;
            Assert.That(stopped[i].OutputIds, Is.EqualTo(expected.ToArray()), $"row {i}");
        }
    }

    [Test]
    public async Task MaxAndMinNewTokensAreHonoured()
    {
        var model = ApiTestModels.Tiny;
        var prompt = Prompt(6, 21);
        var free = await model.GenerateAsync(prompt, new GenerationOptions { MaxNewTokens = 8, EosTokenIds = [] });
        Assert.That(free.OutputIds, Has.Count.EqualTo(8));
        Assert.That(free.FinishReason, Is.EqualTo(FinishReason.Length));
        Assert.That(free.Usage, Is.EqualTo(new GenerationUsage(6, 8)));
        int first = free.OutputIds[0];
        // With the first greedy token as eos, generation stops at once...
        var eosNow = await model.GenerateAsync(prompt, new GenerationOptions { MaxNewTokens = 8, EosTokenIds = [first] });
        Assert.That(eosNow.OutputIds, Is.EqualTo(new[] { first }));
        Assert.That(eosNow.FinishReason, Is.EqualTo(FinishReason.EndOfSequence));
        // ...unless min_new_tokens forbids eos for the first 3 tokens.
        var min = await model.GenerateAsync(prompt, new GenerationOptions { MaxNewTokens = 8, MinNewTokens = 3, EosTokenIds = [first] });
        Assert.That(min.OutputIds.Take(3), Has.None.EqualTo(first));
        var none = await model.GenerateAsync(prompt, new GenerationOptions { MaxNewTokens = 0 });
        Assert.That(none.OutputIds, Is.Empty);
    }

    [Test]
    public async Task SeededSamplingIsReproducible()
    {
        var model = ApiTestModels.Tiny;
        var prompt = Prompt(4, 31);
        var options = new GenerationOptions { MaxNewTokens = 16, DoSample = true, Temperature = 1.5f, TopK = 0, Seed = 1234, EosTokenIds = [] };
        var a = await model.GenerateAsync(prompt, options);
        var b = await model.GenerateAsync(prompt, options);
        var c = await model.GenerateAsync(prompt, options with { Seed = 99 });
        Assert.That(b.OutputIds, Is.EqualTo(a.OutputIds));
        Assert.That(c.OutputIds, Is.Not.EqualTo(a.OutputIds));
        var greedy = await model.GenerateAsync(prompt, new GenerationOptions { MaxNewTokens = 16, EosTokenIds = [] });
        Assert.That(a.OutputIds, Is.Not.EqualTo(greedy.OutputIds), "temperature 1.5 sampling over 16 tokens should leave the greedy path");
    }

    [Test]
    public void CancellationStopsBetweenTokens()
    {
        var model = ApiTestModels.Default;
        using var cts = new CancellationTokenSource();
        int pieces = 0;
        Assert.CatchAsync<OperationCanceledException>(async () =>
        {
            await foreach (var piece in model.GenerateStreamingAsync("Hello", new GenerationOptions { MaxNewTokens = 200, EosTokenIds = [] }, cts.Token))
            {
                if (++pieces == 3) cts.Cancel();
            }
        });
        Assert.That(pieces, Is.InRange(3, 4));
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.CatchAsync<OperationCanceledException>(() => model.GenerateAsync("Hello", null, cancelled.Token));
    }

    [Test]
    public async Task StreamingPiecesConcatenateToTheTextAndNeverSplitCharacters()
    {
        var model = ApiTestModels.Default;
        var options = new GenerationOptions { MaxNewTokens = 40, EosTokenIds = [], DoSample = true, Seed = 5, TopK = 0 };
        var pieces = new List<string>();
        await foreach (var piece in model.GenerateStreamingAsync("Ünïcödé 東京 🙂", options)) pieces.Add(piece);
        var result = await model.GenerateAsync("Ünïcödé 東京 🙂", options);
        Assert.That(string.Concat(pieces), Is.EqualTo(result.Text));
        Assert.That(result.Text, Is.EqualTo(model.Tokenizer!.Decode(result.OutputIds, skipSpecialTokens: true)));
        foreach (var piece in pieces)
        {
            Assert.That(piece, Does.Not.Contain('\uFFFD'));
            Assert.That(char.IsHighSurrogate(piece[^1]), Is.False, "a piece ends inside a surrogate pair");
        }
    }

    [Test]
    public async Task StopSequencesEndTheTextBeforeThem()
    {
        var model = ApiTestModels.Default;
        var options = new GenerationOptions { MaxNewTokens = 30, EosTokenIds = [] };
        var free = await model.GenerateAsync("The", options);
        Assume.That(free.Text.Length, Is.GreaterThan(6), "the untrained model produced too little text to cut");
        var stop = free.Text.Substring(free.Text.Length / 2, 3);
        int at = free.Text.IndexOf(stop, StringComparison.Ordinal);
        var cut = await model.GenerateAsync("The", options with { StopSequences = [stop] });
        Assert.That(cut.FinishReason, Is.EqualTo(FinishReason.StopSequence));
        Assert.That(cut.Text, Is.EqualTo(free.Text[..at]));
        var streamed = new List<string>();
        await foreach (var piece in model.GenerateStreamingAsync("The", options with { StopSequences = [stop] })) streamed.Add(piece);
        Assert.That(string.Concat(streamed), Is.EqualTo(free.Text[..at]));
    }
}
