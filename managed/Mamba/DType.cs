namespace Mamba;

/// <summary>Element types of stored weights and device activations.</summary>
public enum DType
{
    /// <summary>IEEE 754 binary32.</summary>
    F32,
    /// <summary>bfloat16 (the top 16 bits of a binary32).</summary>
    BF16,
    /// <summary>IEEE 754 binary16.</summary>
    F16,
}

/// <summary>Helpers for <see cref="DType"/>.</summary>
public static class DTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int SizeInBytes(this DType dtype) => dtype == DType.F32 ? 4 : 2;

    /// <summary>Parses "f32"/"float32", "bf16"/"bfloat16", "f16"/"float16"/"half" (case-insensitive).</summary>
    public static DType Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "f32" or "float32" or "float" or "fp32" => DType.F32,
        "bf16" or "bfloat16" => DType.BF16,
        "f16" or "float16" or "half" or "fp16" => DType.F16,
        _ => throw new ArgumentException($"unknown dtype '{text}' (expected f32, bf16 or f16)", nameof(text)),
    };

    /// <summary>The short name used on the command line: f32, bf16, f16.</summary>
    public static string ToShortName(this DType dtype) => dtype switch
    {
        DType.F32 => "f32",
        DType.BF16 => "bf16",
        _ => "f16",
    };
}
