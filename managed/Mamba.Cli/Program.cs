using System.CommandLine;
using Mamba.Cli.Commands;

namespace Mamba.Cli;

/// <summary>Entry point of the `mamba` command-line tool.</summary>
public static class Program
{
    /// <summary>Builds the root command; tests call this to drive commands in-process.</summary>
    public static RootCommand BuildRootCommand()
    {
        var root = new RootCommand("Mamba for .NET: run, check and benchmark Mamba language models.");
        foreach (var command in CommandCatalog.All())
            root.Subcommands.Add(command);
        return root;
    }

    /// <summary>Runs the tool with <paramref name="args"/> and returns the process exit code.</summary>
    public static int Main(string[] args)
    {
        var root = BuildRootCommand();
        try
        {
            return root.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("cancelled");
            return 130;
        }
        catch (Exception e) when (e is MambaException or ArgumentException or IOException or UnauthorizedAccessException or NotSupportedException or InvalidOperationException)
        {
            // Expected failures (bad files, bad arguments, no GPU): one clear line, no stack trace.
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }
}
