using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Mamba.Compute.Cpu;

/// <summary>
/// Y[M, N] = X[M, K] · Wᵀ (+ bias[N]) with W held in a narrow weight-only format and accumulated in float32: int8
/// per-row-scaled weights (<see cref="Int8RowQuantized"/>, <see cref="Linear"/>) or bfloat16 (<see cref="LinearBf16"/>).
/// The target is decode (M = 1): a GEMV that streams the weight once, so reading a quarter (int8) or half (bf16) of the
/// bytes of the float32 weight is the gain. Each output is one dot product Σ_p X[r, p]·W̃[j, p] over the stored values
/// widened exactly to float (int8: sign-extended to int32 and converted; bf16: shifted into the top half of a float),
/// then (int8) multiplied once by the row's scale, and the bias added.
/// <para>
/// Every output has one summation order whatever computed it: four accumulator vectors take the four consecutive
/// vectors of each 4·lanes block, one vector-wide step per remaining full vector goes to the first, then
/// (a0 + a1) + (a2 + a3), the horizontal sum and the scalar rest. So 1, 2 or 4 inputs against the same weight row (the
/// small-M tiles, which widen the weight once for all of them) and any split of the rows over tasks give the same bits.
/// AVX-512 (16 lanes) and AVX2 (8 lanes) differ from each other in the last bits, as in <see cref="CpuGemm"/>; without
/// AVX2 a scalar loop runs.
/// </para>
/// </summary>
internal static class CpuInt8Linear
{
    private static bool Use512 => Vector512Ops.IsHardwareAccelerated && Avx512F.IsSupported;

    private static bool Use256 => Vector256Ops.IsHardwareAccelerated && Avx2.IsSupported;

    private const int MinRowsPerTask = 64; // as CpuGemm.PanelRows: below this the task overhead outweighs the work

    /// <summary>
    /// y[m, n] = x[m, k] · (Scales[i] · Q[i, :])ᵀ + bias. <paramref name="x"/> holds at least m·k floats (rows of K),
    /// <paramref name="y"/> at least m·n; <paramref name="bias"/> is empty or holds n. With <paramref name="parallel"/>,
    /// large products are split over blocks of output rows (the same bits as without) on <paramref name="options"/>
    /// (default: every core).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="w"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="m"/> is negative.</exception>
    /// <exception cref="ArgumentException">A span is shorter than its shape, or the bias is neither empty nor of length n.</exception>
    public static void Linear(ReadOnlySpan<float> x, int m, Int8RowQuantized w, ReadOnlySpan<float> bias, Span<float> y, bool parallel,
        ParallelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(w);
        unsafe
        {
            fixed (sbyte* pq = w.Q)
            fixed (float* ps = w.Scales)
                Run<sbyte, Int8Widen512, Int8Widen256>(x, m, pq, ps, w.N, w.K, bias, y, parallel, options);
        }
    }

    /// <summary>
    /// y[m, n] = x[m, k] · Wᵀ + bias with W [n, k] held as bfloat16 bits (<paramref name="w"/>, row-major): each weight is
    /// widened exactly to float32 (the bf16 bits are the top half of the f32 bits), then the products are summed in
    /// the order described on the class. Arguments as <see cref="Linear(ReadOnlySpan{float}, int, Int8RowQuantized, ReadOnlySpan{float}, Span{float}, bool, ParallelOptions?)"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="m"/>, <paramref name="n"/> or <paramref name="k"/> is negative.</exception>
    /// <exception cref="ArgumentException">A span is shorter than its shape, or the bias is neither empty nor of length n.</exception>
    public static void LinearBf16(ReadOnlySpan<float> x, int m, ReadOnlySpan<ushort> w, int n, int k, ReadOnlySpan<float> bias, Span<float> y,
        bool parallel, ParallelOptions? options = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (w.Length < (long)n * k)
            throw new ArgumentException($"w holds {w.Length} values; n = {n} rows of k = {k} need {(long)n * k}.", nameof(w));
        unsafe
        {
            fixed (ushort* pw = w)
                Run<ushort, Bf16Widen512, Bf16Widen256>(x, m, pw, null, n, k, bias, y, parallel, options);
        }
    }

