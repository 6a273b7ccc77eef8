using System.CommandLine;
using Mamba.Compute;

namespace Mamba.Cli.Commands;

/// <summary>Options shared by several commands, and the backend they select.</summary>
internal static class CommonOptions
{
    public static Option<string> Device(string defaultDevice = "cpu") => new("--device")
    {
        Description = "Where to run: auto, cpu or cuda",
        DefaultValueFactory = _ => defaultDevice,
    };

    public static Option<string> DType() => new("--dtype")
    {
        Description = "Weight (and GPU activation) dtype: f32, bf16, f16 (CUDA only) or int8 (CPU only: int8 weights with per-row scales). " +
            "The CPU computes in f32; with bf16 or int8 it stores the linear and embedding weights narrow and widens them on the fly",
        DefaultValueFactory = _ => "f32",
    };

    /// <summary>
    /// The model options for --device and --dtype: f32/bf16/f16 are the GPU dtype; on the CPU bf16 and int8 pick
    /// <see cref="CpuWeightFormat"/> (f16 stays CUDA-only). int8 exists only on the CPU: --device auto then means the CPU,
    /// and --device cuda is refused.
    /// </summary>
    public static MambaModelOptions ModelOptionsFor(string device, string dtypeText, int threads)
    {
        var backend = ModelOptions.ParseDevice(device);
        if (dtypeText.Trim().Equals("int8", StringComparison.OrdinalIgnoreCase))
        {
            if (backend == BackendPreference.Cuda)
                throw new ArgumentException("--dtype int8 is a CPU weight format (int8 weights, f32 activations); use --device cpu, or f32/bf16/f16 on CUDA");
            return new MambaModelOptions { Backend = BackendPreference.Cpu, DType = Mamba.DType.F32, CpuWeights = CpuWeightFormat.Int8, CpuThreads = threads };
        }
        var dtype = DTypeExtensions.Parse(dtypeText);
        return new MambaModelOptions
        {
            Backend = backend,
            // An explicit CPU computes in f32 whatever the weights; auto keeps the GPU dtype for CUDA.
            DType = backend == BackendPreference.Cpu && dtype == Mamba.DType.BF16 ? Mamba.DType.F32 : dtype,
            CpuWeights = dtype == Mamba.DType.BF16 ? CpuWeightFormat.BF16 : CpuWeightFormat.F32,
            CpuThreads = threads,
        };
    }

    public static Option<int> Threads() => new("--threads")
    {
        Description = "CPU worker threads (0 = all cores)",
        DefaultValueFactory = _ => 0,
    };

    /// <summary>Creates the selected backend; throws with the reason when it cannot run (auto falls back to the CPU and says why).</summary>
    public static IMambaBackend CreateBackend(string device, string dtypeText, int threads, out Mamba.DType activation)
    {
        var backend = BackendSelector.Create(ModelOptionsFor(device, dtypeText, threads), out var description, out activation);
        if (description.FallbackReason is not null)
            Console.Error.WriteLine($"note: running on the CPU because CUDA is unavailable: {description.FallbackReason}");
        return backend;
    }
}
