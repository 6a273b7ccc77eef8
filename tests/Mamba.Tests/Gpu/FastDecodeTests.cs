using Mamba.Compute;
using Mamba.Compute.Cuda;
using Mamba.Model;
using Mamba.Native;

namespace Mamba.Tests.Gpu;

/// <summary>
/// The captured CUDA-graph greedy decode step against the op-by-op path: the same tokens and the same cache
/// bits, over many replays, several batch sizes, f32 and bf16, cache reuse after Reset and new caches.
/// </summary>
[Category("Gpu")]
[NonParallelizable]
public class FastDecodeTests
{
    private const int Steps = 12;

    /// <summary>Prefill, then <see cref="Steps"/> greedy decode steps through ForwardArgMax; returns every chosen id.</summary>
    private static int[][] Decode(MambaForCausalLM lm, MambaCache cache, int[,] prompt, int steps = Steps)
    {
        int batch = prompt.GetLength(0);
        var tokens = new List<int[]>();
        var next = lm.ForwardArgMax(prompt, cache);
        tokens.Add(next);
        for (int s = 0; s < steps; s++)
        {
            var ids = new int[batch, 1];
            for (int b = 0; b < batch; b++) ids[b, 0] = next[b];
            next = lm.ForwardArgMax(ids, cache);
            tokens.Add(next);
        }
        return tokens.ToArray();
    }

    private static void AssertSameState(MambaCache fast, MambaCache slow, int layers)
    {
        foreach (int l in new[] { 0, layers - 1 })
        {
            Assert.That(fast.GetSsmState(l).Data, Is.EqualTo(slow.GetSsmState(l).Data), $"ssm state of layer {l}");
            Assert.That(fast.GetConvState(l).Data, Is.EqualTo(slow.GetConvState(l).Data), $"conv state of layer {l}");
        }
    }

    private static void CompareOnModel(MambaForCausalLM lm, int batch, int seed)
    {
        var prompt = GpuTestSupport.RandomPrompt(batch, 7, lm.Config.VocabSize, seed);
        long stepsBefore = lm.FastDecodeSteps;
        lm.UseFastDecode = true;
        using var fastCache = lm.CreateCache(batch);
        var fast = Decode(lm, fastCache, prompt);
        lm.UseFastDecode = false;
        using var slowCache = lm.CreateCache(batch);
        var slow = Decode(lm, slowCache, prompt);
        lm.UseFastDecode = true;
        Assert.That(lm.FastDecodeSteps - stepsBefore, Is.EqualTo(Steps - 1), "every decode step after the first should replay the graph");
        Assert.That(fast, Is.EqualTo(slow), "graph replay tokens differ from the op-by-op path");
        AssertSameState(fastCache, slowCache, lm.Config.NumHiddenLayers);
    }

    public static IEnumerable<TestCaseData> FixtureCases()
    {
        foreach (var model in TestFixtures.ModelNames)
            foreach (var dt in new[] { DType.F32, DType.BF16 })
                foreach (var batch in new[] { 1, 3, 8 })
                    yield return new TestCaseData(model, dt, batch);
    }

