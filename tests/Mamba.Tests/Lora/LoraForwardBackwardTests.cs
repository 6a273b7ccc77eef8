using Mamba.Lora;
using Mamba.Model;

namespace Mamba.Tests.Lora;

/// <summary>
/// The unmerged LoRA path on the CPU: against PEFT's outputs (the lora-tiny fixture), and for every target PEFT cannot
/// check (out_proj, dt_proj, an untied embedding, biases) against the merged model, whose forward and full-weight
/// gradients are themselves checked against transformers: the factor gradients must be the chain rule of the merged
/// weight's gradient (g A = s·Bᵀ·g W, g B = s·g W·Aᵀ), computed here in float64.
/// </summary>
public class LoraForwardBackwardTests
{
    [Test]
    public void AdapterFixturePassesEveryGroupOnTheCpu()
    {
        var fixture = TestFixtures.Model("lora-tiny");
        using var model = MambaForCausalLM.FromPretrained(Path.Combine(fixture, "model"));
        var rows = ReferenceCheck.Run(model, fixture, ReferenceCheck.AdapterGroups);
        Assert.Multiple(() =>
        {
            foreach (var row in rows) Assert.That(row.Passed && row.Compared, Is.True, row.Format());
            foreach (var group in ReferenceCheck.AdapterGroups) Assert.That(rows.Any(r => r.Group == group), Is.True, $"no rows for {group}");
        });
        Assert.That(rows.Count(r => r.Group == "grad"), Is.EqualTo(10), "every factor of the fixture adapter");
    }

