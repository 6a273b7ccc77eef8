namespace Mamba;

/// <summary>
/// How the CPU backend stores the weights of the model's linear layers and the embedding (in_proj, x_proj, out_proj,
/// lm_head and the (tied) embedding table). Activations, the residual stream, the scan, dt_proj and every vector
/// parameter stay float32 whatever is chosen; weights are converted once when the model is loaded.
/// </summary>
public enum CpuWeightFormat
{
    /// <summary>float32: the reference path (default).</summary>
    F32,

    /// <summary>
    /// bfloat16 (round to nearest even), widened exactly to float32 inside the matrix products: half the bytes a decode
    /// step streams. Relative error of each weight ≤ 2⁻⁹.
    /// </summary>
    BF16,

    /// <summary>
    /// Weight-only int8 with one float32 scale per output row (symmetric: scale = max|row| / 127, values rounded to
    /// nearest even in [−127, 127]); activations stay float32. A quarter of the bytes; each weight's error is at most
    /// half its row's step (max|row| / 254).
    /// </summary>
    Int8,
}

/// <summary>Helpers for <see cref="CpuWeightFormat"/>.</summary>
public static class CpuWeightFormatExtensions
{
    /// <summary>The name the command-line tool uses: f32, bf16 or int8.</summary>
    public static string ToShortName(this CpuWeightFormat format) => format switch
    {
        CpuWeightFormat.F32 => "f32",
        CpuWeightFormat.BF16 => "bf16",
        CpuWeightFormat.Int8 => "int8",
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
    };
}
