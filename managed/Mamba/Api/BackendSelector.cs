using Mamba.Compute;
using Mamba.Compute.Cpu;
using Mamba.Compute.Cuda;
using Mamba.Native;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Mamba;

/// <summary>Turns a <see cref="BackendPreference"/> into a running backend, explaining every choice.</summary>
internal static class BackendSelector
{
    /// <summary>
    /// Creates the backend. <see cref="BackendPreference.Cuda"/> throws <see cref="MambaBackendUnavailableException"/>
    /// (with the probe log) when CUDA cannot run; <see cref="BackendPreference.Auto"/> falls back to the CPU and
    /// reports why in <paramref name="description"/> and the log.
    /// </summary>
    public static IMambaBackend Create(MambaModelOptions options, out BackendDescription description, out DType activation)
    {
        ArgumentNullException.ThrowIfNull(options);
        var log = (options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Mamba.Backend");
        activation = options.DType;
        switch (options.Backend)
        {
            case BackendPreference.Cpu:
                RequireCpuDType(options.DType);
                return Cpu(options, log, null, out description, out activation);
            case BackendPreference.Cuda:
            {
                var cuda = CudaBackend.Create(options.DeviceId, options.DType, new CudaBackendOptions { LibraryPath = options.NativeLibraryPath });
                description = new BackendDescription(BackendKind.Cuda, cuda.Description, MambaNative.LoadedPath, null);
                log.LogInformation("Backend: CUDA ({Device}), activations {DType}", cuda.Description, options.DType.ToShortName());
                IgnoredOnCuda(options, log);
                return cuda;
            }
            default:
                try
                {
                    var cuda = CudaBackend.Create(options.DeviceId, options.DType, new CudaBackendOptions { LibraryPath = options.NativeLibraryPath });
                    description = new BackendDescription(BackendKind.Cuda, cuda.Description, MambaNative.LoadedPath, null);
                    log.LogInformation("Backend auto: CUDA ({Device}), activations {DType}", cuda.Description, options.DType.ToShortName());
                    IgnoredOnCuda(options, log);
                    return cuda;
                }
                catch (MambaBackendUnavailableException e)
                {
                    log.LogInformation("Backend auto: CPU, because CUDA is unavailable: {Reason}", e.Reason);
                    return Cpu(options, log, e.Reason, out description, out activation);
                }
        }
    }

    private static IMambaBackend Cpu(MambaModelOptions options, ILogger log, string? reason, out BackendDescription description, out DType activation)
    {
        var cpu = new CpuBackend(options.CpuThreads, options.CpuWeights);
        activation = DType.F32;
        description = new BackendDescription(BackendKind.Cpu, cpu.Description, null, reason);
        if (reason is null) log.LogInformation("Backend: {Device}", cpu.Description);
        if (options.DType != DType.F32)
            log.LogInformation("The CPU computes in f32; the requested {DType} applies to GPUs only", options.DType.ToShortName());
        return cpu;
    }

    private static void IgnoredOnCuda(MambaModelOptions options, ILogger log)
    {
        if (options.CpuWeights != CpuWeightFormat.F32)
            log.LogInformation("CpuWeights {Format} applies to the CPU only; the CUDA weights are {DType}", options.CpuWeights.ToShortName(), options.DType.ToShortName());
    }

    private static void RequireCpuDType(DType dtype)
    {
        if (dtype != DType.F32)
            throw new ArgumentException($"the CPU backend computes in f32; {dtype.ToShortName()} needs the CUDA backend", nameof(dtype));
    }
}
