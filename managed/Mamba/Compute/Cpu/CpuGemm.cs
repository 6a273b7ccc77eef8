using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Mamba.Compute.Cpu;

/// <summary>
/// Y[M, N] = X[M, K] · W[N, K]ᵀ (+ bias[N]) in float32, the shape of every Linear in the model.
/// Both operands are row-major with K contiguous, so each output is a dot product of two rows. Register tiles
/// (AVX-512: 6×4 with 24 accumulators, then 4×4; AVX2: 4×2) reuse every load several times; W is walked in
/// panels that stay in L2 while all row-blocks of X pass over them.
/// Work is split over panels of W and blocks of X rows. With AVX-512 and ≥ 32 rows (prefill) the packed
/// outer-product kernel in CpuGemm.Packed.cs takes over; it gives the same bits as these tiles.
/// </summary>
internal static partial class CpuGemm
{
    /// <summary>AVX-512 where the JIT accelerates it (twice the lanes per FMA), else AVX2.</summary>
    private static bool Use512 => Vector512Ops.IsHardwareAccelerated;

    private const int PanelRows = 64;   // rows of W per task (64 × K floats stay in L2 for K ≤ 4096)
    private const int RowBlock = 64;    // rows of X per task

    public static void Linear(ReadOnlySpan<float> x, int xStride, ReadOnlySpan<float> w, ReadOnlySpan<float> bias,
        Span<float> y, int m, int n, int k, ParallelOptions parallel)
    {
        if (m == 0 || n == 0) return;
        unsafe
        {
            fixed (float* px = x, pw = w, py = y, pb = bias)
            {
                // A few rows (decode) only stream W: a few large panels per thread keep the task overhead small
                // next to the read (the 50280-row lm_head would otherwise be ~800 tasks per token).
                int panelRows = m <= 4
                    ? Math.Max(PanelRows, (n / (parallel.MaxDegreeOfParallelism > 0 ? parallel.MaxDegreeOfParallelism * 4 : 8) + 3) / 4 * 4)
                    : PanelRows;
                var state = new GemmArgs(px, xStride, pw, pb, bias.Length > 0, py, m, n, k, panelRows);
                if (Use512 && Avx512F.IsSupported && m >= PackedMinRows && n >= PackedMinColumns && k >= 16)
                {
                    LinearPacked(state, parallel);
                    return;
                }
                int panels = (n + panelRows - 1) / panelRows;
                int blocks = (m + RowBlock - 1) / RowBlock;
                int tasks = panels * blocks;
                if (tasks == 1 || (long)m * n * k < 1 << 18)
                {
                    for (int t = 0; t < tasks; t++) RunTile(state, t % panels, t / panels);
                }
                else
                {
                    Parallel.For(0, tasks, parallel, t => RunTile(state, t % panels, t / panels));
                }
            }
        }
    }

    private readonly unsafe struct GemmArgs(float* x, int xStride, float* w, float* bias, bool hasBias, float* y, int m, int n, int k, int panelRows)
    {
        public readonly float* X = x, W = w, Bias = bias, Y = y;
        public readonly int XStride = xStride, M = m, N = n, K = k, PanelRows = panelRows;
        public readonly bool HasBias = hasBias;
    }

