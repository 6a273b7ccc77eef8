using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Mamba.Compute.Cpu;

/// <summary>
/// The selective scan on the CPU, 8 channels per Vector256 lane group. Activations are token-major,
/// so at each step the 8 channels' u, Δ and z are one contiguous load; B_t and C_t are broadcast. The
/// state of a channel group is N vectors kept in a small stack buffer, next to A[:, n] of the group's
/// channels, gathered once per task (A is [E, N]: no transposed copy per call). Work is split over (batch, channel group).
/// </summary>
internal static class CpuSelectiveScan
{
    /// <param name="u">[B, L, E]</param>
    /// <param name="dbc">[B, L, R+2N]: δ̃ at columns 0..R−1, B at R.., C at R+N..</param>
    /// <param name="wdt">[E, R]: Δ = softplus(δ̃·W_dt[e] + b_dt[e]) is computed per step inside the scan (a separate
    /// GEMM with K = R = 48 ran at a fraction of the big GEMMs' speed and wrote and re-read [B, L, E])</param>
    /// <param name="bdt">[E]</param>
    /// <param name="xz">[B, L, 2E]: z at columns E..</param>
    /// <param name="aNeg">[E, N], A = −exp(A_log)</param>
    /// <param name="d">[E]</param>
    /// <param name="y">[B, L, E] output</param>
    /// <param name="state">[B, E, N]: read as the initial state when <paramref name="useInitialState"/>, written with the final state; may be empty when not needed</param>
    public static void Run(ReadOnlySpan<float> u, ReadOnlySpan<float> dbc, ReadOnlySpan<float> wdt, ReadOnlySpan<float> bdt, ReadOnlySpan<float> xz,
        ReadOnlySpan<float> aNeg, ReadOnlySpan<float> d, Span<float> y, Span<float> state, bool useInitialState,
        int batch, int length, int inner, int rank, int stateSize, ParallelOptions parallel)
    {
        // 16 channels per task with AVX-512, else 8.
        int lanes = Vector512.IsHardwareAccelerated ? 16 : 8;
        int groups = (inner + lanes - 1) / lanes;
        unsafe
        {
            fixed (float* pu = u, pw = wdt, pb = bdt, pdbc = dbc, pxz = xz, pa = aNeg, pd = d, py = y, ps = state)
            {
                var args = new ScanArgs(pu, pw, pb, pdbc, pxz, pa, pd, py, ps, state.Length > 0, useInitialState,
                    batch, length, inner, rank, stateSize);
                int tasks = batch * groups;
                if (tasks == 1 || (long)batch * length * inner * stateSize < 1 << 16)
                    for (int t = 0; t < tasks; t++) RunGroup(args, t / groups, t % groups, lanes);
                else
                    Parallel.For(0, tasks, parallel, t => RunGroup(args, t / groups, t % groups, lanes));
            }
        }
    }

