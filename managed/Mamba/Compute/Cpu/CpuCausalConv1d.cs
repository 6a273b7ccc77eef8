using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Mamba.Compute.Cpu;

/// <summary>
/// Causal depthwise conv + SiLU on token-major activations: for each output row the K input rows
/// of the window are contiguous in channels, so the channel loop vectorises. Weights are transposed
/// to [K, E] once per call so that tap k of 8 channels is one load.
/// </summary>
internal static class CpuCausalConv1d
{
    /// <param name="xz">[B, L, 2E]; x is columns 0..E−1</param>
    /// <param name="weightT">[K, E]</param>
    /// <param name="bias">[E] or empty</param>
    /// <param name="mask">[B·L] or empty</param>
    /// <param name="u">[B, L, E] output</param>
    /// <param name="history">[B, K−1, E] inputs before t = 0 (token-major), or empty for zeros</param>
    public static void Forward(ReadOnlySpan<float> xz, ReadOnlySpan<float> weightT, ReadOnlySpan<float> bias, ReadOnlySpan<float> mask,
        Span<float> u, ReadOnlySpan<float> history, int batch, int length, int inner, int kernel, ParallelOptions parallel)
    {
        unsafe
        {
            fixed (float* pxz = xz, pw = weightT, pb = bias, pm = mask, pu = u, ph = history)
            {
                var args = new ConvArgs(pxz, pw, pb, pm, pu, ph, bias.Length > 0, mask.Length > 0, history.Length > 0, length, inner, kernel);
                int rows = batch * length;
                if ((long)rows * inner * kernel < 1 << 16)
                    for (int r = 0; r < rows; r++) Row(args, r / length, r % length);
                else
                    Parallel.For(0, rows, parallel, r => Row(args, r / length, r % length));
            }
        }
    }

    private readonly unsafe struct ConvArgs(float* xz, float* w, float* bias, float* mask, float* u, float* history,
        bool hasBias, bool hasMask, bool hasHistory, int length, int inner, int kernel)
    {
        public readonly float* Xz = xz, W = w, Bias = bias, Mask = mask, U = u, History = history;
        public readonly bool HasBias = hasBias, HasMask = hasMask, HasHistory = hasHistory;
        public readonly int Length = length, Inner = inner, Kernel = kernel;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] // per tap in Row's inner loop (tiered PGO inlined it; Row is compiled without)
    private static unsafe float* InputRow(in ConvArgs a, int b, int time)
    {
        if (time >= 0) return a.Xz + ((long)b * a.Length + time) * 2 * a.Inner;
        if (!a.HasHistory) return null;
        // history holds times −(K−1) .. −1 in order.
        return a.History + ((long)b * (a.Kernel - 1) + (a.Kernel - 1 + time)) * a.Inner;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // see IVectorOps: vector code from the first call
    private static unsafe void Row(in ConvArgs a, int b, int t)
    {
        int inner = a.Inner, kernel = a.Kernel;
        float* outRow = a.U + ((long)b * a.Length + t) * inner;
        float maskValue = a.HasMask ? a.Mask[(long)b * a.Length + t] : 1f;
        int e = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var maskV = Vector256.Create(maskValue);
            for (; e + 8 <= inner; e += 8)
            {
                var acc = a.HasBias ? Vector256.Load(a.Bias + e) : Vector256<float>.Zero;
                for (int k = 0; k < kernel; k++)
                {
                    float* input = InputRow(a, b, t - kernel + 1 + k);
                    if (input != null) acc += Vector256.Load(a.W + (long)k * inner + e) * Vector256.Load(input + e);
                }
                (CpuMath.Silu<Vector256<float>, Vector256Ops>(acc) * maskV).Store(outRow + e);
            }
        }
        for (; e < inner; e++)
        {
            float acc = a.HasBias ? a.Bias[e] : 0f;
            for (int k = 0; k < kernel; k++)
            {
                float* input = InputRow(a, b, t - kernel + 1 + k);
                if (input != null) acc += a.W[(long)k * inner + e] * input[e];
            }
            outRow[e] = CpuMath.Silu(acc) * maskValue;
        }
    }
}