    private static unsafe void RunTile(in GemmArgs a, int panel, int block)
    {
        int n0 = panel * a.PanelRows, n1 = Math.Min(a.N, n0 + a.PanelRows);
        int m0 = block * RowBlock, m1 = Math.Min(a.M, m0 + RowBlock);
        int k = a.K;
        int i = m0;
        if (Use512 && k >= 16)
        {
            // 6-row tiles first; the rest of the block (64 = 10 × 6 + 4) goes to the 4-row tiles below.
            for (; i + 6 <= m1; i += 6)
            {
                float* x0 = a.X + (long)i * a.XStride;
                int j = n0;
                for (; j + 4 <= n1; j += 4)
                    Tile6x4Wide(x0, a.XStride, a.W + (long)j * k, k, a.Y + (long)i * a.N + j, a.N);
                for (; j < n1; j++)
                    for (int r = 0; r < 6; r++)
                        a.Y[(long)(i + r) * a.N + j] = Dot(x0 + (long)r * a.XStride, a.W + (long)j * k, k);
            }
        }
        if (Vector256Ops.IsHardwareAccelerated && k >= 8)
        {
            for (; i + 4 <= m1; i += 4)
            {
                float* x0 = a.X + (long)i * a.XStride;
                int j = n0;
                if (Use512)
                    for (; j + 4 <= n1; j += 4)
                        Tile4x4Wide(x0, a.XStride, a.W + (long)j * k, k, a.Y + (long)i * a.N + j, a.N);
                for (; j + 2 <= n1; j += 2)
                {
                    if (Use512) Tile4x2<Vector512<float>, Vector512Ops>(x0, a.XStride, a.W + (long)j * k, k, a.Y + (long)i * a.N + j, a.N);
                    else Tile4x2<Vector256<float>, Vector256Ops>(x0, a.XStride, a.W + (long)j * k, k, a.Y + (long)i * a.N + j, a.N);
                }
                for (; j < n1; j++)
                    for (int r = 0; r < 4; r++)
                        a.Y[(long)(i + r) * a.N + j] = Dot(x0 + (long)r * a.XStride, a.W + (long)j * k, k);
            }
        }
        for (; i < m1; i++)
        {
            float* xr = a.X + (long)i * a.XStride;
            for (int j = n0; j < n1; j++)
                a.Y[(long)i * a.N + j] = Dot(xr, a.W + (long)j * k, k);
        }
        if (a.HasBias) AddBias(a, m0, m1, n0, n1);
    }

    private static unsafe void AddBias(in GemmArgs a, int m0, int m1, int n0, int n1)
    {
        for (int r = m0; r < m1; r++)
            TensorPrimitives.Add(new ReadOnlySpan<float>(a.Y + (long)r * a.N + n0, n1 - n0),
                new ReadOnlySpan<float>(a.Bias + n0, n1 - n0), new Span<float>(a.Y + (long)r * a.N + n0, n1 - n0));
    }

    /// <summary>
    /// One output with exactly the summation order of every tile here (see <see cref="DotVector{TVec, TOps}"/>), so a row's
    /// result never depends on which tile computed it: a sequence gives bit-identical logits alone or inside a batch.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // see IVectorOps: vector code from the first call
    internal static unsafe float Dot(float* a, float* b, int k)
    {
        if (Use512 && k >= 8) return DotVector<Vector512<float>, Vector512Ops>(a, b, k);
        if (Vector256Ops.IsHardwareAccelerated && k >= 8) return DotVector<Vector256<float>, Vector256Ops>(a, b, k);
        float sum = 0f;
        for (int p = 0; p < k; p++) sum += a[p] * b[p];
        return sum;
    }

    /// <summary>
    /// The summation order of every output: one FMA chain per lane over the whole vectors, then <see cref="FinishDot{TVec, TOps}"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe float DotVector<TVec, TOps>(float* a, float* b, int k) where TVec : struct where TOps : IVectorOps<TVec>
    {
        int p = 0;
        var acc = TOps.Zero;
        for (; p + TOps.Count <= k; p += TOps.Count) acc = TOps.FusedMultiplyAdd(TOps.Load(a + p), TOps.Load(b + p), acc);
        return FinishDot<TVec, TOps>(TOps.FoldTo256(acc), a, b, p, k);
    }

    /// <summary>
    /// The end of a dot product from its accumulator folded to 8 lanes, at <paramref name="p"/>: one 8-wide FMA step
    /// if 8 products remain (only after a 16-lane chain), the horizontal sum, then the scalar rest (multiply, then add).
    /// The 16-lane paths sum with <see cref="Sum8"/>, the 8-lane ones with Vector256.Sum: the same pairs in the same
    /// order, in fewer instructions (measured faster for short K).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe float FinishDot<TVec, TOps>(Vector256<float> half, float* a, float* b, int p, int k)
        where TVec : struct where TOps : IVectorOps<TVec>
    {
        if (p + 8 <= k) { half = Vector256.FusedMultiplyAdd(Vector256.Load(a + p), Vector256.Load(b + p), half); p += 8; }
        float sum = TOps.Count == 16 ? Sum8(half) : Vector256.Sum(half);
        for (; p < k; p++) sum += a[p] * b[p];
        return sum;
    }

