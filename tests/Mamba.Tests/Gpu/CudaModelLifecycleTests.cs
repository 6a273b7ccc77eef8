using Mamba.Compute;
using Mamba.Compute.Cuda;
using Mamba.Generation;
using Mamba.Model;
using Mamba.Native;

namespace Mamba.Tests.Gpu;

/// <summary>Whole-model behaviour on the CUDA backend: no leaks over load/generate/dispose cycles, recovery from out-of-memory.</summary>
[Category("Gpu")]
[NonParallelizable]
public class CudaModelLifecycleTests
{
    private static string TinyDir => Path.Combine(TestFixtures.Model("tiny"), "model");

    [Test]
    public async Task FiftyLoadGenerateDisposeCyclesLeaveFreeMemoryWhereItWas()
    {
        using var probe = GpuTestSupport.RequireCudaBackend();
        var options = new MambaModelOptions { Backend = BackendPreference.Cuda, DType = DType.BF16 };
        // One warm-up cycle: cuBLAS and the CUDA runtime allocate their own pools once per process.
        using (var warm = MambaModel.Load(TinyDir, options))
            await warm.GenerateAsync([1, 2, 3], new GenerationOptions { MaxNewTokens = 4 });
        var (freeBefore, _) = probe.MemoryInfo();
        for (int i = 0; i < 50; i++)
        {
            using var model = MambaModel.Load(TinyDir, options);
            var result = await model.GenerateBatchAsync([[1, 2, 3], [7, 8, 9, 10, 11]], new GenerationOptions { MaxNewTokens = 8, EosTokenIds = [] });
            Assert.That(result[1].OutputIds, Has.Count.EqualTo(8));
        }
        var (freeAfter, _) = probe.MemoryInfo();
        TestContext.Progress.WriteLine($"free before {freeBefore:N0}, after {freeAfter:N0}");
        // Each context's workspace and cuBLAS handle are freed on dispose: allow only allocator granularity (2 MiB).
        Assert.That(freeBefore - freeAfter, Is.LessThanOrEqualTo(2L << 20), $"{(freeBefore - freeAfter) / 1048576.0:F1} MiB not returned");
    }

    [Test]
    public void AnAbsurdBatchIsOutOfMemoryAndTheModelStillWorks()
    {
        using var probe = GpuTestSupport.RequireCudaBackend();
        using var model = MambaForCausalLM.FromPretrained(TinyDir, CudaBackend.Create(0, DType.F32));
        var small = new int[,] { { 1, 2, 3, 4 } };
        var before = model.Forward(small).Logits.Data;
        // 4096 × 65536 tokens: the in_proj output alone needs 4096·65536·256·4 bytes = 256 GiB (> the H200's 141 GB).
        var e = Assert.Catch<MambaException>(() => model.Forward(new int[4096, 65536], new ForwardOptions { LogitsToKeep = 1 }))!;
        Assert.That(e, Is.InstanceOf<MambaOutOfMemoryException>(), e.Message);
        Assert.That(model.Forward(small).Logits.Data, Is.EqualTo(before), "the model must work unchanged after the failure");
        model.Backend.Dispose();
    }
}
