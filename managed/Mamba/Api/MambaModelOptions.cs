using Mamba.Compute;
using Microsoft.Extensions.Logging;

namespace Mamba;

/// <summary>Which backend <see cref="MambaModel.Load"/> should use.</summary>
public enum BackendPreference
{
    /// <summary>CUDA when a GPU, its driver and the native library are usable, else the CPU; the choice and its reason are logged.</summary>
    Auto,
    /// <summary>The pure C# CPU backend.</summary>
    Cpu,
    /// <summary>The CUDA backend; loading throws <see cref="Native.MambaBackendUnavailableException"/> with the reason when it cannot run (never a silent CPU fallback).</summary>
    Cuda,
}

/// <summary>How to load a model.</summary>
public sealed record MambaModelOptions
{
    /// <summary>Backend choice (default <see cref="BackendPreference.Auto"/>).</summary>
    public BackendPreference Backend { get; init; } = BackendPreference.Auto;

    /// <summary>Weight and activation dtype on a GPU (the CPU always computes in float32). Default float32.</summary>
    public DType DType { get; init; } = DType.F32;

    /// <summary>
    /// How the CPU backend stores the weights of the linear layers and the embedding: float32 (default), bfloat16 or
    /// weight-only int8 with per-row scales (activations stay float32; see <see cref="CpuWeightFormat"/> for the accuracy
    /// cost). Applies whenever the model runs on the CPU (an explicit <see cref="BackendPreference.Cpu"/>, or
    /// <see cref="BackendPreference.Auto"/> falling back); the CUDA backend ignores it (its weights are <see cref="DType"/>).
    /// </summary>
    public CpuWeightFormat CpuWeights { get; init; } = CpuWeightFormat.F32;

    /// <summary>CUDA device ordinal.</summary>
    public int DeviceId { get; init; }

    /// <summary>CPU worker threads; 0 uses every core.</summary>
    public int CpuThreads { get; init; }

    /// <summary>Explicit path of the native library (else <c>MAMBA_NATIVE_LIBRARY</c>, then <c>runtimes/&lt;rid&gt;/native/</c>, then default probing).</summary>
    public string? NativeLibraryPath { get; init; }

    /// <summary>Where the library logs backend choice and load steps; null logs nothing.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>
    /// Checks the values (loading calls it first): <see cref="Backend"/> and <see cref="DType"/> must be named values of
    /// their enums, <see cref="DeviceId"/> and <see cref="CpuThreads"/> must not be negative.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A value is out of range; the parameter name says which.</exception>
    public void Validate()
    {
        if (!Enum.IsDefined(Backend))
            throw new ArgumentOutOfRangeException(nameof(Backend), Backend, $"not a {nameof(BackendPreference)} value (Auto, Cpu or Cuda)");
        if (!Enum.IsDefined(DType))
            throw new ArgumentOutOfRangeException(nameof(DType), DType, $"not a {nameof(Mamba.DType)} value (F32, BF16 or F16)");
        ArgumentOutOfRangeException.ThrowIfNegative(DeviceId);
        ArgumentOutOfRangeException.ThrowIfNegative(CpuThreads);
    }
}

/// <summary>Progress of <see cref="MambaModel.LoadAsync"/>: a stage name and the fraction done (0..1).</summary>
public sealed record ModelLoadProgress(string Stage, double Fraction);

/// <summary>What runs a model: the backend kind, the device, the native library and why Auto chose the CPU.</summary>
public sealed record BackendDescription(BackendKind Kind, string Device, string? LibraryPath, string? FallbackReason)
{
    /// <inheritdoc />
    public override string ToString() =>
        $"{Kind} ({Device}){(LibraryPath is null ? "" : $", library {LibraryPath}")}{(FallbackReason is null ? "" : $"; CUDA not used: {FallbackReason}")}";
}
