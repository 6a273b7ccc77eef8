using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Mamba.Compute.Cpu;

/// <summary>
/// Causal depthwise conv + SiLU on token-major activations: for each output row the K input rows
/// of the window are contiguous in channels, so the channel loop vectorises (16 lanes with AVX-512, 8 with AVX2).
/// Weights are transposed to [K, E] once per call so that tap k of a vector of channels is one load. Rows are split
/// over threads in blocks; a row's result depends on nothing but its own inputs.
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
                    Rows(args, 0, rows);
                else
                {
                    // Blocks of rows (a row's result does not depend on the split): one task per row cost more in
                    // scheduling than the 1536-channel row itself.
                    int blockRows = Math.Max(1, (int)Math.Min(rows, (1L << 15) / ((long)inner * kernel) + 1));
                    int blocks = (rows + blockRows - 1) / blockRows;
                    Parallel.For(0, blocks, parallel, i => Rows(args, i * blockRows, Math.Min(rows, (i + 1) * blockRows)));
                }
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

    /// <summary>Rows <paramref name="r0"/> .. <paramref name="r1"/> − 1 of [B·L] (one parallel task).</summary>
    private static unsafe void Rows(in ConvArgs a, int r0, int r1)
    {
        var inputs = stackalloc float*[a.Kernel];
        var taps = stackalloc float*[a.Kernel];
        for (int r = r0; r < r1; r++) Row(a, r / a.Length, r % a.Length, inputs, taps);
    }

    /// <summary>
    /// One output row: for each channel acc = bias, then acc += w_k·x_k over the taps k = 0..K−1 that exist (a
    /// multiply, then an add, in tap order: the decode step's order), then silu and the mask. The taps' input rows are
    /// found once per row; the channels run 16, then 8 lanes at a time, then one by one (silu is the same function
    /// at every width, so a channel's bits do not depend on which path took it).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // see IVectorOps: vector code from the first call
    private static unsafe void Row(in ConvArgs a, int b, int t, float** inputs, float** taps)
    {
        int inner = a.Inner, kernel = a.Kernel, count = 0;
        for (int k = 0; k < kernel; k++)
        {
            float* input = InputRow(a, b, t - kernel + 1 + k);
            if (input == null) continue;
            inputs[count] = input;
            taps[count++] = a.W + (long)k * inner;
        }
        float* outRow = a.U + ((long)b * a.Length + t) * inner;
        float maskValue = a.HasMask ? a.Mask[(long)b * a.Length + t] : 1f;
        int e = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var maskV = Vector512.Create(maskValue);
            for (; e + 16 <= inner; e += 16)
            {
                var acc = a.HasBias ? Vector512.Load(a.Bias + e) : Vector512<float>.Zero;
                for (int k = 0; k < count; k++) acc += Vector512.Load(taps[k] + e) * Vector512.Load(inputs[k] + e);
                (CpuMath.Silu<Vector512<float>, Vector512Ops>(acc) * maskV).Store(outRow + e);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var maskV = Vector256.Create(maskValue);
            for (; e + 8 <= inner; e += 8)
            {
                var acc = a.HasBias ? Vector256.Load(a.Bias + e) : Vector256<float>.Zero;
                for (int k = 0; k < count; k++) acc += Vector256.Load(taps[k] + e) * Vector256.Load(inputs[k] + e);
                (CpuMath.Silu<Vector256<float>, Vector256Ops>(acc) * maskV).Store(outRow + e);
            }
        }
        for (; e < inner; e++)
        {
            float acc = a.HasBias ? a.Bias[e] : 0f;
            for (int k = 0; k < count; k++) acc += taps[k][e] * inputs[k][e];
            outRow[e] = CpuMath.Silu(acc) * maskValue;
        }
    }
}