    [TestCaseSource(nameof(FixtureCases))]
    public void GraphReplayMatchesOpByOpOnFixtures(string model, DType dt, int batch)
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        using var lm = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model(model), "model"), backend, dt);
        CompareOnModel(lm, batch, seed: 11 * batch + (int)dt);
    }

    /// <summary>
    /// With the fused decode kernel on, the batch-1 fast step is one cooperative launch instead of the graph; it gives the
    /// op-by-op tokens and cache bits on every fixture model and on a 130m-shaped one, f32 and bf16.
    /// </summary>
    [TestCase(DType.F32), TestCase(DType.BF16)]
    public void FusedKernelRunsAtBatchOneAndMatchesOpByOp(DType dt)
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        var models = TestFixtures.ModelNames.Select(name => MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model(name), "model"), backend, dt))
            .Append(new MambaForCausalLM(MambaInitializer.Create(MambaConfig.Preset("130m"), seed: 5), backend, dt)).ToList();
        try
        {
            foreach (var lm in models)
            {
                lm.UseFusedDecode = true;
                long fused = lm.FusedDecodeSteps;
                CompareOnModel(lm, 1, seed: 77 + (int)dt);
                Assert.That(lm.FusedDecodeUnavailableReason, Is.Null, "the fused kernel was refused");
                Assert.That(lm.FusedDecodeSteps - fused, Is.EqualTo(Steps - 1), "every decode step after the first should run the fused kernel");
            }
        }
        finally
        {
            foreach (var lm in models) lm.Dispose();
        }
    }

    [TestCase(DType.F32), TestCase(DType.BF16)]
    public void GraphReplayMatchesOpByOpOnA130mShapedModel(DType dt)
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        var weights = MambaInitializer.Create(MambaConfig.Preset("130m"), seed: 3);
        using var lm = new MambaForCausalLM(weights, backend, dt);
        foreach (var batch in new[] { 1, 3, 8 })
            CompareOnModel(lm, batch, seed: 100 + batch);
    }

    [TestCase(DType.F32), TestCase(DType.BF16)]
    public void CacheResetAndNewCachesReplayCorrectly(DType dt)
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        using var lm = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("tiny"), "model"), backend, dt);
        const int batch = 3;
        var prompt = GpuTestSupport.RandomPrompt(batch, 5, lm.Config.VocabSize, 42);
        var other = GpuTestSupport.RandomPrompt(batch, 9, lm.Config.VocabSize, 43);

        lm.UseFastDecode = false;
        int[][] expected, expectedOther;
        using (var c = lm.CreateCache(batch)) expected = Decode(lm, c, prompt);
        using (var c = lm.CreateCache(batch)) expectedOther = Decode(lm, c, other);
        lm.UseFastDecode = true;

        using var cache = lm.CreateCache(batch);
        Assert.That(Decode(lm, cache, prompt), Is.EqualTo(expected), "first run");
        int captures = lm.FastDecodeCaptures;
        Assert.That(captures, Is.EqualTo(1));
        cache.Reset();
        Assert.That(Decode(lm, cache, other), Is.EqualTo(expectedOther), "same cache after Reset (graph reused)");
        Assert.That(lm.FastDecodeCaptures, Is.EqualTo(captures), "a Reset keeps the cache's addresses, so the graph is reused");
        using (var second = lm.CreateCache(batch))
            Assert.That(Decode(lm, second, prompt), Is.EqualTo(expected), "a new cache");
        Assert.That(lm.FastDecodeCaptures, Is.EqualTo(captures + 1), "a new cache captures a new graph");
        cache.Reset();
        Assert.That(Decode(lm, cache, prompt), Is.EqualTo(expected), "the first cache again");
        using (var third = lm.CreateCache(batch))
            Assert.That(Decode(lm, third, other), Is.EqualTo(expectedOther), "another new cache");
        Assert.That(lm.FastDecodeSteps, Is.GreaterThan(0));
    }

    [Test]
    public void GenerateGreedyIsTheSameWithAndWithoutGraphs()
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        using var lm = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("small-long"), "model"), backend, DType.BF16);
        var prompt = GpuTestSupport.RandomPrompt(2, 6, lm.Config.VocabSize, 5);
        lm.UseFastDecode = false;
        var slow = lm.GenerateGreedy(prompt, maxNewTokens: 16);
        lm.UseFastDecode = true;
        var fast = lm.GenerateGreedy(prompt, maxNewTokens: 16);
        Assert.That(fast, Is.EqualTo(slow));
    }

    [Test]
    public void DisposingTheBackendFreesTheGraph()
    {
        using var probe = GpuTestSupport.RequireCudaBackend();
        var dir = Path.Combine(TestFixtures.Model("tiny"), "model");
        // Warm-up: the runtime and cuBLAS allocate their own pools once per process.
        using (var warm = new MambaForCausalLM(CheckpointLoader.LoadWeights(dir), CudaBackend.Create(0, DType.F32), DType.F32, ownsBackend: true))
        using (var c = warm.CreateCache(2)) Decode(warm, c, GpuTestSupport.RandomPrompt(2, 4, warm.Config.VocabSize, 1));
        var (before, _) = probe.MemoryInfo();
        for (int i = 0; i < 5; i++)
        {
            using var lm = new MambaForCausalLM(CheckpointLoader.LoadWeights(dir), CudaBackend.Create(0, DType.F32), DType.F32, ownsBackend: true);
            using var cache = lm.CreateCache(2);
            Decode(lm, cache, GpuTestSupport.RandomPrompt(2, 4, lm.Config.VocabSize, i));
            Assert.That(lm.FastDecodeCaptures, Is.EqualTo(1));
        }
        var (after, _) = probe.MemoryInfo();
        Assert.That(before - after, Is.LessThanOrEqualTo(2L << 20), $"{(before - after) / 1048576.0:F1} MiB not returned");
    }
}