    /// <summary>
    /// ((h0+h1)+(h2+h3))+((h4+h5)+(h6+h7)), the order of the AVX-512 paths' final sum, spelled out (it is what
    /// Vector256.Sum does today) so the packed kernel, which sums 16 outputs at a time in that tree, matches by construction.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sum8(Vector256<float> h)
    {
        var p = Avx.HorizontalAdd(h, h);   // h0+h1, h2+h3 | h4+h5, h6+h7 (per 128-bit lane)
        p = Avx.HorizontalAdd(p, p);       // (h0+h1)+(h2+h3) | (h4+h5)+(h6+h7)
        return p.ToScalar() + p.GetUpper().ToScalar();
    }

    /// <summary>
    /// 4 rows of X against 4 rows of W with 16 AVX-512 accumulators (AVX-512 has 32 vector registers): 8 loads feed
    /// 16 FMAs. Each output keeps the summation order of <see cref="Dot"/>.
    /// </summary>
    private static unsafe void Tile4x4Wide(float* x, int xs, float* w, int k, float* y, int ys)
    {
        var acc = stackalloc Vector512<float>[16];
        float* x1 = x + xs, x2 = x + 2L * xs, x3 = x + 3L * xs;
        float* w1 = w + k, w2 = w + 2L * k, w3 = w + 3L * k;
        var c00 = Vector512<float>.Zero; var c01 = Vector512<float>.Zero; var c02 = Vector512<float>.Zero; var c03 = Vector512<float>.Zero;
        var c10 = Vector512<float>.Zero; var c11 = Vector512<float>.Zero; var c12 = Vector512<float>.Zero; var c13 = Vector512<float>.Zero;
        var c20 = Vector512<float>.Zero; var c21 = Vector512<float>.Zero; var c22 = Vector512<float>.Zero; var c23 = Vector512<float>.Zero;
        var c30 = Vector512<float>.Zero; var c31 = Vector512<float>.Zero; var c32 = Vector512<float>.Zero; var c33 = Vector512<float>.Zero;
        int p = 0;
        for (; p + 16 <= k; p += 16)
        {
            var b0 = Vector512.Load(w + p); var b1 = Vector512.Load(w1 + p);
            var b2 = Vector512.Load(w2 + p); var b3 = Vector512.Load(w3 + p);
            var a0 = Vector512.Load(x + p);
            c00 = Vector512.FusedMultiplyAdd(a0, b0, c00); c01 = Vector512.FusedMultiplyAdd(a0, b1, c01);
            c02 = Vector512.FusedMultiplyAdd(a0, b2, c02); c03 = Vector512.FusedMultiplyAdd(a0, b3, c03);
            var a1 = Vector512.Load(x1 + p);
            c10 = Vector512.FusedMultiplyAdd(a1, b0, c10); c11 = Vector512.FusedMultiplyAdd(a1, b1, c11);
            c12 = Vector512.FusedMultiplyAdd(a1, b2, c12); c13 = Vector512.FusedMultiplyAdd(a1, b3, c13);
            var a2 = Vector512.Load(x2 + p);
            c20 = Vector512.FusedMultiplyAdd(a2, b0, c20); c21 = Vector512.FusedMultiplyAdd(a2, b1, c21);
            c22 = Vector512.FusedMultiplyAdd(a2, b2, c22); c23 = Vector512.FusedMultiplyAdd(a2, b3, c23);
            var a3 = Vector512.Load(x3 + p);
            c30 = Vector512.FusedMultiplyAdd(a3, b0, c30); c31 = Vector512.FusedMultiplyAdd(a3, b1, c31);
            c32 = Vector512.FusedMultiplyAdd(a3, b2, c32); c33 = Vector512.FusedMultiplyAdd(a3, b3, c33);
        }
        acc[0] = c00; acc[1] = c01; acc[2] = c02; acc[3] = c03;
        acc[4] = c10; acc[5] = c11; acc[6] = c12; acc[7] = c13;
        acc[8] = c20; acc[9] = c21; acc[10] = c22; acc[11] = c23;
        acc[12] = c30; acc[13] = c31; acc[14] = c32; acc[15] = c33;
        float** xr = stackalloc float*[4] { x, x1, x2, x3 };
        float** wr = stackalloc float*[4] { w, w1, w2, w3 };
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++)
                y[r * (long)ys + c] = FinishDot<Vector512<float>, Vector512Ops>(Vector512Ops.FoldTo256(acc[r * 4 + c]), xr[r], wr[c], p, k);
    }

    /// <summary>
    /// 6 rows of X against 4 rows of W: 24 AVX-512 accumulators, 10 loads feed 24 FMAs (the 4 × 4 tile needs 8 for 16;
    /// W streams from L2). Each output keeps the summation order of <see cref="Dot"/>. The accumulators' buffer is
    /// allocated before the loop and the tail's helper is inlined: with a stackalloc after the loop or a call for the
    /// tail, the .NET 10 JIT stored all 24 accumulators to the stack on every iteration (twice as slow).
    /// </summary>
    private static unsafe void Tile6x4Wide(float* x, int xs, float* w, int k, float* y, int ys)
    {
        var acc = stackalloc Vector512<float>[24];
        float* x1 = x + xs, x2 = x + 2L * xs, x3 = x + 3L * xs, x4 = x + 4L * xs, x5 = x + 5L * xs;
        float* w1 = w + k, w2 = w + 2L * k, w3 = w + 3L * k;
        var c00 = Vector512<float>.Zero; var c01 = Vector512<float>.Zero; var c02 = Vector512<float>.Zero; var c03 = Vector512<float>.Zero;
        var c10 = Vector512<float>.Zero; var c11 = Vector512<float>.Zero; var c12 = Vector512<float>.Zero; var c13 = Vector512<float>.Zero;
        var c20 = Vector512<float>.Zero; var c21 = Vector512<float>.Zero; var c22 = Vector512<float>.Zero; var c23 = Vector512<float>.Zero;
        var c30 = Vector512<float>.Zero; var c31 = Vector512<float>.Zero; var c32 = Vector512<float>.Zero; var c33 = Vector512<float>.Zero;
        var c40 = Vector512<float>.Zero; var c41 = Vector512<float>.Zero; var c42 = Vector512<float>.Zero; var c43 = Vector512<float>.Zero;
        var c50 = Vector512<float>.Zero; var c51 = Vector512<float>.Zero; var c52 = Vector512<float>.Zero; var c53 = Vector512<float>.Zero;
        int p = 0;
        for (; p + 16 <= k; p += 16)
        {
            var b0 = Vector512.Load(w + p); var b1 = Vector512.Load(w1 + p);
            var b2 = Vector512.Load(w2 + p); var b3 = Vector512.Load(w3 + p);
            var a0 = Vector512.Load(x + p);
            c00 = Vector512.FusedMultiplyAdd(a0, b0, c00); c01 = Vector512.FusedMultiplyAdd(a0, b1, c01);
            c02 = Vector512.FusedMultiplyAdd(a0, b2, c02); c03 = Vector512.FusedMultiplyAdd(a0, b3, c03);
            a0 = Vector512.Load(x1 + p);
            c10 = Vector512.FusedMultiplyAdd(a0, b0, c10); c11 = Vector512.FusedMultiplyAdd(a0, b1, c11);
            c12 = Vector512.FusedMultiplyAdd(a0, b2, c12); c13 = Vector512.FusedMultiplyAdd(a0, b3, c13);
            a0 = Vector512.Load(x2 + p);
            c20 = Vector512.FusedMultiplyAdd(a0, b0, c20); c21 = Vector512.FusedMultiplyAdd(a0, b1, c21);
            c22 = Vector512.FusedMultiplyAdd(a0, b2, c22); c23 = Vector512.FusedMultiplyAdd(a0, b3, c23);
            a0 = Vector512.Load(x3 + p);
            c30 = Vector512.FusedMultiplyAdd(a0, b0, c30); c31 = Vector512.FusedMultiplyAdd(a0, b1, c31);
            c32 = Vector512.FusedMultiplyAdd(a0, b2, c32); c33 = Vector512.FusedMultiplyAdd(a0, b3, c33);
            a0 = Vector512.Load(x4 + p);
            c40 = Vector512.FusedMultiplyAdd(a0, b0, c40); c41 = Vector512.FusedMultiplyAdd(a0, b1, c41);
            c42 = Vector512.FusedMultiplyAdd(a0, b2, c42); c43 = Vector512.FusedMultiplyAdd(a0, b3, c43);
            a0 = Vector512.Load(x5 + p);
            c50 = Vector512.FusedMultiplyAdd(a0, b0, c50); c51 = Vector512.FusedMultiplyAdd(a0, b1, c51);
            c52 = Vector512.FusedMultiplyAdd(a0, b2, c52); c53 = Vector512.FusedMultiplyAdd(a0, b3, c53);
        }
        acc[0] = c00; acc[1] = c01; acc[2] = c02; acc[3] = c03;
        acc[4] = c10; acc[5] = c11; acc[6] = c12; acc[7] = c13;
        acc[8] = c20; acc[9] = c21; acc[10] = c22; acc[11] = c23;
        acc[12] = c30; acc[13] = c31; acc[14] = c32; acc[15] = c33;
        acc[16] = c40; acc[17] = c41; acc[18] = c42; acc[19] = c43;
        acc[20] = c50; acc[21] = c51; acc[22] = c52; acc[23] = c53;
        float** xr = stackalloc float*[6] { x, x1, x2, x3, x4, x5 };
        float** wr = stackalloc float*[4] { w, w1, w2, w3 };
        for (int r = 0; r < 6; r++)
            for (int c = 0; c < 4; c++)
                y[r * (long)ys + c] = FinishDot<Vector512<float>, Vector512Ops>(Vector512Ops.FoldTo256(acc[r * 4 + c]), xr[r], wr[c], p, k);
    }

    /// <summary>
    /// 4 rows of X against 2 rows of W, 8 accumulators of one width: the AVX2 tile, and the AVX-512 one for the columns
    /// left over by <see cref="Tile4x4Wide"/>. Each output keeps the summation order of <see cref="Dot"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // see IVectorOps: vector code from the first call
    private static unsafe void Tile4x2<TVec, TOps>(float* x, int xs, float* w, int k, float* y, int ys) where TVec : struct where TOps : IVectorOps<TVec>
    {
        var c00 = TOps.Zero; var c01 = TOps.Zero;
        var c10 = TOps.Zero; var c11 = TOps.Zero;
        var c20 = TOps.Zero; var c21 = TOps.Zero;
        var c30 = TOps.Zero; var c31 = TOps.Zero;
        float* x1 = x + xs, x2 = x + 2L * xs, x3 = x + 3L * xs, w1 = w + k;
        int p = 0;
        for (; p + TOps.Count <= k; p += TOps.Count)
        {
            var b0 = TOps.Load(w + p);
            var b1 = TOps.Load(w1 + p);
            var a0 = TOps.Load(x + p);
            c00 = TOps.FusedMultiplyAdd(a0, b0, c00); c01 = TOps.FusedMultiplyAdd(a0, b1, c01);
            var a1 = TOps.Load(x1 + p);
            c10 = TOps.FusedMultiplyAdd(a1, b0, c10); c11 = TOps.FusedMultiplyAdd(a1, b1, c11);
            var a2 = TOps.Load(x2 + p);
            c20 = TOps.FusedMultiplyAdd(a2, b0, c20); c21 = TOps.FusedMultiplyAdd(a2, b1, c21);
            var a3 = TOps.Load(x3 + p);
            c30 = TOps.FusedMultiplyAdd(a3, b0, c30); c31 = TOps.FusedMultiplyAdd(a3, b1, c31);
        }
        y[0] = FinishDot<TVec, TOps>(TOps.FoldTo256(c00), x, w, p, k); y[1] = FinishDot<TVec, TOps>(TOps.FoldTo256(c01), x, w1, p, k);
        y[ys] = FinishDot<TVec, TOps>(TOps.FoldTo256(c10), x1, w, p, k); y[ys + 1] = FinishDot<TVec, TOps>(TOps.FoldTo256(c11), x1, w1, p, k);
        y[2L * ys] = FinishDot<TVec, TOps>(TOps.FoldTo256(c20), x2, w, p, k); y[2L * ys + 1] = FinishDot<TVec, TOps>(TOps.FoldTo256(c21), x2, w1, p, k);
        y[3L * ys] = FinishDot<TVec, TOps>(TOps.FoldTo256(c30), x3, w, p, k); y[3L * ys + 1] = FinishDot<TVec, TOps>(TOps.FoldTo256(c31), x3, w1, p, k);
    }
}
