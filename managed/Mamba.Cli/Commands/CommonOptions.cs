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
        Description = "Activation and weight dtype on the device: f32, bf16 or f16 (the CPU computes in f32)",
        DefaultValueFactory = _ => "f32",
    };

    public static Option<int> Threads() => new("--threads")
    {
        Description = "CPU worker threads (0 = all cores)",
        DefaultValueFactory = _ => 0,
    };

    /// <summary>Creates the selected backend; throws with the reason when it cannot run (auto falls back to the CPU and says why).</summary>
    public static IMambaBackend CreateBackend(string device, string dtypeText, int threads, out Mamba.DType activation)
    {
        var backend = BackendSelector.Create(new MambaModelOptions
        {
            Backend = ModelOptions.ParseDevice(device),
            DType = DTypeExtensions.Parse(dtypeText),
            CpuThreads = threads,
        }, out var description, out activation);
        if (description.FallbackReason is not null)
            Console.Error.WriteLine($"note: running on the CPU because CUDA is unavailable: {description.FallbackReason}");
        return backend;
    }
}
