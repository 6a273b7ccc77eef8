using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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
    public static Vector256<float> Silu(Vector256<float> v) => v / (Vector256<float>.One + Vector256.Exp(-v));

    /// <summary>
    /// Vector softplus. log1p(e) is computed as log(u)·e/(u−1) with u = 1+e (exact when u rounds to 1,
    /// where it returns e), so tiny e keep their relative precision.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Softplus(Vector256<float> v)
    {
        var e = Vector256.Exp(v);
        var u = Vector256<float>.One + e;
        var denom = u - Vector256<float>.One;
        var log1p = Vector256.ConditionalSelect(Vector256.Equals(denom, Vector256<float>.Zero), e, Vector256.Log(u) * (e / denom));
        return Vector256.ConditionalSelect(Vector256.GreaterThan(v, Vector256.Create(SoftplusThreshold)), v, log1p);
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
