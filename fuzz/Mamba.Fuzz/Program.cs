using Mamba.Fuzzing;
using SharpFuzz;

// Usage: Mamba.Fuzz <target>   (under afl-fuzz; the input arrives on stdin or as the @@ file through SharpFuzz)
//        Mamba.Fuzz <target> --replay <file>...   (runs inputs once, prints the outcome of each)
if (args.Length < 1 || Array.IndexOf(Targets.Names, args[0]) < 0)
{
    Console.Error.WriteLine($"usage: Mamba.Fuzz <{string.Join("|", Targets.Names)}> [--replay FILE...]");
    return 2;
}
var target = args[0];
var work = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), $"mamba-fuzz-{target}-{Environment.ProcessId}");
Directory.CreateDirectory(work);

if (args.Length > 1 && args[1] == "--replay")
{
    int bad = 0;
    foreach (var file in args.Skip(2))
    {
        var e = Targets.Run(target, File.ReadAllBytes(file), work);
        bool ok = e is null || Targets.IsDocumented(target, e);
        if (!ok) bad++;
        Console.WriteLine($"{(ok ? "ok " : "BAD")} {file}: {(e is null ? "read" : e.GetType().Name + ": " + e.Message.Split('\n')[0])}");
    }
    return bad == 0 ? 0 : 1;
}

Fuzzer.OutOfProcess.Run(stream =>
{
    using var buffer = new MemoryStream();
    stream.CopyTo(buffer);
    var e = Targets.Run(target, buffer.ToArray(), work);
    if (e is not null && !Targets.IsDocumented(target, e))
        throw new InvalidOperationException($"undocumented exception from the {target} reader", e); // AFL records a crash
});
return 0;
