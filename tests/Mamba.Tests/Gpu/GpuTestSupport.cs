using Mamba.Compute.Cuda;
using Mamba.Native;

namespace Mamba.Tests.Gpu;

/// <summary>What the model-level GPU tests share: a CUDA backend or an ignored test, and random prompts.</summary>
internal static class GpuTestSupport
{
    /// <summary>A CUDA backend on device 0, or <see cref="Assert.Ignore(string)"/> with the reason where there is none.</summary>
    public static CudaBackend RequireCudaBackend()
    {
        try
        {
            return CudaBackend.Create(0, DType.F32);
        }
        catch (MambaBackendUnavailableException e)
        {
            Assert.Ignore($"CUDA backend unavailable: {e.Reason}");
            throw;
        }
    }

    /// <summary>[batch, length] ids drawn uniformly from [<paramref name="lowest"/>, <paramref name="vocab"/>) with <paramref name="seed"/>.</summary>
    public static int[,] RandomPrompt(int batch, int length, int vocab, int seed, int lowest = 0)
    {
        var rng = new Random(seed);
        var ids = new int[batch, length];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < length; t++) ids[b, t] = rng.Next(lowest, vocab);
        return ids;
    }
}
