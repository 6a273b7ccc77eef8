using System.Buffers;
using System.Numerics.Tensors;

namespace Mamba.Compute.Cpu;

/// <summary>
/// The backward of y = x·Wᵀ + b through the forward GEMM (<see cref="CpuGemm.Linear"/>, which only computes X·Wᵀ with K
/// contiguous in both operands): gX = gY·W is X·Wᵀ with Wᵀ [K, N] as the "weight", and gW = gYᵀ·x is gYᵀ [N, M] times
/// xᵀ [K, M]ᵀ. The operands are transposed into pooled buffers first. Every output keeps the GEMM's one summation
/// order, so the results are the same bits run to run and for any thread count.
/// </summary>
internal static class CpuLinearBackward
{
    /// <summary>gradX [M, K] = gradY [M, N] · w [N, K], overwritten or (with <paramref name="accumulate"/>) added to.</summary>
    public static void InputGradient(ReadOnlySpan<float> gradY, ReadOnlySpan<float> w, Span<float> gradX, bool accumulate,
        int m, int n, int k, ParallelOptions parallel)
    {
        if (m == 0 || k == 0) return;
        if (n == 0)
        {
            if (!accumulate) gradX[..(m * k)].Clear();
            return;
        }
        var wT = ArrayPool<float>.Shared.Rent(n * k);
        try
        {
            Transpose(w, n, k, k, wT, parallel);
            InputGradientTransposed(gradY, wT, gradX, accumulate, m, n, k, parallel);
        }
        finally { ArrayPool<float>.Shared.Return(wT); }
    }

    /// <summary><see cref="InputGradient"/> with the weight already transposed: <paramref name="wT"/> [K, N].</summary>
    public static void InputGradientTransposed(ReadOnlySpan<float> gradY, ReadOnlySpan<float> wT, Span<float> gradX, bool accumulate,
        int m, int n, int k, ParallelOptions parallel)
    {
        if (m == 0 || k == 0) return;
        if (!accumulate)
        {
            CpuGemm.Linear(gradY, n, wT[..(n * k)], default, gradX[..(m * k)], m, k, n, parallel);
            return;
        }
        var product = ArrayPool<float>.Shared.Rent(m * k);
        try
        {
            var p = product.AsSpan(0, m * k);
            CpuGemm.Linear(gradY, n, wT[..(n * k)], default, p, m, k, n, parallel);
            TensorPrimitives.Add(gradX[..(m * k)], p, gradX[..(m * k)]);
        }
        finally { ArrayPool<float>.Shared.Return(product); }
    }

    /// <summary>
    /// gradW [N, K] += gradY [M, N]ᵀ · x, where row i of x starts at i·<paramref name="xStride"/> (its first K values
    /// are used: a column slice such as δ̃ of dbc).
    /// </summary>
    public static void AddWeightGradient(ReadOnlySpan<float> gradY, ReadOnlySpan<float> x, int xStride, Span<float> gradW,
        int m, int n, int k, ParallelOptions parallel)
    {
        if (m == 0 || n == 0 || k == 0) return;
        var gT = ArrayPool<float>.Shared.Rent(n * m);
        var xT = ArrayPool<float>.Shared.Rent(k * m);
        var product = ArrayPool<float>.Shared.Rent(n * k);
        try
        {
            Transpose(gradY, m, n, n, gT, parallel);
            Transpose(x, m, k, xStride, xT, parallel);
            var p = product.AsSpan(0, n * k);
            CpuGemm.Linear(gT.AsSpan(0, n * m), m, xT.AsSpan(0, k * m), default, p, n, k, m, parallel);
            TensorPrimitives.Add(gradW[..(n * k)], p, gradW[..(n * k)]);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(gT);
            ArrayPool<float>.Shared.Return(xT);
            ArrayPool<float>.Shared.Return(product);
        }
    }

    /// <summary>sums [N] += Σ over the M rows of gradY [M, N], row after row (one fixed order).</summary>
    public static void AddColumnSums(ReadOnlySpan<float> gradY, Span<float> sums, int m, int n)
    {
        for (int i = 0; i < m; i++) TensorPrimitives.Add(sums[..n], gradY.Slice(i * n, n), sums[..n]);
    }

    private const int TransposeTile = 32;

    /// <summary>
    /// destination [cols, rows] = source [rows, cols]ᵀ, row i of the source starting at i·<paramref name="stride"/>;
    /// in 32 × 32 tiles, parallel over bands of source rows when large.
    /// </summary>
    public static void Transpose(ReadOnlySpan<float> source, int rows, int cols, int stride, Span<float> destination, ParallelOptions parallel)
    {
        if (rows == 0 || cols == 0) return;
        if (rows > 0 && (long)(rows - 1) * stride + cols > source.Length)
            throw new ArgumentException($"source holds {source.Length} values, not {rows} rows of stride {stride}", nameof(source));
        if (destination.Length < (long)rows * cols) throw new ArgumentException("destination too small", nameof(destination));
        int bands = (rows + TransposeTile - 1) / TransposeTile;
        unsafe
        {
            fixed (float* ps = source, pd = destination)
            {
                float* s = ps, d = pd;
                void Band(int band)
                {
                    int r0 = band * TransposeTile, r1 = Math.Min(rows, r0 + TransposeTile);
                    for (int c0 = 0; c0 < cols; c0 += TransposeTile)
                    {
                        int c1 = Math.Min(cols, c0 + TransposeTile);
                        for (int r = r0; r < r1; r++)
                        {
                            float* row = s + (long)r * stride;
                            for (int c = c0; c < c1; c++) d[(long)c * rows + r] = row[c];
                        }
                    }
                }
                if ((long)rows * cols < 1 << 18) for (int b = 0; b < bands; b++) Band(b);
                else Parallel.For(0, bands, parallel, Band);
            }
        }
    }
}
