using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace Mamba.Bench;

/// <summary>
/// In-process toolchain: the benchmarks run inside this executable, so they work where only the .NET
/// runtime exists (the GPU host). Few iterations: the end-to-end cases take seconds each on the CPU.
/// </summary>
public sealed class InProcessConfig : ManualConfig
{
    public InProcessConfig()
    {
        AddJob(Job.Default
            .WithToolchain(InProcessEmitToolchain.Instance)
            .WithLaunchCount(1)
            .WithWarmupCount(1)
            .WithIterationCount(5)
            .WithId("InProcess"));
    }
}
