using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Mamba.Compute.Cpu;

/// <summary>
/// The AVX-512 GEMM for many rows (prefill): packed panels and a 12 × 32 outer-product micro-kernel
/// (24 accumulators, one W load per 12 FMAs), BLIS-style.
/// <para>
/// It keeps <see cref="Dot"/>'s summation order exactly, so a row's result does not depend on how many rows the call
/// has (a sequence gives bit-identical logits alone, batched or decoded). Dot sums 16 strided partial sums
/// P_l = Σ_t x[16t + l]·w[16t + l] (one FMA chain each, the lanes of its accumulator), folds them to 8
/// (P_l + P_{l+8}), takes one 8-wide FMA step, sums the 8 halves as ((h0+h1)+(h2+h3))+((h4+h5)+(h6+h7)) and adds the
/// last k mod 8 products with a separate multiply and add. Here K is packed plane by plane (plane l holds
/// x[16t + l] for t = 0..T−1), so each P_l is an ordinary outer-product GEMM over T = k / 16 steps with the
/// outputs, not K, in the vector lanes; the fold, the 8-wide step, the tree and the tail then run 16 outputs at a time.
/// </para>
/// <para>
/// Why: the dot-product tiles load both operands as 16-float vectors from X and W rows (10 loads per 24 FMAs, W
/// re-read from L2 for every 6 rows of X); in_proj at 1 × 512 ran at ≈ 300 GFLOP/s of the ≈ 490 that two Zen 5 cores
/// reach with AVX-512 FMAs. Packed, a W panel (32 columns × K) is reused from L2 by every 12-row X panel and the kernel
/// reads 128 bytes of W plus 12 broadcast floats per 24 FMAs: ≈ 400 GFLOP/s, the packing included (≈ 5 %).
/// </para>
/// </summary>
internal static partial class CpuGemm
{
    private const int MR = 12;          // rows of X per micro-kernel (broadcast)
    private const int NR = 32;          // columns of Y per micro-kernel (two Vector512)
    private const int XLd = 16;         // floats per packed X step (12 rows used; 16 so a transposed vector is stored whole)
    private const int Acc = MR * NR / 16;
    private const int MaxChunkRows = 516; // rows of X packed at once (43 panels; bounds the pack buffer for long batches)

    /// <summary>
    /// Rows from which the packed kernel is used (both paths give the same bits). Below, packing W (a transposed copy
    /// of the weight per call) costs more than it saves: measured crossover ≈ 28 rows for in_proj and lm_head shapes.
    /// </summary>
    internal const int PackedMinRows = 32;

    /// <summary>
    /// Columns from which the packed kernel is used: for a narrow W (x_proj: 80 × 1536, in L2 whole) the dot-product
    /// tiles measured as fast, and the packed kernel would also pad 80 columns to 96.
    /// </summary>
    internal const int PackedMinColumns = 128;

    /// <summary>Per-thread pack buffers (pinned, reused across calls; the GC frees them with the thread).</summary>
    [ThreadStatic] private static float[]? t_xPack;
    [ThreadStatic] private static float[]? t_wPack;

    /// <summary>Floats per packed row or column: 16 planes of T steps, then 8 tail-step slots and ≤ 7 remainder slots.</summary>
    private static int PackedK(int k) => k / 16 * 16 + 16;

    private static unsafe float* Scratch(ref float[]? buffer, long floats)
    {
        // 64-byte alignment by hand (pinned arrays are only 8-byte aligned): + 16 floats of slack.
        if (buffer is null || buffer.LongLength < floats + 16)
            buffer = GC.AllocateUninitializedArray<float>((int)(floats + 16), pinned: true);
        float* p = (float*)Unsafe.AsPointer(ref buffer[0]);
        return (float*)(((nint)p + 63) & ~(nint)63);
    }

