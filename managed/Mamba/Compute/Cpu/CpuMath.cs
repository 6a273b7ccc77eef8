using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Mamba.Compute.Cpu;

/// <summary>
/// Element-wise functions shared by the CPU ops: a scalar form and one vector form, generic over the width
/// (<see cref="IVectorOps{TVec}"/>), with the same formulas.
/// </summary>
internal static class CpuMath
{
    /// <summary>PyTorch's softplus threshold (β = 1): above it softplus(v) = v.</summary>
    public const float SoftplusThreshold = 20f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sigmoid(float v) => 1f / (1f + MathF.Exp(-v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Silu(float v) => v / (1f + MathF.Exp(-v));

    /// <summary>ln(1 + e^v) for v ≤ 20, v above; log1p keeps precision for very negative v.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Softplus(float v) => v > SoftplusThreshold ? v : (float)Math.Log(1.0 + Math.Exp(v));

    /// <summary>Vector silu(v) = v / (1 + e^−v).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec Silu<TVec, TOps>(TVec v) where TVec : struct where TOps : IVectorOps<TVec> =>
        TOps.Divide(v, TOps.Add(TOps.One, Exp<TVec, TOps>(TOps.Negate(v))));

    // e^x = 2^k · e^r with k = round(x·log2 e), r = x − k·ln 2 (ln 2 split in two for an exact first product), e^r by
    // Cephes' expf polynomial: ≈ 1 ulp over the clamped range. The runtime's Vector256/512.Exp are several times slower
    // (measured 3–10× on the development machine), and the scan takes one exp per state element and step.
    private const float ExpLow = -87.3f, ExpHigh = 88.3f; // 2^k stays a normal float for k = round(x·log2 e) in [−126, 127]
    private const float Log2E = 1.44269504088896341f, Ln2Hi = 0.693359375f, Ln2Lo = -2.12194440e-4f;
    private const float P0 = 1.9875691500E-4f, P1 = 1.3981999507E-3f, P2 = 8.3334519073E-3f, P3 = 4.1665795894E-2f,
        P4 = 1.6666665459E-1f, P5 = 5.0000001201E-1f;

    /// <summary>
    /// Vector e^x, ≈ 1 ulp; inputs are clamped to [−87.3, 88.3] (below, a value near 1e−38 stands for 0 or a
    /// subnormal; above, ≈ 2.2e38 for a larger value or ∞).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec Exp<TVec, TOps>(TVec x) where TVec : struct where TOps : IVectorOps<TVec>
    {
        x = TOps.Clamp(x, ExpLow, ExpHigh);
        var k = TOps.Round(TOps.Multiply(x, TOps.Create(Log2E)));
        var r = TOps.FusedMultiplyAdd(k, TOps.Create(-Ln2Hi), x);
        r = TOps.FusedMultiplyAdd(k, TOps.Create(-Ln2Lo), r);
        var p = TOps.FusedMultiplyAdd(TOps.Create(P0), r, TOps.Create(P1));
        p = TOps.FusedMultiplyAdd(p, r, TOps.Create(P2));
        p = TOps.FusedMultiplyAdd(p, r, TOps.Create(P3));
        p = TOps.FusedMultiplyAdd(p, r, TOps.Create(P4));
        p = TOps.FusedMultiplyAdd(p, r, TOps.Create(P5));
        p = TOps.FusedMultiplyAdd(p, TOps.Multiply(r, r), TOps.Add(r, TOps.One));
        return TOps.ScaleByPowerOfTwo(p, k);
    }

    /// <summary>
    /// Vector natural log for finite x ≥ 1 (all softplus needs: u = 1 + e^v), Cephes' logf polynomial, ≈ 1 ulp:
    /// x = m·2^e with m in [√½, √2), log x = e·ln 2 + log m.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TVec LogAtLeastOne<TVec, TOps>(TVec x) where TVec : struct where TOps : IVectorOps<TVec>
    {
        var m = TOps.SplitExponent(x, out var e); // m in [1, 2)
        var big = TOps.GreaterThanMask(m, TOps.Create(1.41421356f));
        m = TOps.ConditionalSelect(big, TOps.Multiply(m, TOps.Create(0.5f)), m);
        var ef = TOps.Add(e, TOps.BitwiseAnd(TOps.One, big));
        var f = TOps.Subtract(m, TOps.One);
        var z = TOps.Multiply(f, f);
        var y = TOps.FusedMultiplyAdd(TOps.Create(7.0376836292E-2f), f, TOps.Create(-1.1514610310E-1f));
        y = TOps.FusedMultiplyAdd(y, f, TOps.Create(1.1676998740E-1f));
        y = TOps.FusedMultiplyAdd(y, f, TOps.Create(-1.2420140846E-1f));
        y = TOps.FusedMultiplyAdd(y, f, TOps.Create(1.4249322787E-1f));
        y = TOps.FusedMultiplyAdd(y, f, TOps.Create(-1.6668057665E-1f));
        y = TOps.FusedMultiplyAdd(y, f, TOps.Create(2.0000714765E-1f));
        y = TOps.FusedMultiplyAdd(y, f, TOps.Create(-2.4999993993E-1f));
        y = TOps.FusedMultiplyAdd(y, f, TOps.Create(3.3333331174E-1f));
        y = TOps.Multiply(TOps.Multiply(y, f), z);
        y = TOps.FusedMultiplyAdd(ef, TOps.Create(Ln2Lo), y);
        y = TOps.FusedMultiplyAdd(z, TOps.Create(-0.5f), y);
        return TOps.FusedMultiplyAdd(ef, TOps.Create(Ln2Hi), TOps.Add(f, y));
    }

    /// <summary>
    /// Vector softplus. log1p(e) is computed as log(u)·e/(u−1) with u = 1+e (exact when u rounds to 1,
    /// where it returns e), so tiny e keep their relative precision.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec Softplus<TVec, TOps>(TVec v) where TVec : struct where TOps : IVectorOps<TVec>
    {
        var e = Exp<TVec, TOps>(v);
        var u = TOps.Add(TOps.One, e);
        var denom = TOps.Subtract(u, TOps.One);
        var log1p = TOps.ConditionalSelect(TOps.EqualsMask(denom, TOps.Zero), e,
            TOps.Multiply(LogAtLeastOne<TVec, TOps>(u), TOps.Divide(e, denom)));
        return TOps.ConditionalSelect(TOps.GreaterThanMask(v, TOps.Create(SoftplusThreshold)), v, log1p);
    }

    /// <summary>In place silu(v), 8 lanes at a time where vectors are accelerated (a value's path depends only on its index).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // see IVectorOps: vector code from the first call
    public static void SiluInPlace(Span<float> values)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i <= values.Length - 8; i += 8)
                Silu<Vector256<float>, Vector256Ops>(Vector256.Create(values.Slice(i, 8))).CopyTo(values.Slice(i, 8));
        for (; i < values.Length; i++) values[i] = Silu(values[i]);
    }

    /// <summary>In-place softplus(x + bias[col]) over rows of width bias.Length, 8 lanes at a time where vectors are accelerated.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // see IVectorOps: vector code from the first call
    public static void AddBiasSoftplusRows(Span<float> rows, ReadOnlySpan<float> bias)
    {
        int width = bias.Length;
        for (int start = 0; start < rows.Length; start += width)
        {
            var row = rows.Slice(start, width);
            int i = 0;
            if (Vector256.IsHardwareAccelerated)
                for (; i <= width - 8; i += 8)
                    Softplus<Vector256<float>, Vector256Ops>(Vector256.Create(row.Slice(i, 8)) + Vector256.Create(bias.Slice(i, 8))).CopyTo(row.Slice(i, 8));
            for (; i < width; i++)
                row[i] = Softplus(row[i] + bias[i]);
        }
    }
}
