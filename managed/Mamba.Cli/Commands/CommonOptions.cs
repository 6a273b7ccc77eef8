using System.CommandLine;
using Mamba.Compute;
using Mamba.Compute.Cpu;

namespace Mamba.Cli.Commands;

/// <summary>Options shared by several commands, and the backend they select.</summary>
internal static class CommonOptions
{
    public static Option<string> Device() => new("--device")
    {
        Description = "Where to run: auto, cpu or cuda",
        DefaultValueFactory = _ => "cpu",
    };

    public static Option<string> DType() => new("--dtype")
    {
        Description = "Activation and weight dtype on the device: f32, bf16 or f16 (the CPU computes in f32)",
        DefaultValueFactory = _ => "f32",
    };

    public static Option<int> Threads() => new("--threads")
    {
        Description = "CPU worker threads (0 = all cores)",
        DefaultValueFactory = _ => 0,
    };

    /// <summary>Creates the selected backend; throws with the reason when it cannot run.</summary>
    public static IMambaBackend CreateBackend(string device, string dtypeText, int threads, out Mamba.DType activation)
    {
        activation = DTypeExtensions.Parse(dtypeText);
        switch (device.ToLowerInvariant())
        {
            case "cpu":
                if (activation != Mamba.DType.F32)
                    throw new ArgumentException($"--dtype {dtypeText}: the CPU backend computes in f32 (bf16/f16 weights are upcast on load)");
                return new CpuBackend(threads);
            case "auto":
                activation = Mamba.DType.F32;
                return new CpuBackend(threads);
            case "cuda":
                throw new NotSupportedException("--device cuda: the CUDA backend is not built into this version");
            default:
                throw new ArgumentException($"--device {device}: expected auto, cpu or cuda");
        }
    }
}