    private static unsafe void Run<TElem, TWiden512, TWiden256>(ReadOnlySpan<float> x, int m, TElem* q, float* scales, int n, int k,
        ReadOnlySpan<float> bias, Span<float> y, bool parallel, ParallelOptions? options)
        where TElem : unmanaged
        where TWiden512 : IWeightWiden<Vector512<float>, TElem>
        where TWiden256 : IWeightWiden<Vector256<float>, TElem>
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        if (x.Length < (long)m * k)
            throw new ArgumentException($"x holds {x.Length} floats; m = {m} rows of k = {k} need {(long)m * k}.", nameof(x));
        if (y.Length < (long)m * n)
            throw new ArgumentException($"y holds {y.Length} floats; m = {m} rows of n = {n} need {(long)m * n}.", nameof(y));
        if (bias.Length != 0 && bias.Length != n)
            throw new ArgumentException($"The bias holds {bias.Length} floats; it must be empty or hold n = {n}.", nameof(bias));
        if (m == 0 || n == 0) return;
        fixed (float* px = x, py = y, pb = bias)
        {
            var a = new Args<TElem>(px, q, scales, pb, bias.Length > 0, py, m, n, k);
            int threads = options is { MaxDegreeOfParallelism: > 0 } ? options.MaxDegreeOfParallelism : Environment.ProcessorCount;
            // A few large blocks per thread (CpuGemm's decode panels): 4 per thread, in multiples of 4 rows.
            int rowsPerTask = Math.Max(MinRowsPerTask, (n / (threads * 4) + 3) / 4 * 4);
            int tasks = (n + rowsPerTask - 1) / rowsPerTask;
            if (!parallel || threads == 1 || tasks == 1 || (long)m * n * k < 1 << 18)
            {
                RunRows<TElem, TWiden512, TWiden256>(a, 0, n);
            }
            else
            {
                Parallel.For(0, tasks, options ?? new ParallelOptions(),
                    t => RunRows<TElem, TWiden512, TWiden256>(a, t * rowsPerTask, Math.Min(n, (t + 1) * rowsPerTask)));
            }
        }
    }

    private readonly unsafe struct Args<TElem>(float* x, TElem* q, float* scales, float* bias, bool hasBias, float* y, int m, int n, int k)
        where TElem : unmanaged
    {
        public readonly float* X = x, Scales = scales, Bias = bias, Y = y;
        public readonly TElem* Q = q;
        public readonly int M = m, N = n, K = k;
        public readonly bool HasBias = hasBias;
    }

    /// <summary>Output columns [j0, j1) for every input row; each weight row is widened once per group of inputs.</summary>
    private static unsafe void RunRows<TElem, TWiden512, TWiden256>(in Args<TElem> a, int j0, int j1)
        where TElem : unmanaged
        where TWiden512 : IWeightWiden<Vector512<float>, TElem>
        where TWiden256 : IWeightWiden<Vector256<float>, TElem>
    {
        if (Use512) RunRows<TElem, Vector512<float>, Vector512Ops, TWiden512>(a, j0, j1, group: 4);
        else if (Use256) RunRows<TElem, Vector256<float>, Vector256Ops, TWiden256>(a, j0, j1, group: 2);
        else RunRowsScalar<TElem, TWiden256>(a, j0, j1);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // see IVectorOps: vector code from the first call
    private static unsafe void RunRows<TElem, TVec, TOps, TWiden>(in Args<TElem> a, int j0, int j1, int group)
        where TElem : unmanaged where TVec : struct where TOps : IVectorOps<TVec> where TWiden : IWeightWiden<TVec, TElem>
    {
        int k = a.K, n = a.N;
        var sums = stackalloc float[4];
        for (int j = j0; j < j1; j++)
        {
            TElem* q = a.Q + (long)j * k;
            float s = a.Scales == null ? 1f : a.Scales[j];
            int i = 0;
            if (group == 4)
            {
                for (; i + 4 <= a.M; i += 4)
                {
                    float* x0 = a.X + (long)i * k;
                    Dot4<TElem, TVec, TOps, TWiden>(x0, x0 + k, x0 + 2L * k, x0 + 3L * k, q, k, sums);
                    for (int r = 0; r < 4; r++) Store(a, i + r, j, sums[r], s);
                }
            }
            for (; i + 2 <= a.M; i += 2)
            {
                float* x0 = a.X + (long)i * k;
                Dot2<TElem, TVec, TOps, TWiden>(x0, x0 + k, q, k, sums);
                Store(a, i, j, sums[0], s);
                Store(a, i + 1, j, sums[1], s);
            }
            for (; i < a.M; i++)
                Store(a, i, j, Dot1<TElem, TVec, TOps, TWiden>(a.X + (long)i * k, q, k), s);
        }
    }

    private static unsafe void RunRowsScalar<TElem, TWiden>(in Args<TElem> a, int j0, int j1)
        where TElem : unmanaged where TWiden : IWeightWiden<Vector256<float>, TElem>
    {
        int k = a.K;
        for (int j = j0; j < j1; j++)
        {
            TElem* q = a.Q + (long)j * k;
            for (int i = 0; i < a.M; i++)
            {
                float* x = a.X + (long)i * k;
                float sum = 0f;
                for (int p = 0; p < k; p++) sum += x[p] * TWiden.Scalar(q[p]);
                Store(a, i, j, sum, a.Scales == null ? 1f : a.Scales[j]);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Store<TElem>(in Args<TElem> a, int i, int j, float sum, float scale) where TElem : unmanaged
    {
        float v = sum * scale;
        if (a.HasBias) v += a.Bias[j];
        a.Y[(long)i * a.N + j] = v;
    }

    /// <summary>Σ x[p]·q[p] in the order described on the class.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe float Dot1<TElem, TVec, TOps, TWiden>(float* x, TElem* q, int k)
        where TElem : unmanaged where TVec : struct where TOps : IVectorOps<TVec> where TWiden : IWeightWiden<TVec, TElem>
    {
        int c = TOps.Count, p = 0;
        var a0 = TOps.Zero; var a1 = TOps.Zero; var a2 = TOps.Zero; var a3 = TOps.Zero;
        for (; p + 4 * c <= k; p += 4 * c)
        {
            TWiden.Load4(q + p, out var w0, out var w1, out var w2, out var w3);
            a0 = TOps.FusedMultiplyAdd(TOps.Load(x + p), w0, a0);
            a1 = TOps.FusedMultiplyAdd(TOps.Load(x + p + c), w1, a1);
            a2 = TOps.FusedMultiplyAdd(TOps.Load(x + p + 2 * c), w2, a2);
            a3 = TOps.FusedMultiplyAdd(TOps.Load(x + p + 3 * c), w3, a3);
        }
        for (; p + c <= k; p += c) a0 = TOps.FusedMultiplyAdd(TOps.Load(x + p), TWiden.Load1(q + p), a0);
        float sum = TOps.Sum(TOps.Add(TOps.Add(a0, a1), TOps.Add(a2, a3)));
        for (; p < k; p++) sum += x[p] * TWiden.Scalar(q[p]);
        return sum;
    }

    /// <summary>Two inputs against one weight row, widened once: each sum as <see cref="Dot1{TElem, TVec, TOps, TWiden}"/> gives it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Dot2<TElem, TVec, TOps, TWiden>(float* x0, float* x1, TElem* q, int k, float* sums)
        where TElem : unmanaged where TVec : struct where TOps : IVectorOps<TVec> where TWiden : IWeightWiden<TVec, TElem>
    {
        int c = TOps.Count, p = 0;
        var a0 = TOps.Zero; var a1 = TOps.Zero; var a2 = TOps.Zero; var a3 = TOps.Zero;
        var b0 = TOps.Zero; var b1 = TOps.Zero; var b2 = TOps.Zero; var b3 = TOps.Zero;
        for (; p + 4 * c <= k; p += 4 * c)
        {
            TWiden.Load4(q + p, out var w0, out var w1, out var w2, out var w3);
            a0 = TOps.FusedMultiplyAdd(TOps.Load(x0 + p), w0, a0);
            a1 = TOps.FusedMultiplyAdd(TOps.Load(x0 + p + c), w1, a1);
            a2 = TOps.FusedMultiplyAdd(TOps.Load(x0 + p + 2 * c), w2, a2);
            a3 = TOps.FusedMultiplyAdd(TOps.Load(x0 + p + 3 * c), w3, a3);
            b0 = TOps.FusedMultiplyAdd(TOps.Load(x1 + p), w0, b0);
            b1 = TOps.FusedMultiplyAdd(TOps.Load(x1 + p + c), w1, b1);
            b2 = TOps.FusedMultiplyAdd(TOps.Load(x1 + p + 2 * c), w2, b2);
            b3 = TOps.FusedMultiplyAdd(TOps.Load(x1 + p + 3 * c), w3, b3);
        }
        for (; p + c <= k; p += c)
        {
            var w0 = TWiden.Load1(q + p);
            a0 = TOps.FusedMultiplyAdd(TOps.Load(x0 + p), w0, a0);
            b0 = TOps.FusedMultiplyAdd(TOps.Load(x1 + p), w0, b0);
        }
        float s0 = TOps.Sum(TOps.Add(TOps.Add(a0, a1), TOps.Add(a2, a3)));
        float s1 = TOps.Sum(TOps.Add(TOps.Add(b0, b1), TOps.Add(b2, b3)));
        for (; p < k; p++) { float wq = TWiden.Scalar(q[p]); s0 += x0[p] * wq; s1 += x1[p] * wq; }
        sums[0] = s0; sums[1] = s1;
    }

    /// <summary>
    /// Four inputs against one weight row, widened once (16 accumulators: AVX-512 only, which has 32 registers): each
    /// sum as <see cref="Dot1{TElem, TVec, TOps, TWiden}"/> gives it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Dot4<TElem, TVec, TOps, TWiden>(float* x0, float* x1, float* x2, float* x3, TElem* q, int k, float* sums)
        where TElem : unmanaged where TVec : struct where TOps : IVectorOps<TVec> where TWiden : IWeightWiden<TVec, TElem>
    {
        int c = TOps.Count, p = 0;
        var a0 = TOps.Zero; var a1 = TOps.Zero; var a2 = TOps.Zero; var a3 = TOps.Zero;
        var b0 = TOps.Zero; var b1 = TOps.Zero; var b2 = TOps.Zero; var b3 = TOps.Zero;
        var c0 = TOps.Zero; var c1 = TOps.Zero; var c2 = TOps.Zero; var c3 = TOps.Zero;
        var d0 = TOps.Zero; var d1 = TOps.Zero; var d2 = TOps.Zero; var d3 = TOps.Zero;
        for (; p + 4 * c <= k; p += 4 * c)
        {
            TWiden.Load4(q + p, out var w0, out var w1, out var w2, out var w3);
            a0 = TOps.FusedMultiplyAdd(TOps.Load(x0 + p), w0, a0);
            a1 = TOps.FusedMultiplyAdd(TOps.Load(x0 + p + c), w1, a1);
            a2 = TOps.FusedMultiplyAdd(TOps.Load(x0 + p + 2 * c), w2, a2);
            a3 = TOps.FusedMultiplyAdd(TOps.Load(x0 + p + 3 * c), w3, a3);
            b0 = TOps.FusedMultiplyAdd(TOps.Load(x1 + p), w0, b0);
            b1 = TOps.FusedMultiplyAdd(TOps.Load(x1 + p + c), w1, b1);
            b2 = TOps.FusedMultiplyAdd(TOps.Load(x1 + p + 2 * c), w2, b2);
            b3 = TOps.FusedMultiplyAdd(TOps.Load(x1 + p + 3 * c), w3, b3);
            c0 = TOps.FusedMultiplyAdd(TOps.Load(x2 + p), w0, c0);
            c1 = TOps.FusedMultiplyAdd(TOps.Load(x2 + p + c), w1, c1);
            c2 = TOps.FusedMultiplyAdd(TOps.Load(x2 + p + 2 * c), w2, c2);
            c3 = TOps.FusedMultiplyAdd(TOps.Load(x2 + p + 3 * c), w3, c3);
            d0 = TOps.FusedMultiplyAdd(TOps.Load(x3 + p), w0, d0);
            d1 = TOps.FusedMultiplyAdd(TOps.Load(x3 + p + c), w1, d1);
            d2 = TOps.FusedMultiplyAdd(TOps.Load(x3 + p + 2 * c), w2, d2);
            d3 = TOps.FusedMultiplyAdd(TOps.Load(x3 + p + 3 * c), w3, d3);
        }
        for (; p + c <= k; p += c)
        {
            var w0 = TWiden.Load1(q + p);
            a0 = TOps.FusedMultiplyAdd(TOps.Load(x0 + p), w0, a0);
            b0 = TOps.FusedMultiplyAdd(TOps.Load(x1 + p), w0, b0);
            c0 = TOps.FusedMultiplyAdd(TOps.Load(x2 + p), w0, c0);
            d0 = TOps.FusedMultiplyAdd(TOps.Load(x3 + p), w0, d0);
        }
        float s0 = TOps.Sum(TOps.Add(TOps.Add(a0, a1), TOps.Add(a2, a3)));
        float s1 = TOps.Sum(TOps.Add(TOps.Add(b0, b1), TOps.Add(b2, b3)));
        float s2 = TOps.Sum(TOps.Add(TOps.Add(c0, c1), TOps.Add(c2, c3)));
        float s3 = TOps.Sum(TOps.Add(TOps.Add(d0, d1), TOps.Add(d2, d3)));
        for (; p < k; p++)
        {
            float wq = TWiden.Scalar(q[p]);
            s0 += x0[p] * wq; s1 += x1[p] * wq; s2 += x2[p] * wq; s3 += x3[p] * wq;
        }
        sums[0] = s0; sums[1] = s1; sums[2] = s2; sums[3] = s3;
    }
}

/// <summary>
/// Stored weight → float widening for one vector width and element type (exact for both: int8 and bfloat16 values
/// are all representable in float32).
/// </summary>
internal unsafe interface IWeightWiden<TVec, TElem> where TVec : struct where TElem : unmanaged
{
    /// <summary>One vector of floats from the next lanes-many elements.</summary>
    static abstract TVec Load1(TElem* q);

    /// <summary>Four consecutive vectors of floats from the next 4·lanes elements.</summary>
    static abstract void Load4(TElem* q, out TVec w0, out TVec w1, out TVec w2, out TVec w3);

    /// <summary>One element as a float (the scalar tails).</summary>
    static abstract float Scalar(TElem q);
}

/// <summary>
/// int8, 16 lanes: sign-extend bytes straight to int32 (vpmovsxbd, the int8 → int16 → int32 widening in one
/// instruction) and convert (exact: |q| ≤ 127).
/// </summary>
internal readonly unsafe struct Int8Widen512 : IWeightWiden<Vector512<float>, sbyte>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load1(sbyte* q) => Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(q)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load4(sbyte* q, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
    {
        w0 = Load1(q);
        w1 = Load1(q + 16);
        w2 = Load1(q + 32);
        w3 = Load1(q + 48);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Scalar(sbyte q) => q;
}

/// <summary>int8, 8 lanes: 8 bytes per vector (AVX2).</summary>
internal readonly unsafe struct Int8Widen256 : IWeightWiden<Vector256<float>, sbyte>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load1(sbyte* q) => Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load4(sbyte* q, out Vector256<float> w0, out Vector256<float> w1, out Vector256<float> w2, out Vector256<float> w3)
    {
        w0 = Load1(q);
        w1 = Load1(q + 8);
        w2 = Load1(q + 16);
        w3 = Load1(q + 24);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Scalar(sbyte q) => q;
}

/// <summary>bfloat16, 16 lanes: zero-extend the 16-bit patterns to 32 bits (vpmovzxwd) and shift them into the top half.</summary>
internal readonly unsafe struct Bf16Widen512 : IWeightWiden<Vector512<float>, ushort>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load1(ushort* q) =>
        Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load(q)), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load4(ushort* q, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
    {
        w0 = Load1(q);
        w1 = Load1(q + 16);
        w2 = Load1(q + 32);
        w3 = Load1(q + 48);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Scalar(ushort q) => BitConverter.UInt32BitsToSingle((uint)q << 16);
}

/// <summary>bfloat16, 8 lanes (AVX2).</summary>
internal readonly unsafe struct Bf16Widen256 : IWeightWiden<Vector256<float>, ushort>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load1(ushort* q) =>
        Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(q).AsUInt32(), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load4(ushort* q, out Vector256<float> w0, out Vector256<float> w1, out Vector256<float> w2, out Vector256<float> w3)
    {
        w0 = Load1(q);
        w1 = Load1(q + 8);
        w2 = Load1(q + 16);
        w3 = Load1(q + 24);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Scalar(ushort q) => BitConverter.UInt32BitsToSingle((uint)q << 16);
}
