using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Mamba.Compute.Cpu;

/// <summary>
/// The selective scan on the CPU, one channel per vector lane: groups of 16 channels with AVX-512, 8 with AVX2 (one
/// body, <see cref="ScanChannels{TVec, TOps}(in ScanArgs, int, int)"/>, generic over the width). Activations are token-major, so at each step the
/// channels' u, Δ and z are one contiguous load; B_t and C_t are broadcast. The state of a channel group is N vectors
/// kept in a small stack buffer (the native heap past MaxStackVectors), next to A[:, n] of the group's channels, gathered once per task (A is [E, N]: no
/// transposed copy per call). Work is split over (batch, channel group); with AVX-512 a task takes two whole groups
/// and interleaves their steps (<see cref="ScanChannelPair(in ScanArgs, int, int)"/>). A channel's operations and
/// their order are the same on every path, so its bits never depend on the grouping or the split.
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
        int lanes = Vector512Ops.IsHardwareAccelerated ? 16 : 8;
        int groups = (inner + lanes - 1) / lanes;
        unsafe
        {
            fixed (float* pu = u, pw = wdt, pb = bdt, pdbc = dbc, pxz = xz, pa = aNeg, pd = d, py = y, ps = state)
            {
                var args = new ScanArgs(pu, pw, pb, pdbc, pxz, pa, pd, py, ps, state.Length > 0, useInitialState,
                    batch, length, inner, rank, stateSize);
                // With AVX-512 a task takes two groups (32 channels) where it can: see ScanChannelPair.
                int perTask = lanes == 16 && inner >= 32 ? 2 : 1;
                int units = (groups + perTask - 1) / perTask;
                int tasks = batch * units;
                if (tasks == 1 || (long)batch * length * inner * stateSize < 1 << 16)
                    for (int t = 0; t < tasks; t++) RunUnit(args, t / units, t % units, perTask, lanes);
                else
                    Parallel.For(0, tasks, parallel, t => RunUnit(args, t / units, t % units, perTask, lanes));
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
                if (Vector512Ops.IsHardwareAccelerated) acc = UpdateState<Vector512<float>, Vector512Ops>(s, ar, bt, ct, dt, du, n, ref j);
                if (Vector256Ops.IsHardwareAccelerated) acc += UpdateState<Vector256<float>, Vector256Ops>(s, ar, bt, ct, dt, du, n, ref j);
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
                    (Vector256.Load(yp) * CpuMath.Silu<Vector256<float>, Vector256Ops>(Vector256.Load(zRow + blockStart + k))).Store(yp);
                }
            for (; k < width; k++) yRow[blockStart + k] *= CpuMath.Silu(zRow[blockStart + k]);
        }
    }

    /// <summary>
    /// The state update of one channel over the whole vectors of its N entries from <paramref name="j"/> on:
    /// s ← exp(Δ·A) ⊙ s + Δu·B; returns Σ s·C over them (a vector accumulator, then the lane sum) and advances j.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe float UpdateState<TVec, TOps>(float* s, float* a, float* bt, float* ct, float dt, float du, int n, ref int j)
        where TVec : struct where TOps : IVectorOps<TVec>
    {
        var dtv = TOps.Create(dt); var duv = TOps.Create(du); var accv = TOps.Zero;
        for (; j + TOps.Count <= n; j += TOps.Count)
        {
            var sv = TOps.Add(TOps.Multiply(CpuMath.Exp<TVec, TOps>(TOps.Multiply(dtv, TOps.Load(a + j))), TOps.Load(s + j)),
                TOps.Multiply(duv, TOps.Load(bt + j)));
            TOps.Store(sv, s + j);
            accv = TOps.Add(accv, TOps.Multiply(sv, TOps.Load(ct + j)));
        }
        return TOps.Sum(accv);
    }

    private readonly unsafe struct ScanArgs(float* u, float* wdt, float* bdt, float* dbc, float* xz, float* a,
        float* d, float* y, float* state, bool hasState, bool initial, int batch, int length, int inner, int rank, int n)
    {
        public readonly float* U = u, Wdt = wdt, Bdt = bdt, Dbc = dbc, Xz = xz, A = a, D = d, Y = y, State = state;
        public readonly bool HasState = hasState, Initial = initial;
        public readonly int Batch = batch, Length = length, Inner = inner, Rank = rank, N = n;
    }

    /// <summary>Groups unit·perTask .. + perTask − 1 of batch row b: a pair of whole 16-channel groups together, else one by one.</summary>
    private static void RunUnit(in ScanArgs a, int b, int unit, int perTask, int lanes)
    {
        int group = unit * perTask;
        if (perTask == 2 && (group + 2) * 16 <= a.Inner)
        {
            ScanChannelPair(a, b, group * 16);
            return;
        }
        for (int g = group; g < group + perTask && g * lanes < a.Inner; g++) RunGroup(a, b, g, lanes);
    }

    private static void RunGroup(in ScanArgs a, int b, int group, int lanes)
    {
        int e0 = group * lanes;
        int width = Math.Min(lanes, a.Inner - e0);
        if (width == 16)
        {
            ScanChannels<Vector512<float>, Vector512Ops>(a, b, e0);
            return;
        }
        // A partial group (or no AVX-512): 8-channel vectors, then channels one by one.
        int e = e0;
        for (; e + 8 <= e0 + width && Vector256Ops.IsHardwareAccelerated; e += 8) ScanChannels<Vector256<float>, Vector256Ops>(a, b, e);
        for (; e < e0 + width; e++) ScanChannel(a, b, e);
    }

    /// <summary>
    /// The scan of channels e0 .. e0 + TOps.Count − 1, one per lane, <see cref="TimeBlock"/> steps at a time:
    /// <see cref="Delta{TVec, TOps}"/> for the block, then <see cref="ScanSteps{TVec, TOps}"/>. Each is its own method
    /// so that the JIT allocates its registers alone: inlined into one loop, the generic form kept Δ accumulators on
    /// the stack (a store and a reload per FMA; the AVX2 scan ran ≈ 15 % slower).
    /// </summary>
    private static unsafe void ScanChannels<TVec, TOps>(in ScanArgs a, int b, int e0) where TVec : unmanaged where TOps : IVectorOps<TVec>
    {
        int n = a.N, inner = a.Inner, rank = a.Rank, dbcWidth = rank + 2 * n;
        // s, A and W_dt per lane: on the stack while small, else on the native heap (state_size and the rank come from
        // a config file; sized on the stack they overflowed it, aborting the process, at state_size ~ 20,000: issue 17).
        long need = 2L * n + rank;
        TVec* heap = null;
        TVec* stack = stackalloc TVec[need <= MaxStackVectors ? (int)need : 0];
        TVec* buffer = need <= MaxStackVectors ? stack : heap = (TVec*)NativeMemory.AlignedAlloc((nuint)need * (nuint)sizeof(TVec), 64);
        try
        {
            ScanChannels<TVec, TOps>(a, b, e0, buffer, buffer + n, buffer + 2 * n);
        }
        finally
        {
            if (heap != null) NativeMemory.AlignedFree(heap);
        }
    }

    /// <summary>The most vectors <see cref="ScanChannels{TVec, TOps}(in ScanArgs, int, int)"/>, <see cref="ScanChannelPair(in ScanArgs, int, int)"/> and <see cref="ScanChannel(in ScanArgs, int, int)"/> take from the stack (16 kB of Vector512).</summary>
    private const int MaxStackVectors = 256;

    private static unsafe void ScanChannels<TVec, TOps>(in ScanArgs a, int b, int e0, TVec* s, TVec* aj, TVec* wr) where TVec : unmanaged where TOps : IVectorOps<TVec>
    {
        int n = a.N, inner = a.Inner, rank = a.Rank, dbcWidth = rank + 2 * n;
        float* stateBase = a.State + ((long)b * inner + e0) * n;
        // W_dt [E, R], A [E, N] and the state [E, N] hold a channel's entries together: lane i gathers channel e0 + i's.
        var gather = stackalloc float[TOps.Count];
        for (int r = 0; r < rank; r++) wr[r] = Gather<TVec, TOps>(a.Wdt + (long)e0 * rank + r, rank, gather);
        var biasV = TOps.Load(a.Bdt + e0);
        for (int j = 0; j < n; j++)
        {
            aj[j] = Gather<TVec, TOps>(a.A + (long)e0 * n + j, n, gather);
            s[j] = a.Initial ? Gather<TVec, TOps>(stateBase + j, n, gather) : TOps.Zero;
        }
        var deltaBlock = stackalloc TVec[TimeBlock];
        for (int t0 = 0; t0 < a.Length; t0 += TimeBlock)
        {
            int count = Math.Min(TimeBlock, a.Length - t0);
            Delta<TVec, TOps>(a.Dbc + ((long)b * a.Length + t0) * dbcWidth, dbcWidth, count, rank, wr, biasV, deltaBlock);
            ScanSteps<TVec, TOps>(a, b, e0, t0, count, s, aj, deltaBlock);
        }
        if (a.HasState)
            for (int j = 0; j < n; j++)
                for (int lane = 0; lane < TOps.Count; lane++)
                    stateBase[lane * n + j] = TOps.GetElement(s[j], lane);
    }

    /// <summary>
    /// Channels e0 .. e0 + 31 as two 16-lane groups, their steps interleaved (<see cref="ScanStepsPair"/>): each
    /// channel runs exactly the operations of <see cref="ScanChannels{TVec, TOps}(in ScanArgs, int, int)"/> in the same
    /// order (so the same bits), but the two groups' independent chains (the exp, the Σ s·C sum over the states) fill
    /// the core together; one group's sum alone is a chain of N dependent FMAs per step.
    /// </summary>
    private static unsafe void ScanChannelPair(in ScanArgs a, int b, int e0)
    {
        int n = a.N, rank = a.Rank;
        long need = 2 * (2L * n + rank);
        Vector512<float>* heap = null;
        Vector512<float>* stack = stackalloc Vector512<float>[need <= MaxStackVectors ? (int)need : 0];
        Vector512<float>* buffer = need <= MaxStackVectors ? stack
            : heap = (Vector512<float>*)NativeMemory.AlignedAlloc((nuint)need * (nuint)sizeof(Vector512<float>), 64);
        try
        {
            ScanChannelPair(a, b, e0, buffer, buffer + 2 * n, buffer + 4 * n);
        }
        finally
        {
            if (heap != null) NativeMemory.AlignedFree(heap);
        }
    }

    /// <param name="s">[2, N]: the states of channels e0 .. e0 + 15, then of e0 + 16 .. e0 + 31</param>
    /// <param name="aj">[2, N]: A, the same way</param>
    /// <param name="wr">[2, R]: W_dt, the same way</param>
    private static unsafe void ScanChannelPair(in ScanArgs a, int b, int e0, Vector512<float>* s, Vector512<float>* aj, Vector512<float>* wr)
    {
        int n = a.N, inner = a.Inner, rank = a.Rank, dbcWidth = rank + 2 * n;
        var gather = stackalloc float[16];
        for (int g = 0; g < 2; g++)
        {
            int e = e0 + 16 * g;
            float* stateBase = a.State + ((long)b * inner + e) * n;
            for (int r = 0; r < rank; r++) wr[g * rank + r] = Gather<Vector512<float>, Vector512Ops>(a.Wdt + (long)e * rank + r, rank, gather);
            for (int j = 0; j < n; j++)
            {
                aj[g * n + j] = Gather<Vector512<float>, Vector512Ops>(a.A + (long)e * n + j, n, gather);
                s[g * n + j] = a.Initial ? Gather<Vector512<float>, Vector512Ops>(stateBase + j, n, gather) : Vector512<float>.Zero;
            }
        }
        var bias0 = Vector512.Load(a.Bdt + e0);
        var bias1 = Vector512.Load(a.Bdt + e0 + 16);
        var deltaBlock = stackalloc Vector512<float>[2 * TimeBlock];
        for (int t0 = 0; t0 < a.Length; t0 += TimeBlock)
        {
            int count = Math.Min(TimeBlock, a.Length - t0);
            float* dbcRows = a.Dbc + ((long)b * a.Length + t0) * dbcWidth;
            Delta<Vector512<float>, Vector512Ops>(dbcRows, dbcWidth, count, rank, wr, bias0, deltaBlock);
            Delta<Vector512<float>, Vector512Ops>(dbcRows, dbcWidth, count, rank, wr + rank, bias1, deltaBlock + TimeBlock);
            ScanStepsPair(a, b, e0, t0, count, s, aj, deltaBlock);
        }
        if (a.HasState)
            for (int g = 0; g < 2; g++)
            {
                float* stateBase = a.State + ((long)b * inner + e0 + 16 * g) * n;
                for (int j = 0; j < n; j++)
                    for (int lane = 0; lane < 16; lane++)
                        stateBase[lane * n + j] = s[g * n + j][lane];
            }
    }

    /// <summary>
    /// <see cref="ScanSteps{TVec, TOps}"/> for two 16-channel groups at once (Δ of group 1 at
    /// <paramref name="delta"/> + <see cref="TimeBlock"/>), each channel with the same operations in the same order.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe void ScanStepsPair(in ScanArgs a, int b, int e0, int t0, int count, Vector512<float>* s, Vector512<float>* aj,
        Vector512<float>* delta)
    {
        int n = a.N, inner = a.Inner, dbcWidth = a.Rank + 2 * n;
        var dv0 = Vector512.Load(a.D + e0);
        var dv1 = Vector512.Load(a.D + e0 + 16);
        Vector512<float>* s1 = s + n, aj1 = aj + n;
        for (int i = 0; i < count; i++)
        {
            long row = (long)b * a.Length + t0 + i;
            float* u = a.U + row * inner + e0, z = a.Xz + row * 2 * inner + inner + e0;
            var u0 = Vector512.Load(u); var u1 = Vector512.Load(u + 16);
            var delta0 = delta[i]; var delta1 = delta[TimeBlock + i];
            float* bt = a.Dbc + row * dbcWidth + a.Rank;
            float* ct = bt + n;
            var du0 = delta0 * u0; var du1 = delta1 * u1;
            var acc0 = Vector512<float>.Zero; var acc1 = Vector512<float>.Zero;
            for (int j = 0; j < n; j++)
            {
                acc0 = Update<Vector512<float>, Vector512Ops>(ref s[j], aj[j], bt[j], ct[j], delta0, du0, acc0);
                acc1 = Update<Vector512<float>, Vector512Ops>(ref s1[j], aj1[j], bt[j], ct[j], delta1, du1, acc1);
            }
            float* y = a.Y + row * inner + e0;
            ((acc0 + dv0 * u0) * CpuMath.Silu<Vector512<float>, Vector512Ops>(Vector512.Load(z))).Store(y);
            ((acc1 + dv1 * u1) * CpuMath.Silu<Vector512<float>, Vector512Ops>(Vector512.Load(z + 16))).Store(y + 16);
        }
    }

    /// <summary>One state entry for one step: s ← exp(Δ·A)·s + Δu·B (one FMA); returns acc + s·C (one FMA).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TVec Update<TVec, TOps>(ref TVec s, TVec a, float b, float c, TVec delta, TVec du, TVec acc)
        where TVec : unmanaged where TOps : IVectorOps<TVec>
    {
        var decay = CpuMath.Exp<TVec, TOps>(TOps.Multiply(delta, a));
        s = TOps.FusedMultiplyAdd(decay, s, TOps.Multiply(du, TOps.Create(b)));
        return TOps.FusedMultiplyAdd(s, TOps.Create(c), acc);
    }

    /// <summary>
    /// Steps t0 .. t0 + count − 1 of the channels at e0 with their Δ given: s ← exp(Δ·A) ⊙ s + Δu·B,
    /// y = (s·C + D·u)·silu(z).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe void ScanSteps<TVec, TOps>(in ScanArgs a, int b, int e0, int t0, int count, TVec* s, TVec* aj, TVec* delta)
        where TVec : unmanaged where TOps : IVectorOps<TVec>
    {
        int n = a.N, inner = a.Inner, dbcWidth = a.Rank + 2 * n;
        var dv = TOps.Load(a.D + e0);
        for (int i = 0; i < count; i++)
        {
            long row = (long)b * a.Length + t0 + i;
            var uv = TOps.Load(a.U + row * inner + e0);
            var zv = TOps.Load(a.Xz + row * 2 * inner + inner + e0);
            var deltaV = delta[i];
            float* bt = a.Dbc + row * dbcWidth + a.Rank;
            float* ct = bt + n;
            var du = TOps.Multiply(deltaV, uv);
            var acc = TOps.Zero;
            for (int j = 0; j < n; j++)
            {
                var decay = CpuMath.Exp<TVec, TOps>(TOps.Multiply(deltaV, aj[j]));
                var sj = TOps.FusedMultiplyAdd(decay, s[j], TOps.Multiply(du, TOps.Create(bt[j])));
                s[j] = sj;
                acc = TOps.FusedMultiplyAdd(sj, TOps.Create(ct[j]), acc);
            }
            var yv = TOps.Add(acc, TOps.Multiply(dv, uv));
            TOps.Store(TOps.Multiply(yv, CpuMath.Silu<TVec, TOps>(zv)), a.Y + row * inner + e0);
        }
    }

    /// <summary>One vector from <paramref name="first"/>[lane·<paramref name="stride"/>], through <paramref name="buffer"/> (TOps.Count floats).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe TVec Gather<TVec, TOps>(float* first, int stride, float* buffer) where TVec : struct where TOps : IVectorOps<TVec>
    {
        for (int lane = 0; lane < TOps.Count; lane++) buffer[lane] = first[(long)lane * stride];
        return TOps.Load(buffer);
    }

    /// <summary>Steps whose Δ is computed together (see <see cref="Delta{TVec, TOps}"/>).</summary>
    private const int TimeBlock = 8;

    /// <summary>
    /// Δ of <paramref name="count"/> (≤ <see cref="TimeBlock"/>) consecutive steps for one channel group:
    /// softplus(δ̃_t·W_dt + b), each output summed in order over r with one FMA per r (so a step's Δ never depends on
    /// the block it lands in); the block's 8 independent chains hide the FMA latency.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Delta<TVec, TOps>(float* row0, int stride, int count, int rank, TVec* wr, TVec bias, TVec* delta)
        where TVec : unmanaged where TOps : IVectorOps<TVec>
    {
        if (count == TimeBlock)
        {
            float* p0 = row0, p1 = p0 + stride, p2 = p1 + stride, p3 = p2 + stride;
            float* p4 = p3 + stride, p5 = p4 + stride, p6 = p5 + stride, p7 = p6 + stride;
            var d0 = TOps.Zero; var d1 = d0; var d2 = d0; var d3 = d0; var d4 = d0; var d5 = d0; var d6 = d0; var d7 = d0;
            for (int r = 0; r < rank; r++)
            {
                var w = wr[r];
                d0 = TOps.FusedMultiplyAdd(TOps.Create(p0[r]), w, d0);
                d1 = TOps.FusedMultiplyAdd(TOps.Create(p1[r]), w, d1);
                d2 = TOps.FusedMultiplyAdd(TOps.Create(p2[r]), w, d2);
                d3 = TOps.FusedMultiplyAdd(TOps.Create(p3[r]), w, d3);
                d4 = TOps.FusedMultiplyAdd(TOps.Create(p4[r]), w, d4);
                d5 = TOps.FusedMultiplyAdd(TOps.Create(p5[r]), w, d5);
                d6 = TOps.FusedMultiplyAdd(TOps.Create(p6[r]), w, d6);
                d7 = TOps.FusedMultiplyAdd(TOps.Create(p7[r]), w, d7);
            }
            // Stored before any softplus: with the 8 softplus bodies after the loop, the JIT (AVX2, 16 registers) kept
            // the chains on the stack, storing and reloading 7 of them every r.
            delta[0] = TOps.Add(d0, bias); delta[1] = TOps.Add(d1, bias); delta[2] = TOps.Add(d2, bias); delta[3] = TOps.Add(d3, bias);
            delta[4] = TOps.Add(d4, bias); delta[5] = TOps.Add(d5, bias); delta[6] = TOps.Add(d6, bias); delta[7] = TOps.Add(d7, bias);
        }
        else
            for (int i = 0; i < count; i++)
            {
                float* p = row0 + (long)i * stride;
                var d = TOps.Zero;
                for (int r = 0; r < rank; r++) d = TOps.FusedMultiplyAdd(TOps.Create(p[r]), wr[r], d);
                delta[i] = TOps.Add(d, bias);
            }
        for (int i = 0; i < count; i++) delta[i] = CpuMath.Softplus<TVec, TOps>(delta[i]);
    }

    /// <summary>The scan of one channel in scalar float (the formulas of <see cref="CpuMath"/>'s scalar forms).</summary>
    private static unsafe void ScanChannel(in ScanArgs a, int b, int e)
    {
        int n = a.N;
        float* heap = null;
        float* stack = stackalloc float[n <= MaxStackVectors ? n : 0];
        float* s = n <= MaxStackVectors ? stack : heap = (float*)NativeMemory.Alloc((nuint)n, sizeof(float));
        try
        {
            ScanChannel(a, b, e, s);
        }
        finally
        {
            if (heap != null) NativeMemory.Free(heap);
        }
    }

    private static unsafe void ScanChannel(in ScanArgs a, int b, int e, float* s)
    {
        int n = a.N, inner = a.Inner, dbcWidth = a.Rank + 2 * n;
        float* stateRow = a.State + ((long)b * inner + e) * n;
        for (int j = 0; j < n; j++) s[j] = a.Initial ? stateRow[j] : 0f;
        float* wrow = a.Wdt + (long)e * a.Rank;
        float* ar = a.A + (long)e * n;
        for (int t = 0; t < a.Length; t++)
        {
            long row = (long)b * a.Length + t;
            float* dtRow = a.Dbc + row * dbcWidth;
            float raw = 0f;
            for (int r = 0; r < a.Rank; r++) raw += dtRow[r] * wrow[r];
            float dt = CpuMath.Softplus(raw + a.Bdt[e]);
            float uu = a.U[row * inner + e], z = a.Xz[row * 2 * inner + inner + e];
            float* bt = dtRow + a.Rank;
            float* ct = bt + n;
            float du = dt * uu, acc = 0f;
            for (int j = 0; j < n; j++)
            {
                s[j] = MathF.Exp(dt * ar[j]) * s[j] + du * bt[j];
                acc += s[j] * ct[j];
            }
            a.Y[row * inner + e] = (acc + a.D[e] * uu) * CpuMath.Silu(z);
        }
        if (a.HasState)
            for (int j = 0; j < n; j++) stateRow[j] = s[j];
    }
}
