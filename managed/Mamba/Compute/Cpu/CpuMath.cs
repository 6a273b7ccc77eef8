using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Mamba.Compute.Cpu;

/// <summary>Element-wise functions shared by the CPU ops, scalar and Vector256 forms with the same formulas.</summary>
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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Silu(Vector256<float> v) => v / (Vector256<float>.One + Exp(-v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Silu(Vector512<float> v) => v / (Vector512<float>.One + Exp(-v));

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
    public static Vector256<float> Exp(Vector256<float> x)
    {
        x = Vector256.Min(Vector256.Max(x, Vector256.Create(ExpLow)), Vector256.Create(ExpHigh));
        var k = Vector256.Round(x * Vector256.Create(Log2E));
        var r = Vector256.FusedMultiplyAdd(k, Vector256.Create(-Ln2Hi), x);
        r = Vector256.FusedMultiplyAdd(k, Vector256.Create(-Ln2Lo), r);
        var p = Vector256.FusedMultiplyAdd(Vector256.Create(P0), r, Vector256.Create(P1));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P2));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P3));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P4));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P5));
        p = Vector256.FusedMultiplyAdd(p, r * r, r + Vector256<float>.One);
        // k is integral and in [−126, 127]: the native conversion (one instruction; ConvertToInt32's saturating form
        // is four) gives the same integers.
        var scale = Vector256.ShiftLeft(Vector256.ConvertToInt32Native(k) + Vector256.Create(127), 23).AsSingle();
        return p * scale;
    }

    /// <summary>The 16-lane form of <see cref="Exp(Vector256{float})"/> (same formulas).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        x = Vector512.Min(Vector512.Max(x, Vector512.Create(ExpLow)), Vector512.Create(ExpHigh));
        var k = Vector512.Round(x * Vector512.Create(Log2E));
        var r = Vector512.FusedMultiplyAdd(k, Vector512.Create(-Ln2Hi), x);
        r = Vector512.FusedMultiplyAdd(k, Vector512.Create(-Ln2Lo), r);
        var p = Vector512.FusedMultiplyAdd(Vector512.Create(P0), r, Vector512.Create(P1));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(P2));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(P3));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(P4));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(P5));
        p = Vector512.FusedMultiplyAdd(p, r * r, r + Vector512<float>.One);
        // p·2^k in one instruction (vscalefps; exact like the multiply by a built power of two, k being integral).
        if (Avx512F.IsSupported) return Avx512F.Scale(p, k);
        var scale = Vector512.ShiftLeft(Vector512.ConvertToInt32Native(k) + Vector512.Create(127), 23).AsSingle();
        return p * scale;
    }

    /// <summary>
    /// Vector natural log for finite x ≥ 1 (all softplus needs: u = 1 + e^v), Cephes' logf polynomial, ≈ 1 ulp:
    /// x = m·2^e with m in [√½, √2), log x = e·ln 2 + log m.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> LogAtLeastOne(Vector256<float> x)
    {
        var bits = x.AsInt32();
        var e = Vector256.ShiftRightArithmetic(bits, 23) - Vector256.Create(127);
        var m = ((bits & Vector256.Create(0x007FFFFF)) | Vector256.Create(0x3F800000)).AsSingle(); // [1, 2)
        var big = Vector256.GreaterThan(m, Vector256.Create(1.41421356f));
        m = Vector256.ConditionalSelect(big, m * Vector256.Create(0.5f), m);
        var ef = Vector256.ConvertToSingle(e) + (Vector256<float>.One & big);
        var f = m - Vector256<float>.One;
        var z = f * f;
        var y = Vector256.FusedMultiplyAdd(Vector256.Create(7.0376836292E-2f), f, Vector256.Create(-1.1514610310E-1f));
        y = Vector256.FusedMultiplyAdd(y, f, Vector256.Create(1.1676998740E-1f));
        y = Vector256.FusedMultiplyAdd(y, f, Vector256.Create(-1.2420140846E-1f));
        y = Vector256.FusedMultiplyAdd(y, f, Vector256.Create(1.4249322787E-1f));
        y = Vector256.FusedMultiplyAdd(y, f, Vector256.Create(-1.6668057665E-1f));
        y = Vector256.FusedMultiplyAdd(y, f, Vector256.Create(2.0000714765E-1f));
        y = Vector256.FusedMultiplyAdd(y, f, Vector256.Create(-2.4999993993E-1f));
        y = Vector256.FusedMultiplyAdd(y, f, Vector256.Create(3.3333331174E-1f));
        y = y * f * z;
        y = Vector256.FusedMultiplyAdd(ef, Vector256.Create(Ln2Lo), y);
        y = Vector256.FusedMultiplyAdd(z, Vector256.Create(-0.5f), y);
        return Vector256.FusedMultiplyAdd(ef, Vector256.Create(Ln2Hi), f + y);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> LogAtLeastOne(Vector512<float> x)
    {
        var bits = x.AsInt32();
        var e = Vector512.ShiftRightArithmetic(bits, 23) - Vector512.Create(127);
        var m = ((bits & Vector512.Create(0x007FFFFF)) | Vector512.Create(0x3F800000)).AsSingle(); // [1, 2)
        var big = Vector512.GreaterThan(m, Vector512.Create(1.41421356f));
        m = Vector512.ConditionalSelect(big, m * Vector512.Create(0.5f), m);
        var ef = Vector512.ConvertToSingle(e) + (Vector512<float>.One & big);
        var f = m - Vector512<float>.One;
        var z = f * f;
        var y = Vector512.FusedMultiplyAdd(Vector512.Create(7.0376836292E-2f), f, Vector512.Create(-1.1514610310E-1f));
        y = Vector512.FusedMultiplyAdd(y, f, Vector512.Create(1.1676998740E-1f));
        y = Vector512.FusedMultiplyAdd(y, f, Vector512.Create(-1.2420140846E-1f));
        y = Vector512.FusedMultiplyAdd(y, f, Vector512.Create(1.4249322787E-1f));
        y = Vector512.FusedMultiplyAdd(y, f, Vector512.Create(-1.6668057665E-1f));
        y = Vector512.FusedMultiplyAdd(y, f, Vector512.Create(2.0000714765E-1f));
        y = Vector512.FusedMultiplyAdd(y, f, Vector512.Create(-2.4999993993E-1f));
        y = Vector512.FusedMultiplyAdd(y, f, Vector512.Create(3.3333331174E-1f));
        y = y * f * z;
        y = Vector512.FusedMultiplyAdd(ef, Vector512.Create(Ln2Lo), y);
        y = Vector512.FusedMultiplyAdd(z, Vector512.Create(-0.5f), y);
        return Vector512.FusedMultiplyAdd(ef, Vector512.Create(Ln2Hi), f + y);
    }

    /// <summary>
    /// Vector softplus. log1p(e) is computed as log(u)·e/(u−1) with u = 1+e (exact when u rounds to 1,
    /// where it returns e), so tiny e keep their relative precision.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Softplus(Vector256<float> v)
    {
        var e = Exp(v);
        var u = Vector256<float>.One + e;
        var denom = u - Vector256<float>.One;
        var log1p = Vector256.ConditionalSelect(Vector256.Equals(denom, Vector256<float>.Zero), e, LogAtLeastOne(u) * (e / denom));
        return Vector256.ConditionalSelect(Vector256.GreaterThan(v, Vector256.Create(SoftplusThreshold)), v, log1p);
    }

    /// <summary>The 16-lane form of <see cref="Softplus(Vector256{float})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Softplus(Vector512<float> v)
    {
        var e = Exp(v);
        var u = Vector512<float>.One + e;
        var denom = u - Vector512<float>.One;
        var log1p = Vector512.ConditionalSelect(Vector512.Equals(denom, Vector512<float>.Zero), e, LogAtLeastOne(u) * (e / denom));
        return Vector512.ConditionalSelect(Vector512.GreaterThan(v, Vector512.Create(SoftplusThreshold)), v, log1p);
    }

    /// <summary>In place silu(v), 8 lanes at a time where vectors are accelerated (a value's path depends only on its index).</summary>
    public static void SiluInPlace(Span<float> values)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i <= values.Length - 8; i += 8)
                Silu(Vector256.Create(values.Slice(i, 8))).CopyTo(values.Slice(i, 8));
        for (; i < values.Length; i++) values[i] = Silu(values[i]);
    }

    /// <summary>In-place softplus(x + bias[col]) over rows of width bias.Length.</summary>
    public static void AddBiasSoftplusRows(Span<float> rows, ReadOnlySpan<float> bias)
    {
        int width = bias.Length;
        for (int start = 0; start < rows.Length; start += width)
        {
            var row = rows.Slice(start, width);
            int i = 0;
            if (Vector256.IsHardwareAccelerated)
                for (; i <= width - 8; i += 8)
                    Softplus(Vector256.Create(row.Slice(i, 8)) + Vector256.Create(bias.Slice(i, 8))).CopyTo(row.Slice(i, 8));
            for (; i < width; i++)
                row[i] = Softplus(row[i] + bias[i]);
        }
    }
}
