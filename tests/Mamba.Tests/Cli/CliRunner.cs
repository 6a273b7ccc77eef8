namespace Mamba.Tests.Cli;

/// <summary>Runs the `mamba` tool in-process with captured output.</summary>
internal static class CliRunner
{
    private static readonly object Gate = new();

    public static (int ExitCode, string Output) Run(params string[] args) => RunWithInput(null, args);

    public static (int ExitCode, string Output) RunWithInput(string? stdin, params string[] args)
    {
        lock (Gate)
        {
            var oldOut = Console.Out;
            var oldError = Console.Error;
            var oldIn = Console.In;
            var writer = new StringWriter();
            try
            {
                Console.SetOut(writer);
                Console.SetError(writer);
                if (stdin is not null) Console.SetIn(new StringReader(stdin));
                int code = Mamba.Cli.Program.Main(args);
                return (code, writer.ToString());
            }
            finally
            {
                Console.SetOut(oldOut);
                Console.SetError(oldError);
                Console.SetIn(oldIn);
            }
        }
    }
}