    /// <summary>
    /// One decode step, Δ projection included: for each (batch row, channel) Δ = softplus(δ̃·W_dt[e] + b_dt[e]), then
    /// s ← exp(Δ·A[e]) ⊙ s + Δ·u·B, y = (s·C + D·u)·silu(z). The state is [B, E, N] with N contiguous, so one channel's
    /// update is N-wide vector work (no gathers); Δ, the gate and the projection run per block of 16 channels. The
    /// channels are split into a few large parts per thread: one Parallel.For per layer and step, not one per op.
    /// A channel's result depends only on its own row, never on the batch size or on the split.
    /// </summary>
    /// <param name="u">[B, E]</param>
    /// <param name="dbc">[B, R+2N]</param>
    /// <param name="xz">[B, 2E]</param>
    /// <param name="wdt">[E, R]</param>
    /// <param name="bdt">[E]</param>
    /// <param name="aNeg">[E, N]</param>
    /// <param name="d">[E]</param>
    /// <param name="y">[B, E]</param>
    /// <param name="state">[B, E, N], read and written</param>
    public static void Step(ReadOnlySpan<float> u, ReadOnlySpan<float> dbc, ReadOnlySpan<float> xz, ReadOnlySpan<float> wdt,
        ReadOnlySpan<float> bdt, ReadOnlySpan<float> aNeg, ReadOnlySpan<float> d, Span<float> y, Span<float> state,
        int batch, int inner, int rank, int stateSize, ParallelOptions parallel)
    {
        int threads = parallel.MaxDegreeOfParallelism > 0 ? parallel.MaxDegreeOfParallelism : Environment.ProcessorCount;
        // Parts of whole 16-channel blocks, so a channel's vector/scalar path never depends on the split.
        int blocks = (inner + StepBlock - 1) / StepBlock;
        long work = (long)batch * inner * (rank + 4 * stateSize);
        int parts = work < 1 << 15 ? 1 : Math.Min(blocks, Math.Max(1, threads * 2 / Math.Max(1, batch)));
        int blocksPerPart = (blocks + parts - 1) / parts;
        parts = (blocks + blocksPerPart - 1) / blocksPerPart;
        unsafe
        {
            fixed (float* pu = u, pdbc = dbc, pxz = xz, pw = wdt, pb = bdt, pa = aNeg, pd = d, py = y, ps = state)
            {
                var args = new StepArgs(pu, pdbc, pxz, pw, pb, pa, pd, py, ps, inner, rank, stateSize);
                int tasks = batch * parts;
                if (tasks == 1)
                    StepPart(args, 0, 0, inner);
                else
                    Parallel.For(0, tasks, parallel, t =>
                    {
                        int b = t / parts, part = t % parts;
                        int e0 = part * blocksPerPart * StepBlock;
                        StepPart(args, b, e0, Math.Min(inner, e0 + blocksPerPart * StepBlock));
                    });
            }
        }
    }

    private const int StepBlock = 16;

    private readonly unsafe struct StepArgs(float* u, float* dbc, float* xz, float* wdt, float* bdt, float* a, float* d, float* y, float* state,
        int inner, int rank, int n)
    {
        public readonly float* U = u, Dbc = dbc, Xz = xz, Wdt = wdt, Bdt = bdt, A = a, D = d, Y = y, State = state;
        public readonly int Inner = inner, Rank = rank, N = n;
    }

    private static unsafe void StepPart(in StepArgs a, int b, int e0, int e1)
    {
        int inner = a.Inner, rank = a.Rank, n = a.N;
        float* dbcRow = a.Dbc + (long)b * (rank + 2 * n);
        float* bt = dbcRow + rank, ct = bt + n;
        float* uRow = a.U + (long)b * inner, zRow = a.Xz + (long)b * 2 * inner + inner, yRow = a.Y + (long)b * inner;
        var delta = stackalloc float[StepBlock];
        for (int blockStart = e0; blockStart < e1; blockStart += StepBlock)
        {
            int width = Math.Min(StepBlock, e1 - blockStart);
            for (int i = 0; i < width; i++)
                delta[i] = CpuGemm.Dot(dbcRow, a.Wdt + (long)(blockStart + i) * rank, rank);
            var deltaSpan = new Span<float>(delta, width);
            CpuMath.AddBiasSoftplusRows(deltaSpan, new ReadOnlySpan<float>(a.Bdt + blockStart, width));
            for (int i = 0; i < width; i++)
            {
                int e = blockStart + i;
                float dt = delta[i], uu = uRow[e], du = dt * uu;
                float* s = a.State + ((long)b * inner + e) * n;
                float* ar = a.A + (long)e * n;
                float acc = 0f;
                int j = 0;
                if (Vector512.IsHardwareAccelerated)
                {
                    var dtv = Vector512.Create(dt); var duv = Vector512.Create(du); var accv = Vector512<float>.Zero;
                    for (; j + 16 <= n; j += 16)
                    {
                        var sv = CpuMath.Exp(dtv * Vector512.Load(ar + j)) * Vector512.Load(s + j) + duv * Vector512.Load(bt + j);
                        sv.Store(s + j);
                        accv += sv * Vector512.Load(ct + j);
                    }
                    acc = Vector512.Sum(accv);
                }
                if (Vector256.IsHardwareAccelerated)
                {
                    var dtv = Vector256.Create(dt); var duv = Vector256.Create(du); var accv = Vector256<float>.Zero;
                    for (; j + 8 <= n; j += 8)
                    {
                        var sv = CpuMath.Exp(dtv * Vector256.Load(ar + j)) * Vector256.Load(s + j) + duv * Vector256.Load(bt + j);
                        sv.Store(s + j);
                        accv += sv * Vector256.Load(ct + j);
                    }
                    acc += Vector256.Sum(accv);
                }
                for (; j < n; j++)
                {
                    s[j] = MathF.Exp(dt * ar[j]) * s[j] + du * bt[j];
                    acc += s[j] * ct[j];
                }
                yRow[e] = acc + a.D[e] * uu;
            }
            // The gate over the block: y ⊙ silu(z).
            int k = 0;
            if (Vector256.IsHardwareAccelerated)
                for (; k + 8 <= width; k += 8)
                {
                    float* yp = yRow + blockStart + k;
                    (Vector256.Load(yp) * CpuMath.Silu(Vector256.Load(zRow + blockStart + k))).Store(yp);
                }
            for (; k < width; k++) yRow[blockStart + k] *= CpuMath.Silu(zRow[blockStart + k]);
        }
    }

