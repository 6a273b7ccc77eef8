using Mamba.Compute;
using Mamba.Compute.Cuda;
using Mamba.Model;
using Mamba.Native;

namespace Mamba.Bench;

/// <summary>
/// What the CUDA benchmarks share inside this process (the in-process toolchain runs every case here): one
/// <see cref="CudaBackend"/> on device 0 (pick the GPU with CUDA_VISIBLE_DEVICES), opened by <see cref="TryOpen"/>
/// before BenchmarkDotNet starts and disposed after it, the random Mamba-130m weights (made once), and filler data.
/// libmamba is found as everywhere else: MAMBA_NATIVE_LIBRARY, then runtimes/linux-x64/native beside the app.
/// </summary>
internal static class GpuBench
{
    private static CudaBackend? _backend;
    private static readonly Lazy<MambaWeights> Weights = new(() => MambaInitializer.Create(MambaConfig.Preset("130m"), seed: 1));
    private static readonly Lazy<float[]> Block = new(() =>
    {
        // 65,521 (prime) values in [−1, 1): tiled over large tensors, so filling 200 MB costs a copy, not 50 M draws.
        var rng = new Random(5);
        var block = new float[65_521];
        for (int i = 0; i < block.Length; i++) block[i] = (float)(rng.NextDouble() * 2 - 1);
        return block;
    });

    /// <summary>
    /// Opens the shared backend (loads libmamba, finds the GPU, creates the context) unless it is open; false with
    /// the one-line reason when CUDA cannot run here.
    /// </summary>
    public static bool TryOpen(out string reason)
    {
        reason = "";
        if (_backend is not null) return true;
        try
        {
            _backend = CudaBackend.Create(0, DType.F32);
            return true;
        }
        catch (MambaBackendUnavailableException ex)
        {
            reason = ex.Reason;
        }
        catch (MambaException ex)
        {
            reason = ex.Message;
        }
        return false;
    }

    /// <summary>The shared backend (opened on first use when <see cref="TryOpen"/> was not called).</summary>
    public static CudaBackend Backend => _backend ??= CudaBackend.Create(0, DType.F32);

    /// <summary>Random weights of the Mamba-130m shape (hidden 768, 24 layers, d_inner 1536, state 16, dt_rank 48, conv 4, vocab 50280), seed 1 as in `mamba bench`.</summary>
    public static MambaWeights Model130m => Weights.Value;

    /// <summary>Values in [−1, 1) for a tensor of <paramref name="count"/> elements, scaled by <paramref name="scale"/>.</summary>
    public static float[] Filler(long count, float scale = 1f)
    {
        var block = Block.Value;
        var data = new float[count];
        for (long i = 0; i < count; i += block.Length)
            block.AsSpan(0, (int)Math.Min(block.Length, count - i)).CopyTo(data.AsSpan((int)i));
        if (scale != 1f)
            for (long i = 0; i < count; i++) data[i] *= scale;
        return data;
    }

    /// <summary>Frees the shared backend (after the run; every tensor and model of the benchmarks was disposed in their cleanup).</summary>
    public static void Close()
    {
        _backend?.Dispose();
        _backend = null;
    }
}
