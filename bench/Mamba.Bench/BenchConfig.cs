using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Perfolizer.Horology;

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

/// <summary>
/// The CUDA benchmarks' job: in-process (one CUDA context for the whole run, see <see cref="GpuBench"/>), 2 warm-up
/// and 5 measured iterations of about 150 ms, no unrolling (every invocation ends in a Synchronize, which dwarfs
/// the loop overhead unrolling hides) and no overhead evaluation, so a case takes about 2 s and the whole set
/// (28 cases) stays under 2 minutes of GPU time. A <see cref="RateColumn"/> turns each mean into GB/s, TFLOP/s or
/// tokens/s.
/// </summary>
public class GpuConfig : ManualConfig
{
    /// <summary>The job and a rate column fed by <paramref name="work"/> (the work of one operation of a case, or null).</summary>
    public GpuConfig(Func<BenchmarkCase, Work?> work)
    {
        AddJob(Job.Default
            .WithToolchain(InProcessEmitToolchain.Instance)
            .WithLaunchCount(1)
            .WithWarmupCount(2)
            .WithIterationCount(5)
            .WithIterationTime(TimeInterval.FromMilliseconds(150))
            .WithUnrollFactor(1)
            .WithEvaluateOverhead(false)
            .WithId("GpuShort"));
        AddColumn(new RateColumn(work));
    }
}

/// <summary>
/// What one operation of a benchmark does, for <see cref="RateColumn"/>: <paramref name="Amount"/> units of work
/// (bytes, floating-point operations, tokens), shown per second divided by <paramref name="Scale"/> with
/// <paramref name="Unit"/> (e.g. bytes, 1e9, "GB/s").
/// </summary>
public readonly record struct Work(double Amount, double Scale, string Unit)
{
    /// <summary>Bytes moved, shown as GB/s.</summary>
    public static Work Bytes(double bytes) => new(bytes, 1e9, "GB/s");

    /// <summary>Floating-point operations, shown as TFLOP/s.</summary>
    public static Work Flop(double flop) => new(flop, 1e12, "TFLOP/s");

    /// <summary>Tokens, shown as tokens/s.</summary>
    public static Work Tokens(double tokens) => new(tokens, 1, "tok/s");
}

/// <summary>The mean time of a case as a rate (see <see cref="Work"/>); "-" where the benchmark names no work.</summary>
public sealed class RateColumn(Func<BenchmarkCase, Work?> work) : IColumn
{
    public string Id => "Rate";
    public string ColumnName => "Rate";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => false;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Work of one operation per second of the mean: minimum bytes moved (GB/s), FLOP (TFLOP/s) or tokens (tok/s)";
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        if (summary[benchmarkCase]?.ResultStatistics is not { } stats || work(benchmarkCase) is not { } w) return "-";
        double rate = w.Amount / (stats.Mean * 1e-9) / w.Scale;
        return rate.ToString(rate >= 100 ? "N0" : "N1", System.Globalization.CultureInfo.InvariantCulture) + " " + w.Unit;
    }
}