    private readonly unsafe struct ScanArgs(float* u, float* wdt, float* bdt, float* dbc, float* xz, float* a,
        float* d, float* y, float* state, bool hasState, bool initial, int batch, int length, int inner, int rank, int n)
    {
        public readonly float* U = u, Wdt = wdt, Bdt = bdt, Dbc = dbc, Xz = xz, A = a, D = d, Y = y, State = state;
        public readonly bool HasState = hasState, Initial = initial;
        public readonly int Batch = batch, Length = length, Inner = inner, Rank = rank, N = n;
    }

    private static unsafe void RunGroup(in ScanArgs a, int b, int group, int lanes)
    {
        int e0 = group * lanes;
        int width = Math.Min(lanes, a.Inner - e0);
        if (width == 16)
        {
            RunVector512(a, b, e0);
            return;
        }
        int e = e0;
        for (; e + 8 <= e0 + width && Vector256.IsHardwareAccelerated; e += 8) RunVector(a, b, e);
        for (; e < e0 + width; e++) RunScalar(a, b, e);
    }

    /// <summary>The 16-channel form of <see cref="RunVector"/> (same formulas, AVX-512).</summary>
    private static unsafe void RunVector512(in ScanArgs a, int b, int e0)
    {
        int n = a.N, inner = a.Inner, dbcWidth = a.Rank + 2 * n;
        int rank = a.Rank;
        var s = stackalloc Vector512<float>[n];
        var aj = stackalloc Vector512<float>[n];
        var wr = stackalloc Vector512<float>[rank];
        float* stateBase = a.State + ((long)b * inner + e0) * n;
        var gather = stackalloc float[16];
        for (int r = 0; r < rank; r++)
        {
            for (int lane = 0; lane < 16; lane++) gather[lane] = a.Wdt[(long)(e0 + lane) * rank + r];
            wr[r] = Vector512.Load(gather);
        }
        var biasV = Vector512.Load(a.Bdt + e0);
        for (int j = 0; j < n; j++)
        {
            for (int lane = 0; lane < 16; lane++) gather[lane] = a.A[(long)(e0 + lane) * n + j];
            aj[j] = Vector512.Load(gather);
            if (a.Initial)
            {
                for (int lane = 0; lane < 16; lane++) gather[lane] = stateBase[lane * n + j];
                s[j] = Vector512.Load(gather);
            }
            else s[j] = Vector512<float>.Zero;
        }
        var dv = Vector512.Load(a.D + e0);
        var deltaBlock = stackalloc Vector512<float>[TimeBlock];
        for (int t = 0; t < a.Length; t++)
        {
            long row = (long)b * a.Length + t;
            int inBlock = t % TimeBlock;
            if (inBlock == 0) Delta(a.Dbc + row * dbcWidth, dbcWidth, Math.Min(TimeBlock, a.Length - t), rank, wr, biasV, deltaBlock);
            var uv = Vector512.Load(a.U + row * inner + e0);
            var zv = Vector512.Load(a.Xz + row * 2 * inner + inner + e0);
            float* dt = a.Dbc + row * dbcWidth;
            var deltaV = deltaBlock[inBlock];
            float* bt = dt + rank;
            float* ct = bt + n;
            var du = deltaV * uv;
            var acc = Vector512<float>.Zero;
            for (int j = 0; j < n; j++)
            {
                var decay = CpuMath.Exp(deltaV * aj[j]);
                var sj = Vector512.FusedMultiplyAdd(decay, s[j], du * Vector512.Create(bt[j]));
                s[j] = sj;
                acc = Vector512.FusedMultiplyAdd(sj, Vector512.Create(ct[j]), acc);
            }
            var yv = acc + dv * uv;
            (yv * CpuMath.Silu(zv)).Store(a.Y + row * inner + e0);
        }
        if (a.HasState)
            for (int j = 0; j < n; j++)
                for (int lane = 0; lane < 16; lane++)
                    stateBase[lane * n + j] = s[j][lane];
    }

