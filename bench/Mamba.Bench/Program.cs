using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.ConsoleArguments;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Running;
using Mamba.Bench;

// The CUDA benchmarks need libmamba and a GPU. When the arguments select any of them, the shared backend is opened
// here first; if that fails they are left out with the reason (exit 0 when nothing else was selected), so a
// CPU-only machine runs the rest. Listing (--list) needs no GPU and shows them all.
Type[] cudaTypes = [typeof(CudaOpBenchmarks), typeof(CudaModelBenchmarks)];
var types = typeof(Program).Assembly.GetTypes()
    .Where(t => t is { IsPublic: true, IsAbstract: false } && t.GetMethods().Any(m => m.IsDefined(typeof(BenchmarkAttribute), false)))
    .ToArray();
bool listing = args.Any(a => a.StartsWith("--list", StringComparison.Ordinal) || a is "--help" or "-h" or "--version" or "--info");
if (!listing && Selects(cudaTypes) && !GpuBench.TryOpen(out var reason))
{
    Console.WriteLine($"// CUDA benchmarks skipped: {reason}");
    foreach (var line in Mamba.Native.MambaNative.ProbeLog)
        Console.WriteLine($"//   probe: {(line.Length > 160 ? line[..160] + "…" : line)}");
    types = [.. types.Except(cudaTypes)];
    if (!Selects(types))
    {
        Console.WriteLine("// nothing else matches the arguments: done");
        return 0;
    }
}
try
{
    BenchmarkSwitcher.FromTypes(types).Run(args);
}
finally
{
    GpuBench.Close();
}
return 0;

// Whether BenchmarkDotNet's own filters (--filter, --anyCategories, ...) keep a case of these types; true when the
// arguments do not parse (BenchmarkDotNet reports that) or name no filter (it asks which to run).
bool Selects(IEnumerable<Type> candidates)
{
    var (ok, config, _) = ConfigParser.Parse(args, NullLogger.Instance);
    if (!ok || config is null) return true;
    return candidates.Any(t => BenchmarkConverter.TypeToBenchmarks(t, config).BenchmarksCases.Length > 0);
}
