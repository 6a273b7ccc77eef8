using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Mamba.Compute.Cpu;

/// <summary>
/// The selective scan on the CPU, 8 channels per Vector256 lane group. Activations are token-major,
/// so at each step the 8 channels' u, Δ and z are one contiguous load; B_t and C_t are broadcast. The
/// state of a channel group is N vectors kept in a small stack buffer; A is pre-transposed to [N, E]
/// so A[:, n] for the group is one load. Work is split over (batch, channel group).
/// </summary>
internal static class CpuSelectiveScan
{
    /// <param name="u">[B, L, E]</param>
    /// <param name="delta">[B, L, E], already softplus(W_dt·δ̃ + b_dt)</param>
    /// <param name="dbc">[B, L, R+2N]: B at columns R.., C at R+N..</param>
    /// <param name="xz">[B, L, 2E]: z at columns E..</param>
    /// <param name="aTransposed">[N, E], A = −exp(A_log)</param>
    /// <param name="d">[E]</param>
    /// <param name="y">[B, L, E] output</param>
    /// <param name="state">[B, E, N]: read as the initial state when <paramref name="useInitialState"/>, written with the final state; may be empty when not needed</param>
    public static void Run(ReadOnlySpan<float> u, ReadOnlySpan<float> delta, ReadOnlySpan<float> dbc, ReadOnlySpan<float> xz,
        ReadOnlySpan<float> aTransposed, ReadOnlySpan<float> d, Span<float> y, Span<float> state, bool useInitialState,
        int batch, int length, int inner, int rank, int stateSize, ParallelOptions parallel)
    {
        // 16 channels per task with AVX-512, else 8.
        int lanes = Vector512.IsHardwareAccelerated ? 16 : 8;
        int groups = (inner + lanes - 1) / lanes;
        unsafe
        {
            fixed (float* pu = u, pdelta = delta, pdbc = dbc, pxz = xz, pa = aTransposed, pd = d, py = y, ps = state)
            {
                var args = new ScanArgs(pu, pdelta, pdbc, pxz, pa, pd, py, ps, state.Length > 0, useInitialState,
                    batch, length, inner, rank, stateSize);
                int tasks = batch * groups;
                if (tasks == 1 || (long)batch * length * inner * stateSize < 1 << 16)
                    for (int t = 0; t < tasks; t++) RunGroup(args, t / groups, t % groups, lanes);
                else
                    Parallel.For(0, tasks, parallel, t => RunGroup(args, t / groups, t % groups, lanes));
            }
        }
    }

    private readonly unsafe struct ScanArgs(float* u, float* delta, float* dbc, float* xz, float* a, float* d, float* y, float* state,
        bool hasState, bool initial, int batch, int length, int inner, int rank, int n)
    {
        public readonly float* U = u, Delta = delta, Dbc = dbc, Xz = xz, A = a, D = d, Y = y, State = state;
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
        var s = stackalloc Vector512<float>[n];
        float* stateBase = a.State + ((long)b * inner + e0) * n;
        var gather = stackalloc float[16];
        for (int j = 0; j < n; j++)
        {
            if (a.Initial)
            {
                for (int lane = 0; lane < 16; lane++) gather[lane] = stateBase[lane * n + j];
                s[j] = Vector512.Load(gather);
            }
            else s[j] = Vector512<float>.Zero;
        }
        var dv = Vector512.Load(a.D + e0);
        for (int t = 0; t < a.Length; t++)
        {
            long row = (long)b * a.Length + t;
            var uv = Vector512.Load(a.U + row * inner + e0);
            var deltaV = Vector512.Load(a.Delta + row * inner + e0);
            var zv = Vector512.Load(a.Xz + row * 2 * inner + inner + e0);
            float* bt = a.Dbc + row * dbcWidth + a.Rank;
            float* ct = bt + n;
            var du = deltaV * uv;
            var acc = Vector512<float>.Zero;
            for (int j = 0; j < n; j++)
            {
                var decay = Vector512.Exp(deltaV * Vector512.Load(a.A + (long)j * inner + e0));
                var sj = decay * s[j] + du * Vector512.Create(bt[j]);
                s[j] = sj;
                acc += sj * Vector512.Create(ct[j]);
            }
            var yv = acc + dv * uv;
            (yv * (zv / (Vector512<float>.One + Vector512.Exp(-zv)))).Store(a.Y + row * inner + e0);
        }
        if (a.HasState)
            for (int j = 0; j < n; j++)
                for (int lane = 0; lane < 16; lane++)
                    stateBase[lane * n + j] = s[j][lane];
    }

    private static unsafe void RunVector(in ScanArgs a, int b, int e0)
    {
        int n = a.N, inner = a.Inner, dbcWidth = a.Rank + 2 * n;
        var s = stackalloc Vector256<float>[n];
        float* stateBase = a.State + ((long)b * inner + e0) * n;
        for (int j = 0; j < n; j++)
        {
            if (a.Initial)
            {
                // state is [E, N] per batch row: gather the 8 channels' entry j.
                s[j] = Vector256.Create(stateBase[j], stateBase[n + j], stateBase[2 * n + j], stateBase[3 * n + j],
                    stateBase[4 * n + j], stateBase[5 * n + j], stateBase[6 * n + j], stateBase[7 * n + j]);
            }
            else s[j] = Vector256<float>.Zero;
        }
        var dv = Vector256.Load(a.D + e0);
        for (int t = 0; t < a.Length; t++)
        {
            long row = (long)b * a.Length + t;
            var uv = Vector256.Load(a.U + row * inner + e0);
            var deltaV = Vector256.Load(a.Delta + row * inner + e0);
            var zv = Vector256.Load(a.Xz + row * 2 * inner + inner + e0);
            float* bt = a.Dbc + row * dbcWidth + a.Rank;
            float* ct = bt + n;
            var du = deltaV * uv;
            var acc = Vector256<float>.Zero;
            for (int j = 0; j < n; j++)
            {
                var decay = Vector256.Exp(deltaV * Vector256.Load(a.A + (long)j * inner + e0));
                var sj = decay * s[j] + du * Vector256.Create(bt[j]);
                s[j] = sj;
                acc += sj * Vector256.Create(ct[j]);
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
            float uu = a.U[row * inner + e], dt = a.Delta[row * inner + e], z = a.Xz[row * 2 * inner + inner + e];
            float* bt = a.Dbc + row * dbcWidth + a.Rank;
            float* ct = bt + n;
            float du = dt * uu, acc = 0f;
            for (int j = 0; j < n; j++)
            {
                s[j] = MathF.Exp(dt * a.A[(long)j * inner + e]) * s[j] + du * bt[j];
                acc += s[j] * ct[j];
            }
            a.Y[row * inner + e] = (acc + a.D[e] * uu) * CpuMath.Silu(z);
        }
        if (a.HasState)
            for (int j = 0; j < n; j++) stateRow[j] = s[j];
    }
}