    /// <summary>Steps whose Δ is computed together (see <see cref="Delta(float*, int, int, int, Vector512{float}*, Vector512{float}, Vector512{float}*)"/>).</summary>
    private const int TimeBlock = 8;

    /// <summary>
    /// Δ of <paramref name="count"/> (≤ <see cref="TimeBlock"/>) consecutive steps for one channel group:
    /// softplus(δ̃_t·W_dt + b), each output summed in order over r with one FMA per r (so a step's Δ never depends on
    /// the block it lands in); the block's 8 independent chains hide the FMA latency.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Delta(float* row0, int stride, int count, int rank, Vector512<float>* wr, Vector512<float> bias, Vector512<float>* delta)
    {
        if (count == TimeBlock)
        {
            float* p0 = row0, p1 = p0 + stride, p2 = p1 + stride, p3 = p2 + stride;
            float* p4 = p3 + stride, p5 = p4 + stride, p6 = p5 + stride, p7 = p6 + stride;
            var d0 = Vector512<float>.Zero; var d1 = d0; var d2 = d0; var d3 = d0; var d4 = d0; var d5 = d0; var d6 = d0; var d7 = d0;
            for (int r = 0; r < rank; r++)
            {
                var w = wr[r];
                d0 = Vector512.FusedMultiplyAdd(Vector512.Create(p0[r]), w, d0);
                d1 = Vector512.FusedMultiplyAdd(Vector512.Create(p1[r]), w, d1);
                d2 = Vector512.FusedMultiplyAdd(Vector512.Create(p2[r]), w, d2);
                d3 = Vector512.FusedMultiplyAdd(Vector512.Create(p3[r]), w, d3);
                d4 = Vector512.FusedMultiplyAdd(Vector512.Create(p4[r]), w, d4);
                d5 = Vector512.FusedMultiplyAdd(Vector512.Create(p5[r]), w, d5);
                d6 = Vector512.FusedMultiplyAdd(Vector512.Create(p6[r]), w, d6);
                d7 = Vector512.FusedMultiplyAdd(Vector512.Create(p7[r]), w, d7);
            }
            delta[0] = CpuMath.Softplus(d0 + bias); delta[1] = CpuMath.Softplus(d1 + bias);
            delta[2] = CpuMath.Softplus(d2 + bias); delta[3] = CpuMath.Softplus(d3 + bias);
            delta[4] = CpuMath.Softplus(d4 + bias); delta[5] = CpuMath.Softplus(d5 + bias);
            delta[6] = CpuMath.Softplus(d6 + bias); delta[7] = CpuMath.Softplus(d7 + bias);
            return;
        }
        for (int i = 0; i < count; i++)
        {
            float* p = row0 + (long)i * stride;
            var d = Vector512<float>.Zero;
            for (int r = 0; r < rank; r++) d = Vector512.FusedMultiplyAdd(Vector512.Create(p[r]), wr[r], d);
            delta[i] = CpuMath.Softplus(d + bias);
        }
    }