    [Test]
    public void TheAdapterCheckFailsForAnotherAdapter()
    {
        // The same fixture with its adapter's B factors negated must fail forward, loss and merged: the check can fail.
        var fixture = TestFixtures.Model("lora-tiny");
        var copy = Path.Combine(Path.GetTempPath(), "lora-negated-" + Guid.NewGuid().ToString("N"));
        try
        {
            Directory.CreateDirectory(copy);
            File.Copy(Path.Combine(fixture, "reference.safetensors"), Path.Combine(copy, "reference.safetensors"));
            var adapter = LoraAdapter.Load(Path.Combine(fixture, "adapter"));
            var negated = adapter.Modules.ToDictionary(kv => kv.Key,
                kv => new LoraModuleWeights(kv.Value.A, new HostTensor(kv.Value.B.Data.Select(x => -x).ToArray(), kv.Value.B.Shape)));
            new LoraAdapter(adapter.Config, negated).Save(Path.Combine(copy, "adapter"));
            using var model = MambaForCausalLM.FromPretrained(Path.Combine(fixture, "model"));
            var rows = ReferenceCheck.Run(model, copy, ["forward", "loss", "merged"]);
            Assert.That(rows.Where(r => r.Compared).All(r => !r.Passed), Is.True, string.Join("\n", rows.Select(r => r.Format())));
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    private static MambaConfig RandomConfig(bool tied) => new()
    {
        VocabSize = 50, HiddenSize = 12, NumHiddenLayers = 2, StateSize = 4, UseBias = true, TieWordEmbeddings = tied,
    };

    /// <summary>An adapter on every target with random (non-zero) A and B, so every path carries a signal.</summary>
    private static LoraAdapter RandomAdapter(MambaConfig model, int seed, bool rslora = false, double alpha = 5)
    {
        var config = new LoraConfig
        {
            R = 3, LoraAlpha = alpha, UseRslora = rslora, TargetModules = ["embeddings", "in_proj", "x_proj", "dt_proj", "out_proj"],
        };
        var init = LoraAdapter.CreateInitialized(config, model, seed);
        var rng = new Random(seed + 1);
        float R() => (float)(rng.NextDouble() * 2 - 1) * 0.3f;
        var modules = init.Modules.ToDictionary(kv => kv.Key, kv => new LoraModuleWeights(
            new HostTensor(kv.Value.A.Data.Select(_ => R()).ToArray(), kv.Value.A.Shape),
            new HostTensor(kv.Value.B.Data.Select(_ => R()).ToArray(), kv.Value.B.Shape)));
        return new LoraAdapter(config, modules);
    }

    private static int[,] RandomIds(int batch, int length, int vocab, int seed)
    {
        var rng = new Random(seed);
        var ids = new int[batch, length];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < length; t++) ids[b, t] = rng.Next(vocab);
        return ids;
    }

    private static float[] Read(MambaForCausalLM model, Mamba.Compute.DeviceTensor t)
    {
        var data = new float[t.ElementCount];
        model.Backend.Download(t, data);
        return data;
    }

    private static double RelativeError(IReadOnlyList<double> got, IReadOnlyList<double> expected)
    {
        double maxRef = 0, maxErr = 0;
        for (int i = 0; i < expected.Count; i++)
        {
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
            maxErr = Math.Max(maxErr, Math.Abs(got[i] - expected[i]));
        }
        return maxErr / Math.Max(maxRef, 1e-30);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void FactorGradientsAreTheChainRuleOfTheMergedWeightsGradients(bool rslora)
    {
        var config = RandomConfig(tied: false);
        var weights = MambaInitializer.Create(config, seed: 11);
        var adapter = RandomAdapter(config, seed: 5, rslora);
        var ids = RandomIds(2, 9, config.VocabSize, 3);
        var labels = (int[,])ids.Clone();
        labels[0, 4] = -100;
        const float scale = 1f / 15;

        using var unmerged = new MambaForCausalLM(weights);
        using var loaded = unmerged.LoadAdapter(adapter, "a");
        loaded.EnableGradients();
        var loraLoss = unmerged.ForwardBackward(ids, labels, null, scale, recomputeActivations: false, loaded);

        using var merged = new MambaForCausalLM(weights);
        merged.MergeAdapter(adapter);
        merged.ZeroGradients();
        var mergedLoss = merged.ForwardBackward(ids, labels, null, scale, recomputeActivations: false);
        Assert.That(loraLoss.LossSum, Is.EqualTo(mergedLoss.LossSum).Within(1e-5 * Math.Abs(mergedLoss.LossSum)), "loss");
        Assert.That(RelativeError(unmerged.Forward(ids, new ForwardOptions { Adapter = loaded }).Logits.Data.Select(x => (double)x).ToArray(),
            merged.Forward(ids).Logits.Data.Select(x => (double)x).ToArray()), Is.LessThan(1e-5), "unmerged logits = merged logits (untied)");

        Assert.Multiple(() =>
        {
            foreach (var (id, m) in loaded.Modules)
            {
                double s = adapter.Scale(id);
                var w = adapter.Modules[id];
                int r = w.Rank, inF = w.InFeatures, outF = w.OutFeatures;
                var a = w.A.Data;
                var b = w.B.Data;
                var peft = m.ToPeft(Read(unmerged, m.GradDown!), Read(unmerged, m.GradUp!));
                // g W in the [out, in] orientation of B·A (the embedding's weight is [vocab, hidden] = (B·A)ᵀ).
                var gw = Read(merged, merged.Gradients[MambaForCausalLM.BaseParameter(id.Target), id.IsEmbedding ? -1 : id.Layer]);
                double G(int o, int i) => id.IsEmbedding ? gw[i * outF + o] : gw[o * inF + i];
                var expectA = new double[r * inF];
                var expectB = new double[outF * r];
                for (int k = 0; k < r; k++)
                    for (int i = 0; i < inF; i++)
                    {
                        double sum = 0;
                        for (int o = 0; o < outF; o++) sum += b[o * r + k] * G(o, i);
                        expectA[k * inF + i] = s * sum;
                    }
                for (int o = 0; o < outF; o++)
                    for (int k = 0; k < r; k++)
                    {
                        double sum = 0;
                        for (int i = 0; i < inF; i++) sum += G(o, i) * a[k * inF + i];
                        expectB[o * r + k] = s * sum;
                    }
                Assert.That(expectA.Max(Math.Abs), Is.GreaterThan(0), $"{id}: the check needs a signal");
                Assert.That(RelativeError(peft.A.Data.Select(x => (double)x).ToArray(), expectA), Is.LessThan(2e-4), $"{id} g A");
                Assert.That(RelativeError(peft.B.Data.Select(x => (double)x).ToArray(), expectB), Is.LessThan(2e-4), $"{id} g B");
            }
        });
    }

    [Test]
    public void ALoraStepLeavesTheBaseGradientsAlone()
    {
        var config = RandomConfig(tied: true);
        using var model = new MambaForCausalLM(MambaInitializer.Create(config, seed: 2));
        using var loaded = model.LoadAdapter(RandomAdapter(config, seed: 9), "a");
        loaded.EnableGradients();
        model.ZeroGradients();
        var ids = RandomIds(1, 7, config.VocabSize, 1);
        var recomputed = model.ForwardBackward(ids, ids, null, 1f, recomputeActivations: true, loaded);
        foreach (var (key, g) in model.Gradients.Items)
            Assert.That(Read(model, g).All(x => x == 0), Is.True, $"base gradient {key} changed");
        var withRecompute = loaded.Modules.Values.Select(m => Read(model, m.GradDown!).Concat(Read(model, m.GradUp!)).ToArray()).ToArray();
        loaded.ZeroGradients();
        var plain = model.ForwardBackward(ids, ids, null, 1f, recomputeActivations: false, loaded);
        Assert.That(recomputed.LossSum, Is.EqualTo(plain.LossSum));
        var without = loaded.Modules.Values.Select(m => Read(model, m.GradDown!).Concat(Read(model, m.GradUp!)).ToArray()).ToArray();
        Assert.That(withRecompute, Is.EqualTo(without), "recompute gives the same adapter gradient bits");
    }

    [Test]
    public void CachedGreedyDecodingWithAnAdapterFollowsTheFullForward()
    {
        // The decode-step path (cache, one token at a time) with an adapter must pick what a full forward of the whole
        // sequence with the adapter picks at each position.
        var config = RandomConfig(tied: true);
        using var model = new MambaForCausalLM(MambaInitializer.Create(config, seed: 4));
        var loaded = model.LoadAdapter(RandomAdapter(config, seed: 13, alpha: 60), "quotes");
        var prompt = new List<int> { 3, 17, 9, 30 };
        using var loop = global::Mamba.Generation.GenerationLoop.ForBatch(model, new int[,] { { 3, 17, 9, 30 } }, null,
            new global::Mamba.Generation.GenerationOptions { MaxNewTokens = 8, Adapter = "quotes" }, [config.EosTokenId]);
        loop.Prefill();
        loop.Decode();
        var generated = loop.Sequences(0);
        for (int j = prompt.Count; j < generated.GetLength(1); j++)
        {
            var sequence = new int[1, j];
            for (int t = 0; t < j; t++) sequence[0, t] = generated[0, t];
            var logits = model.Forward(sequence, new ForwardOptions { Adapter = loaded, LogitsToKeep = 1 }).Logits.Data;
            int best = Array.IndexOf(logits, logits.Max());
            Assert.That(generated[0, j], Is.EqualTo(best), $"token {j}");
        }
        var baseTokens = model.GenerateGreedy(new int[,] { { 3, 17, 9, 30 } }, 8);
        Assert.That(baseTokens, Is.Not.EqualTo(generated), "the adapter must change the output for this test to mean anything");
        Assert.Throws<ArgumentException>(() => global::Mamba.Generation.GenerationLoop.ForBatch(model, new int[,] { { 1 } }, null,
            new global::Mamba.Generation.GenerationOptions { MaxNewTokens = 1, Adapter = "missing" }, [0]));
    }
}
