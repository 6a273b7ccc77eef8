using System.CommandLine;
namespace Mamba.Cli.Commands;
internal static class CheckReferenceCommand
{
    public static Command Create() => new("check-reference", "Compare the model against reference outputs.");
}