    /// <summary>
    /// Δ of <paramref name="count"/> (≤ <see cref="TimeBlock"/>) consecutive steps for one channel group:
    /// softplus(δ̃_t·W_dt + b), each output summed in order over r with one FMA per r (so a step's Δ never depends on
    /// the block it lands in); the block's 8 independent chains hide the FMA latency.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Delta(float* row0, int stride, int count, int rank, Vector256<float>* wr, Vector256<float> bias, Vector256<float>* delta)
    {
        if (count == TimeBlock)
        {
            float* p0 = row0, p1 = p0 + stride, p2 = p1 + stride, p3 = p2 + stride;
            float* p4 = p3 + stride, p5 = p4 + stride, p6 = p5 + stride, p7 = p6 + stride;
            var d0 = Vector256<float>.Zero; var d1 = d0; var d2 = d0; var d3 = d0; var d4 = d0; var d5 = d0; var d6 = d0; var d7 = d0;
            for (int r = 0; r < rank; r++)
            {
                var w = wr[r];
                d0 = Vector256.FusedMultiplyAdd(Vector256.Create(p0[r]), w, d0);
                d1 = Vector256.FusedMultiplyAdd(Vector256.Create(p1[r]), w, d1);
                d2 = Vector256.FusedMultiplyAdd(Vector256.Create(p2[r]), w, d2);
                d3 = Vector256.FusedMultiplyAdd(Vector256.Create(p3[r]), w, d3);
                d4 = Vector256.FusedMultiplyAdd(Vector256.Create(p4[r]), w, d4);
                d5 = Vector256.FusedMultiplyAdd(Vector256.Create(p5[r]), w, d5);
                d6 = Vector256.FusedMultiplyAdd(Vector256.Create(p6[r]), w, d6);
                d7 = Vector256.FusedMultiplyAdd(Vector256.Create(p7[r]), w, d7);
            }
            delta[0] = CpuMath.Softplus(d0 + bias); delta[1] = CpuMath.Softplus(d1 + bias);
            delta[2] = CpuMath.Softplus(d2 + bias); delta[3] = CpuMath.Softplus(d3 + bias);
            delta[4] = CpuMath.Softplus(d4 + bias); delta[5] = CpuMath.Softplus(d5 + bias);
            delta[6] = CpuMath.Softplus(d6 + bias); delta[7] = CpuMath.Softplus(d7 + bias);
            return;
        }
        for (int i = 0; i < count; i++)
        {
            float* p = row0 + (long)i * stride;
            var d = Vector256<float>.Zero;
            for (int r = 0; r < rank; r++) d = Vector256.FusedMultiplyAdd(Vector256.Create(p[r]), wr[r], d);
            delta[i] = CpuMath.Softplus(d + bias);
        }
    }

