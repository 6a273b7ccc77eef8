using Mamba.Model;

namespace Mamba.Tests.Model;

/// <summary>Model semantics beyond the fixtures: logits_to_keep, inputs_embeds, decode = full forward, loss edge cases.</summary>
public class ModelBehaviourTests
{
    private static MambaForCausalLM Tiny() => MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("tiny"), "model"));

    private static readonly int[,] Ids = { { 3, 17, 250, 9, 9, 100, 42 }, { 1, 2, 3, 4, 5, 6, 7 } };

    [Test]
    public void LogitsToKeepSelectsTheLastPositions()
    {
        using var model = Tiny();
        var all = model.Forward(Ids).Logits;
        var last2 = model.Forward(Ids, new ForwardOptions { LogitsToKeep = 2 }).Logits;
        Assert.That(last2.Shape, Is.EqualTo(new[] { 2, 2, 512 }));
        for (int b = 0; b < 2; b++)
            for (int j = 0; j < 2; j++)
                Assert.That(last2.Row(b, j).ToArray(), Is.EqualTo(all.Row(b, 5 + j).ToArray()));
        var picked = model.Forward(Ids, new ForwardOptions { KeepPositions = [0, 4] }).Logits;
        Assert.That(picked.Row(1, 1).ToArray(), Is.EqualTo(all.Row(1, 4).ToArray()));
        Assert.That(model.Forward(Ids, new ForwardOptions { LogitsToKeep = 0 }).Logits.Shape[1], Is.EqualTo(7));
    }

    [Test]
    public void InputsEmbedsEqualTheEmbeddingOfTheIds()
    {
        using var model = Tiny();
        var weights = CheckpointLoader.LoadWeights(Path.Combine(TestFixtures.Model("tiny"), "model"));
        var embeds = new float[2, 7, 64];
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 7; t++)
                for (int j = 0; j < 64; j++) embeds[b, t, j] = weights[ParameterId.Embeddings][Ids[b, t] * 64 + j];
        Assert.That(model.ForwardEmbeddings(embeds).Logits.Data, Is.EqualTo(model.Forward(Ids).Logits.Data));
    }

    [Test]
    public void ACallThatFailsAfterWritingTheCacheEmptiesAFreshOneAndLosesAFilledOne()
    {
        // A label outside the vocabulary fails the loss, after the blocks wrote the cache (as running out of device memory
        // for the logits would): the caller never gets the call's result, so the cache must not keep the call's tokens silently.
        using var model = Tiny();
        var bad = new int[,] { { 1, 2, 3 }, { 4, 5, 100000 } };
        var prefix = new int[2, 3];
        for (int b = 0; b < 2; b++) for (int t = 0; t < 3; t++) prefix[b, t] = Ids[b, t];
        var step = new int[,] { { Ids[0, 3] }, { Ids[1, 3] } };
        var more = new int[,] { { Ids[0, 3], Ids[0, 4] }, { Ids[1, 3], Ids[1, 4] } };
        var badMore = new int[,] { { 1, 2 }, { 1, 100000 } }; // shifted: row 1's first position has target 100000
        CausalLMOutput expected;
        using (var reference = model.CreateCache(2))
        {
            model.Forward(prefix, new ForwardOptions { Cache = reference });
            expected = model.Forward(step, new ForwardOptions { Cache = reference });
        }

        using var cache = model.CreateCache(2);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(prefix, new ForwardOptions { Cache = cache, Labels = bad }));
        Assert.That(cache.HasPreviousState, Is.False, "a failed prefill leaves the cache empty");
        Assert.That(cache.SeenTokens, Is.EqualTo(0));
        Assert.That(cache.StateLost, Is.False);
        model.Forward(prefix, new ForwardOptions { Cache = cache });
        Assert.That(model.Forward(step, new ForwardOptions { Cache = cache }).Logits.Data, Is.EqualTo(expected.Logits.Data), "the prefill retried");

        cache.Reset();
        model.Forward(prefix, new ForwardOptions { Cache = cache });
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(more, new ForwardOptions { Cache = cache, Labels = badMore }));
        Assert.That(cache.StateLost, Is.True, "the continuation advanced the states, and its caller got nothing");
        Assert.Throws<InvalidOperationException>(() => model.Forward(step, new ForwardOptions { Cache = cache }));
        Assert.Throws<InvalidOperationException>(() => model.ForwardArgMax(step, cache));
        Assert.Throws<InvalidOperationException>(() => cache.Snapshot());
        Assert.Throws<InvalidOperationException>(() => cache.SelectRows([0]));
        Assert.That(cache.SeenTokens, Is.EqualTo(3), "the failed step is not counted");

        cache.Reset();
        Assert.That(cache.StateLost, Is.False);
        model.Forward(prefix, new ForwardOptions { Cache = cache });
        var snapshot = cache.Snapshot();
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(more, new ForwardOptions { Cache = cache, Labels = badMore }));
        Assert.That(cache.StateLost, Is.True);
        cache.Restore(snapshot);
        Assert.That(cache.StateLost, Is.False, "Restore brings a known state back");
        Assert.That(model.Forward(step, new ForwardOptions { Cache = cache }).Logits.Data, Is.EqualTo(expected.Logits.Data), "after Restore");
    }

    [Test]
    public void DecodeStepsContinueThePrefillLikeAFullForward()
    {
        // Prefill 3 tokens, then 4 single-token steps (also L < K for the prefill), equals one forward over 7.
        using var model = Tiny();
        var full = model.Forward(Ids).Logits;
        using var cache = model.CreateCache(2);
        var prefix = new int[2, 3];
        for (int b = 0; b < 2; b++) for (int t = 0; t < 3; t++) prefix[b, t] = Ids[b, t];
        model.Forward(prefix, new ForwardOptions { Cache = cache });
        for (int t = 3; t < 7; t++)
        {
            var step = model.Forward(new int[,] { { Ids[0, t] }, { Ids[1, t] } }, new ForwardOptions { Cache = cache });
            for (int b = 0; b < 2; b++)
            {
                var expected = full.Row(b, t).ToArray();
                var got = step.Logits.Row(b, 0).ToArray();
                Assert.That(got, Is.EqualTo(expected).Within(1e-4f), $"position {t}, row {b}");
            }
        }
        Assert.That(cache.SeenTokens, Is.EqualTo(7));
    }

    [Test]
    public void SeveralTokensOnAFilledCacheContinueExactly()
    {
        using var model = Tiny();
        var full = model.Forward(Ids).Logits;
        using var cache = model.CreateCache(2);
        model.Forward(new int[,] { { Ids[0, 0], Ids[0, 1] }, { Ids[1, 0], Ids[1, 1] } }, new ForwardOptions { Cache = cache });
        var rest = new int[2, 5];
        for (int b = 0; b < 2; b++) for (int t = 0; t < 5; t++) rest[b, t] = Ids[b, t + 2];
        var output = model.Forward(rest, new ForwardOptions { Cache = cache });
        Assert.That(output.Logits.Row(1, 4).ToArray(), Is.EqualTo(full.Row(1, 6).ToArray()).Within(1e-4f));
    }

    [TestCase("tiny", 1)]
    [TestCase("tiny", 3)]
    [TestCase("small-long", 7)]
    [TestCase("small-long", 64)]
    [TestCase("small-long", 299)]
    public void ChunkedPrefillEqualsOneFullPrefill(string name, int chunk)
    {
        using var model = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model(name), "model"));
        using var reference = Mamba.IO.SafeTensorsFile.Open(Path.Combine(TestFixtures.Model(name), "reference.safetensors"));
        var info = reference.GetInfo("input_ids");
        var flat = reference.ReadInt64("input_ids");
        var ids = new int[info.Shape[0], info.Shape[1]];
        for (int b = 0; b < ids.GetLength(0); b++)
            for (int t = 0; t < ids.GetLength(1); t++) ids[b, t] = (int)flat[b * ids.GetLength(1) + t];
        using var chunked = model.CreateCache(ids.GetLength(0));
        var next = model.PrefillChunked(ids, chunked, chunk);
        using var whole = model.CreateCache(ids.GetLength(0));
        var expected = model.ForwardArgMax(ids, whole);
        Assert.That(next, Is.EqualTo(expected));
        Assert.That(chunked.SeenTokens, Is.EqualTo(ids.GetLength(1)));
        for (int l = 0; l < model.Config.NumHiddenLayers; l++)
        {
            Assert.That(chunked.GetConvState(l).Data, Is.EqualTo(reference.ReadFloat32($"cache.conv.{l}")).Within(1e-4f), $"conv {l}");
            Assert.That(chunked.GetSsmState(l).Data, Is.EqualTo(reference.ReadFloat32($"cache.ssm.{l}")).Within(2e-4f), $"ssm {l}");
        }
    }

    [Test]
    public void LossIsNaNWhenEveryLabelIsIgnoredAndRejectsKeptLogits()
    {
        using var model = Tiny();
        var labels = new int[2, 7];
        for (int b = 0; b < 2; b++) for (int t = 0; t < 7; t++) labels[b, t] = -100;
        Assert.That(model.Forward(Ids, new ForwardOptions { Labels = labels }).Loss, Is.NaN);
        Assert.Throws<ArgumentException>(() => model.Forward(Ids, new ForwardOptions { Labels = Ids, LogitsToKeep = 1 }));
    }

    [Test]
    public void LossMatchesTheShiftedCrossEntropyOfTheLogits()
    {
        using var model = Tiny();
        var labels = (int[,])Ids.Clone();
        labels[0, 3] = -100;
        var output = model.Forward(Ids, new ForwardOptions { Labels = labels });
        double sum = 0;
        int count = 0;
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 6; t++)
            {
                int target = labels[b, t + 1];
                if (target == -100) continue;
                var row = output.Logits.Row(b, t).ToArray();
                double max = row.Max();
                sum += max + Math.Log(row.Sum(v => Math.Exp(v - max))) - row[target];
                count++;
            }
        Assert.That(count, Is.EqualTo(11));
        Assert.That(output.Loss!.Value, Is.EqualTo(sum / count).Within(1e-6));
    }

    [Test]
    public void BadInputsGiveArgumentErrors()
    {
        using var model = Tiny();
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(new int[,] { { 1, 512 } }));
        Assert.Throws<ArgumentException>(() => model.Forward(new int[0, 0]));
        Assert.Throws<ArgumentException>(() => model.Forward(Ids, new ForwardOptions { AttentionMask = new int[,] { { 1 } } }));
        Assert.Throws<ArgumentException>(() => model.Forward(Ids, new ForwardOptions { AttentionMask = new int[2, 7] { { 2, 1, 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 1, 1, 1 } } }));
        using var cache = model.CreateCache(3);
        Assert.Throws<ArgumentException>(() => model.Forward(Ids, new ForwardOptions { Cache = cache }));
    }

    [Test]
    public void RandomInitFollowsTheConfigScheme()
    {
        var config = new MambaConfig { VocabSize = 100, HiddenSize = 32, NumHiddenLayers = 2, StateSize = 4 };
        var w = MambaInitializer.Create(config, seed: 3);
        var aLog = w[ParameterId.ALog, 0];
        Assert.That(aLog[4 * 5 + 3], Is.EqualTo(MathF.Log(4)).Within(1e-7)); // A_log[e, n] = ln(n+1)
        Assert.That(w[ParameterId.D, 0], Is.All.EqualTo(1f));
        // dt bias is the inverse softplus of a Δ in [time_step_min, time_step_max].
        foreach (var b in w[ParameterId.DtProjBias, 0])
        {
            double dt = Math.Log(1 + Math.Exp(b));
            Assert.That(dt, Is.InRange(config.TimeStepMin * 0.999, config.TimeStepMax * 1.001));
        }
        double bound = 1 / Math.Sqrt(config.ConvKernel);
        Assert.That(w[ParameterId.ConvWeight, 0].Max(v => Math.Abs(v)), Is.LessThanOrEqualTo(bound));
        double std = Math.Sqrt(w[ParameterId.Embeddings].Average(v => (double)v * v));
        Assert.That(std, Is.EqualTo(config.InitializerRange).Within(0.01));
        using var model = new MambaForCausalLM(w);
        Assert.That(model.Forward(new int[,] { { 1, 2, 3 } }).Logits.Data, Has.None.NaN);
        // Reproducible for a seed (layers are drawn in parallel from their own seeded streams), different across seeds.
        var again = MambaInitializer.Create(config, seed: 3);
        Assert.That(again[ParameterId.Embeddings], Is.EqualTo(w[ParameterId.Embeddings]));
        Assert.That(again[ParameterId.InProjWeight, 1], Is.EqualTo(w[ParameterId.InProjWeight, 1]));
        Assert.That(MambaInitializer.Create(config, seed: 4)[ParameterId.InProjWeight, 1], Is.Not.EqualTo(w[ParameterId.InProjWeight, 1]));
    }
}