    private static unsafe void LinearPacked(in GemmArgs a, ParallelOptions parallel)
    {
        int kp = PackedK(a.K);
        int chunks = (a.M + MaxChunkRows - 1) / MaxChunkRows;
        int chunkRows = ((a.M + chunks - 1) / chunks + MR - 1) / MR * MR;
        float* xPack = Scratch(ref t_xPack, (long)chunkRows / MR * XLd * kp);
        int colPanels = (a.N + NR - 1) / NR;
        int threads = parallel.MaxDegreeOfParallelism > 0 ? parallel.MaxDegreeOfParallelism : Environment.ProcessorCount;
        for (int m0 = 0; m0 < a.M; m0 += chunkRows)
        {
            int rows = Math.Min(chunkRows, a.M - m0);
            int rowPanels = (rows + MR - 1) / MR;
            var job = new PackedJob(a, xPack, m0, rows, kp);
            if (threads > 1 && rowPanels > 1)
                Parallel.For(0, rowPanels, parallel, p => PackX(job, p));
            else
                for (int p = 0; p < rowPanels; p++) PackX(job, p);

            // Tasks are column panels (each packs its 32 × K slice of W once and reuses it for every row panel);
            // when there are few (x_proj: N = 80), rows are split too so both threads get work.
            int rowSplit = Math.Clamp(4 * threads / colPanels, 1, rowPanels);
            int tasks = colPanels * rowSplit;
            if (threads > 1 && tasks > 1)
                Parallel.For(0, tasks, parallel, t => RunPanel(job, t / rowSplit, t % rowSplit, rowSplit));
            else
                for (int t = 0; t < tasks; t++) RunPanel(job, t / rowSplit, t % rowSplit, rowSplit);
        }
        if (a.HasBias) AddBias(a, 0, a.M, 0, a.N);
    }

    private readonly unsafe struct PackedJob(in GemmArgs a, float* xPack, int m0, int rows, int kp)
    {
        public readonly GemmArgs A = a;
        public readonly float* XPack = xPack;
        public readonly int M0 = m0, Rows = rows, Kp = kp;
    }

    /// <summary>
    /// Packs rows [M0 + 12p, +12) of X into panel p: (plane l, step t) → 16 floats at (l·T + t)·16 (rows 12–15 are
    /// padding so the transposed vectors are stored whole); then 16 tail slots (8-wide step, remainder) of 16 floats.
    /// Rows past the end are zero.
    /// </summary>
    private static unsafe void PackX(in PackedJob job, int panel)
    {
        ref readonly var a = ref job.A;
        int r0 = panel * MR, valid = Math.Min(MR, job.Rows - r0);
        var rows = stackalloc float*[16];
        for (int r = 0; r < 16; r++) rows[r] = r < valid ? a.X + (long)(job.M0 + r0 + r) * a.XStride : null;
        PackBlock(rows, a.K, job.XPack + (long)panel * XLd * job.Kp, XLd);
    }

    /// <summary>
    /// Transposes 16 K-long rows (null = zero) into the packed order: (plane l, step t) → 16 floats at
    /// <paramref name="dst"/> + (l·T + t)·<paramref name="ld"/>, one in-register 16 × 16 transpose per step; then the
    /// 16 tail slots.
    /// </summary>
    private static unsafe void PackBlock(float** rows, int k, float* dst, int ld)
    {
        int steps = k / 16;
        long plane = (long)steps * ld;
        // A missing row reads a zero block and does not advance.
        float* zero = stackalloc float[16];
        new Span<float>(zero, 16).Clear();
        var p = stackalloc float*[16];
        var step = stackalloc nint[16];
        for (int r = 0; r < 16; r++) { p[r] = rows[r] != null ? rows[r] : zero; step[r] = rows[r] != null ? 16 : 0; }
        float* d = dst;
        for (int t = 0; t < steps; t++, d += ld)
        {
            Transpose16Store(
                Vector512.Load(p[0]), Vector512.Load(p[1]), Vector512.Load(p[2]), Vector512.Load(p[3]),
                Vector512.Load(p[4]), Vector512.Load(p[5]), Vector512.Load(p[6]), Vector512.Load(p[7]),
                Vector512.Load(p[8]), Vector512.Load(p[9]), Vector512.Load(p[10]), Vector512.Load(p[11]),
                Vector512.Load(p[12]), Vector512.Load(p[13]), Vector512.Load(p[14]), Vector512.Load(p[15]), d, plane);
            for (int r = 0; r < 16; r++) p[r] += step[r];
        }
        // Tail slots: the 8-wide step (if present), then the remainder; zero where unused so every slot is defined.
        float* tail = dst + 16 * plane;
        for (int r = 0; r < 16; r++)
            for (int q = 16 * steps, i = 0; i < 16; i++, q++)
                tail[(long)i * ld + r] = rows[r] != null && q < k ? rows[r][q] : 0f;
    }

