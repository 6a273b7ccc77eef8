namespace Mamba.Compute.Cpu;

/// <summary>
/// A weight W[N, K] (row-major, N output rows) stored as int8 with one float scale per output row:
/// W[i, p] ≈ Scales[i] · Q[i, p]. Symmetric per-row quantization: Scales[i] = max_p |W[i, p]| / 127 and
/// Q[i, p] = round-to-nearest-even(W[i, p] / Scales[i]) clamped to [−127, 127] (−128 is never used, so the range is
/// symmetric and negation is exact). A row whose largest magnitude is 0 (or so small that the scale underflows to 0)
/// keeps scale 0 and all-zero Q. Each element's error is at most Scales[i] / 2. The weights a decode GEMV streams
/// shrink four-fold against float32; <see cref="CpuInt8Linear.Linear"/> multiplies by them.
/// </summary>
internal sealed class Int8RowQuantized
{
    private Int8RowQuantized(sbyte[] q, float[] scales, int n, int k)
    {
        Q = q;
        Scales = scales;
        N = n;
        K = k;
    }

    /// <summary>The quantized weight [N, K], row-major.</summary>
    public sbyte[] Q { get; }

    /// <summary>One scale per output row [N].</summary>
    public float[] Scales { get; }

    /// <summary>Output rows.</summary>
    public int N { get; }

    /// <summary>Inputs per row (the reduction length).</summary>
    public int K { get; }

    /// <summary>Quantizes <paramref name="w"/> [<paramref name="n"/>, <paramref name="k"/>] row by row.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="w"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> or <paramref name="k"/> is negative.</exception>
    /// <exception cref="ArgumentException">The length of <paramref name="w"/> is not n·k, or a row holds NaN or ±∞.</exception>
    public static Int8RowQuantized Quantize(float[] w, int n, int k)
    {
        ArgumentNullException.ThrowIfNull(w);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (w.LongLength != (long)n * k)
            throw new ArgumentException($"The weight has {w.LongLength} elements; [n = {n}, k = {k}] needs {(long)n * k}.", nameof(w));
        var q = new sbyte[w.Length];
        var scales = new float[n];
        for (int i = 0; i < n; i++)
        {
            var row = w.AsSpan(i * k, k);
            float max = 0f;
            for (int p = 0; p < k; p++)
            {
                float v = row[p];
                if (!float.IsFinite(v))
                    throw new ArgumentException($"Weight row {i} holds a non-finite value ({v}) at column {p}; it cannot be quantized.", nameof(w));
                max = Math.Max(max, Math.Abs(v));
            }
            float s = max / 127f;
            if (s == 0f) continue; // zero row (or a scale that underflows): Q stays 0, scale 0
            scales[i] = s;
            var qr = q.AsSpan(i * k, k);
            for (int p = 0; p < k; p++)
                qr[p] = (sbyte)Math.Clamp(MathF.Round(row[p] / s, MidpointRounding.ToEven), -127f, 127f);
        }
        return new Int8RowQuantized(q, scales, n, k);
    }

    /// <summary>The float32 weight these values stand for, Scales[i] · Q[i, p] (for tests and diagnostics).</summary>
    public float[] Dequantize()
    {
        var w = new float[Q.Length];
        for (int i = 0; i < N; i++)
        {
            float s = Scales[i];
            for (int p = 0; p < K; p++) w[i * K + p] = s * Q[i * K + p];
        }
        return w;
    }
}
