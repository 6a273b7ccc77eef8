using System.CommandLine;

namespace Mamba.Cli.Commands;

/// <summary>Every subcommand of the tool; each lives in its own file with a static Create().</summary>
internal static class CommandCatalog
{
    public static IEnumerable<Command> All()
    {
        yield return GenerateCommand.Create();
        yield return ChatCommand.Create();
        yield return InfoCommand.Create();
        yield return CheckReferenceCommand.Create();
        yield return InitModelCommand.Create();
        yield return BenchCommand.Create();
        yield return TokenizeCommand.Create();
        yield return CheckTokenizerCommand.Create();
        yield return TrainCommand.Create();
        yield return FinetuneCommand.Create();
        yield return ConvertCommand.Create();
        yield return SoakCommand.Create();
        yield return PlotCommand.Create();
    }
}