    private static unsafe void RunVector(in ScanArgs a, int b, int e0)
    {
        int n = a.N, inner = a.Inner, dbcWidth = a.Rank + 2 * n;
        int rank = a.Rank;
        var s = stackalloc Vector256<float>[n];
        var aj = stackalloc Vector256<float>[n];
        var wr = stackalloc Vector256<float>[rank];
        float* stateBase = a.State + ((long)b * inner + e0) * n;
        float* ar = a.A + (long)e0 * n;
        float* wrow = a.Wdt + (long)e0 * rank;
        for (int r = 0; r < rank; r++)
            wr[r] = Vector256.Create(wrow[r], wrow[rank + r], wrow[2 * rank + r], wrow[3 * rank + r],
                wrow[4 * rank + r], wrow[5 * rank + r], wrow[6 * rank + r], wrow[7 * rank + r]);
        var biasV = Vector256.Load(a.Bdt + e0);
        for (int j = 0; j < n; j++)
        {
            aj[j] = Vector256.Create(ar[j], ar[n + j], ar[2 * n + j], ar[3 * n + j], ar[4 * n + j], ar[5 * n + j], ar[6 * n + j], ar[7 * n + j]);
            if (a.Initial)
            {
                // state is [E, N] per batch row: gather the 8 channels' entry j.
                s[j] = Vector256.Create(stateBase[j], stateBase[n + j], stateBase[2 * n + j], stateBase[3 * n + j],
                    stateBase[4 * n + j], stateBase[5 * n + j], stateBase[6 * n + j], stateBase[7 * n + j]);
            }
            else s[j] = Vector256<float>.Zero;
        }
        var dv = Vector256.Load(a.D + e0);
        var deltaBlock = stackalloc Vector256<float>[TimeBlock];
        for (int t = 0; t < a.Length; t++)
        {
            long row = (long)b * a.Length + t;
            int inBlock = t % TimeBlock;
            if (inBlock == 0) Delta(a.Dbc + row * dbcWidth, dbcWidth, Math.Min(TimeBlock, a.Length - t), rank, wr, biasV, deltaBlock);
            var uv = Vector256.Load(a.U + row * inner + e0);
            var zv = Vector256.Load(a.Xz + row * 2 * inner + inner + e0);
            float* dt = a.Dbc + row * dbcWidth;
            var deltaV = deltaBlock[inBlock];
            float* bt = dt + rank;
            float* ct = bt + n;
            var du = deltaV * uv;
            var acc = Vector256<float>.Zero;
            for (int j = 0; j < n; j++)
            {
                var decay = CpuMath.Exp(deltaV * aj[j]);
                var sj = Vector256.FusedMultiplyAdd(decay, s[j], du * Vector256.Create(bt[j]));
                s[j] = sj;
                acc = Vector256.FusedMultiplyAdd(sj, Vector256.Create(ct[j]), acc);
            }
            var yv = acc + dv * uv;
            (yv * CpuMath.Silu(zv)).Store(a.Y + row * inner + e0);
        }
        if (a.HasState)
            for (int j = 0; j < n; j++)
                for (int lane = 0; lane < 8; lane++)
                    stateBase[lane * n + j] = s[j][lane];
    }

    private static unsafe void RunScalar(in ScanArgs a, int b, int e)
    {
        int n = a.N, inner = a.Inner, dbcWidth = a.Rank + 2 * n;
        var s = stackalloc float[n];
        float* stateRow = a.State + ((long)b * inner + e) * n;
        for (int j = 0; j < n; j++) s[j] = a.Initial ? stateRow[j] : 0f;
        for (int t = 0; t < a.Length; t++)
        {
            long row = (long)b * a.Length + t;
            float* dtRow = a.Dbc + row * dbcWidth;
            float* wrow = a.Wdt + (long)e * a.Rank;
            float raw = 0f;
            for (int r = 0; r < a.Rank; r++) raw += dtRow[r] * wrow[r];
            float dt = CpuMath.Softplus(raw + a.Bdt[e]);
            float uu = a.U[row * inner + e], z = a.Xz[row * 2 * inner + inner + e];
            float* bt = dtRow + a.Rank;
            float* ct = bt + n;
            float du = dt * uu, acc = 0f;
            for (int j = 0; j < n; j++)
            {
                s[j] = MathF.Exp(dt * a.A[(long)e * n + j]) * s[j] + du * bt[j];
                acc += s[j] * ct[j];
            }
            a.Y[row * inner + e] = (acc + a.D[e] * uu) * CpuMath.Silu(z);
        }
        if (a.HasState)
            for (int j = 0; j < n; j++) stateRow[j] = s[j];
    }
}