    /// <summary>
    /// In-register 16 × 16 transpose (unpack ps, unpack pd, two 128-bit lane shuffles); column e is stored at
    /// <paramref name="d"/> + e·<paramref name="stride"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Transpose16Store(
        Vector512<float> r0, Vector512<float> r1, Vector512<float> r2, Vector512<float> r3,
        Vector512<float> r4, Vector512<float> r5, Vector512<float> r6, Vector512<float> r7,
        Vector512<float> r8, Vector512<float> r9, Vector512<float> r10, Vector512<float> r11,
        Vector512<float> r12, Vector512<float> r13, Vector512<float> r14, Vector512<float> r15, float* d, long stride)
    {
        // Per 128-bit lane: pairs of rows interleaved, then 4 rows × one element ("u[4g + e]").
        var t0 = Avx512F.UnpackLow(r0, r1).AsDouble(); var t1 = Avx512F.UnpackHigh(r0, r1).AsDouble();
        var t2 = Avx512F.UnpackLow(r2, r3).AsDouble(); var t3 = Avx512F.UnpackHigh(r2, r3).AsDouble();
        var t4 = Avx512F.UnpackLow(r4, r5).AsDouble(); var t5 = Avx512F.UnpackHigh(r4, r5).AsDouble();
        var t6 = Avx512F.UnpackLow(r6, r7).AsDouble(); var t7 = Avx512F.UnpackHigh(r6, r7).AsDouble();
        var t8 = Avx512F.UnpackLow(r8, r9).AsDouble(); var t9 = Avx512F.UnpackHigh(r8, r9).AsDouble();
        var t10 = Avx512F.UnpackLow(r10, r11).AsDouble(); var t11 = Avx512F.UnpackHigh(r10, r11).AsDouble();
        var t12 = Avx512F.UnpackLow(r12, r13).AsDouble(); var t13 = Avx512F.UnpackHigh(r12, r13).AsDouble();
        var t14 = Avx512F.UnpackLow(r14, r15).AsDouble(); var t15 = Avx512F.UnpackHigh(r14, r15).AsDouble();
        var u0 = Avx512F.UnpackLow(t0, t2).AsSingle(); var u1 = Avx512F.UnpackHigh(t0, t2).AsSingle();
        var u2 = Avx512F.UnpackLow(t1, t3).AsSingle(); var u3 = Avx512F.UnpackHigh(t1, t3).AsSingle();
        var u4 = Avx512F.UnpackLow(t4, t6).AsSingle(); var u5 = Avx512F.UnpackHigh(t4, t6).AsSingle();
        var u6 = Avx512F.UnpackLow(t5, t7).AsSingle(); var u7 = Avx512F.UnpackHigh(t5, t7).AsSingle();
        var u8 = Avx512F.UnpackLow(t8, t10).AsSingle(); var u9 = Avx512F.UnpackHigh(t8, t10).AsSingle();
        var u10 = Avx512F.UnpackLow(t9, t11).AsSingle(); var u11 = Avx512F.UnpackHigh(t9, t11).AsSingle();
        var u12 = Avx512F.UnpackLow(t12, t14).AsSingle(); var u13 = Avx512F.UnpackHigh(t12, t14).AsSingle();
        var u14 = Avx512F.UnpackLow(t13, t15).AsSingle(); var u15 = Avx512F.UnpackHigh(t13, t15).AsSingle();
        // 128-bit lanes: even/odd lanes of rows 0–7 and 8–15, then all 16 rows of one element.
        Quarter(u0, u4, u8, u12, d, stride);
        Quarter(u1, u5, u9, u13, d + stride, stride);
        Quarter(u2, u6, u10, u14, d + 2 * stride, stride);
        Quarter(u3, u7, u11, u15, d + 3 * stride, stride);
    }

    /// <summary>Element e of rows 0–15 from the four row groups' e-vectors: stores elements e, 4 + e, 8 + e, 12 + e.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Quarter(Vector512<float> g0, Vector512<float> g1, Vector512<float> g2, Vector512<float> g3, float* d, long stride)
    {
        var a = Avx512F.Shuffle4x128(g0, g1, 0x88); var b = Avx512F.Shuffle4x128(g0, g1, 0xDD);
        var c = Avx512F.Shuffle4x128(g2, g3, 0x88); var e = Avx512F.Shuffle4x128(g2, g3, 0xDD);
        Avx512F.Shuffle4x128(a, c, 0x88).Store(d);
        Avx512F.Shuffle4x128(b, e, 0x88).Store(d + 4 * stride);
        Avx512F.Shuffle4x128(a, c, 0xDD).Store(d + 8 * stride);
        Avx512F.Shuffle4x128(b, e, 0xDD).Store(d + 12 * stride);
    }

    private static unsafe void RunPanel(in PackedJob job, int colPanel, int split, int splits)
    {
        ref readonly var a = ref job.A;
        float* wPack = Scratch(ref t_wPack, (long)NR * job.Kp);
        int j0 = colPanel * NR, cols = Math.Min(NR, a.N - j0);
        var rowPtrs = stackalloc float*[16];
        for (int g = 0; g < NR; g += 16)
        {
            for (int c = 0; c < 16; c++) rowPtrs[c] = g + c < cols ? a.W + (long)(j0 + g + c) * a.K : null;
            PackBlock(rowPtrs, a.K, wPack + g, NR);
        }

        int rowPanels = (job.Rows + MR - 1) / MR;
        int p0 = (int)((long)rowPanels * split / splits), p1 = (int)((long)rowPanels * (split + 1) / splits);
        int steps = a.K / 16;
        bool step8 = a.K - 16 * steps >= 8;
        int tailSkip = step8 ? 8 : 0;          // the remainder follows the 8-wide step in the tail slots
        int rem = a.K - 16 * steps - tailSkip;
        var tmp = stackalloc Vector512<float>[Acc];
        var half = stackalloc Vector512<float>[8 * Acc];
        for (int p = p0; p < p1; p++)
        {
            float* xp = job.XPack + (long)p * XLd * job.Kp;
            int i0 = job.M0 + p * MR, rows = Math.Min(MR, job.M0 + job.Rows - i0);
            for (int l = 0; l < 8; l++)
            {
                // h_l = P_l + P_{l+8} (+ the 8-wide step), exactly Dot's fold of its 16 lanes.
                Plane(xp + (long)l * steps * XLd, wPack + (long)l * steps * NR, steps, null, null, null, tmp);
                Plane(xp + (long)(l + 8) * steps * XLd, wPack + (long)(l + 8) * steps * NR, steps, tmp,
                    step8 ? xp + (long)(16 * steps + l) * XLd : null, wPack + (long)(16 * steps + l) * NR, half + l * Acc);
            }
            Finish(half, xp + (long)(16 * steps + tailSkip) * XLd, wPack + (long)(16 * steps + tailSkip) * NR, rem,
                a.Y + (long)i0 * a.N + j0, a.N, rows, cols);
        }
    }

    /// <summary>
    /// One plane: 12 × 32 outputs, each an FMA chain over <paramref name="steps"/> (x broadcast, 32 W columns in two
    /// vectors). Then optionally + <paramref name="add"/> and one more FMA step (the 8-wide tail); result to
    /// <paramref name="dst"/>. The accumulators are written out only after the loop so the JIT keeps all 24 in registers.
    /// </summary>
    private static unsafe void Plane(float* x, float* w, int steps, Vector512<float>* add, float* xTail, float* wTail, Vector512<float>* dst)
    {
        var c00 = Vector512<float>.Zero; var c01 = Vector512<float>.Zero; var c10 = Vector512<float>.Zero; var c11 = Vector512<float>.Zero;
        var c20 = Vector512<float>.Zero; var c21 = Vector512<float>.Zero; var c30 = Vector512<float>.Zero; var c31 = Vector512<float>.Zero;
        var c40 = Vector512<float>.Zero; var c41 = Vector512<float>.Zero; var c50 = Vector512<float>.Zero; var c51 = Vector512<float>.Zero;
        var c60 = Vector512<float>.Zero; var c61 = Vector512<float>.Zero; var c70 = Vector512<float>.Zero; var c71 = Vector512<float>.Zero;
        var c80 = Vector512<float>.Zero; var c81 = Vector512<float>.Zero; var c90 = Vector512<float>.Zero; var c91 = Vector512<float>.Zero;
        var cA0 = Vector512<float>.Zero; var cA1 = Vector512<float>.Zero; var cB0 = Vector512<float>.Zero; var cB1 = Vector512<float>.Zero;
        for (int s = 0; s < steps; s++, x += XLd, w += NR)
        {
            var b0 = Vector512.Load(w); var b1 = Vector512.Load(w + 16);
            var v = Vector512.Create(x[0]); c00 = Vector512.FusedMultiplyAdd(v, b0, c00); c01 = Vector512.FusedMultiplyAdd(v, b1, c01);
            v = Vector512.Create(x[1]); c10 = Vector512.FusedMultiplyAdd(v, b0, c10); c11 = Vector512.FusedMultiplyAdd(v, b1, c11);
            v = Vector512.Create(x[2]); c20 = Vector512.FusedMultiplyAdd(v, b0, c20); c21 = Vector512.FusedMultiplyAdd(v, b1, c21);
            v = Vector512.Create(x[3]); c30 = Vector512.FusedMultiplyAdd(v, b0, c30); c31 = Vector512.FusedMultiplyAdd(v, b1, c31);
            v = Vector512.Create(x[4]); c40 = Vector512.FusedMultiplyAdd(v, b0, c40); c41 = Vector512.FusedMultiplyAdd(v, b1, c41);
            v = Vector512.Create(x[5]); c50 = Vector512.FusedMultiplyAdd(v, b0, c50); c51 = Vector512.FusedMultiplyAdd(v, b1, c51);
            v = Vector512.Create(x[6]); c60 = Vector512.FusedMultiplyAdd(v, b0, c60); c61 = Vector512.FusedMultiplyAdd(v, b1, c61);
            v = Vector512.Create(x[7]); c70 = Vector512.FusedMultiplyAdd(v, b0, c70); c71 = Vector512.FusedMultiplyAdd(v, b1, c71);
            v = Vector512.Create(x[8]); c80 = Vector512.FusedMultiplyAdd(v, b0, c80); c81 = Vector512.FusedMultiplyAdd(v, b1, c81);
            v = Vector512.Create(x[9]); c90 = Vector512.FusedMultiplyAdd(v, b0, c90); c91 = Vector512.FusedMultiplyAdd(v, b1, c91);
            v = Vector512.Create(x[10]); cA0 = Vector512.FusedMultiplyAdd(v, b0, cA0); cA1 = Vector512.FusedMultiplyAdd(v, b1, cA1);
            v = Vector512.Create(x[11]); cB0 = Vector512.FusedMultiplyAdd(v, b0, cB0); cB1 = Vector512.FusedMultiplyAdd(v, b1, cB1);
        }
        dst[0] = c00; dst[1] = c01; dst[2] = c10; dst[3] = c11; dst[4] = c20; dst[5] = c21;
        dst[6] = c30; dst[7] = c31; dst[8] = c40; dst[9] = c41; dst[10] = c50; dst[11] = c51;
        dst[12] = c60; dst[13] = c61; dst[14] = c70; dst[15] = c71; dst[16] = c80; dst[17] = c81;
        dst[18] = c90; dst[19] = c91; dst[20] = cA0; dst[21] = cA1; dst[22] = cB0; dst[23] = cB1;
        if (add != null)
            for (int i = 0; i < Acc; i++) dst[i] += add[i];
        if (xTail != null)
        {
            var b0 = Vector512.Load(wTail); var b1 = Vector512.Load(wTail + 16);
            for (int r = 0; r < MR; r++)
            {
                var v = Vector512.Create(xTail[r]);
                dst[2 * r] = Vector512.FusedMultiplyAdd(v, b0, dst[2 * r]);
                dst[2 * r + 1] = Vector512.FusedMultiplyAdd(v, b1, dst[2 * r + 1]);
            }
        }
    }

    /// <summary>
    /// Sums the 8 halves in Dot's tree order, adds the remainder products (multiply, then add: no FMA, as in Dot's
    /// scalar loop) and stores the valid rows × columns.
    /// </summary>
    private static unsafe void Finish(Vector512<float>* half, float* xRem, float* wRem, int rem, float* y, int ys, int rows, int cols)
    {
        for (int r = 0; r < rows; r++)
            for (int v = 0; v < 2; v++)
            {
                int i = 2 * r + v;
                var s = ((half[i] + half[Acc + i]) + (half[2 * Acc + i] + half[3 * Acc + i]))
                      + ((half[4 * Acc + i] + half[5 * Acc + i]) + (half[6 * Acc + i] + half[7 * Acc + i]));
                for (int q = 0; q < rem; q++)
                    s += Vector512.Create(xRem[q * XLd + r]) * Vector512.Load(wRem + q * NR + 16 * v);
                float* dst = y + (long)r * ys + 16 * v;
                int n = cols - 16 * v;
                if (n >= 16) s.Store(dst);
                else for (int c = 0; c < n; c++) dst[c] = s.GetElement(c);
            }
    }
}
