using System.CommandLine;
using System.Text.Json;
using Mamba.Tokenization;

namespace Mamba.Cli.Commands;

/// <summary><c>mamba tokenize --tokenizer &lt;tokenizer.json|model dir&gt; (--text T | --file F) [--json]</c>: prints the token ids of a text.</summary>
internal static class TokenizeCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var tokenizerOption = new Option<string>("--tokenizer", "-t")
        {
            Description = "A tokenizer.json file, or a model folder holding one (its tokenizer_config.json / config.json are read too).",
            Required = true,
        };
        var textOption = new Option<string?>("--text") { Description = "The text to tokenize." };
        var fileOption = new Option<string?>("--file", "-f") { Description = "A UTF-8 file whose whole content is tokenized." };
        var jsonOption = new Option<bool>("--json") { Description = "Print {\"ids\": [...], \"count\": n} instead of space-separated ids." };
        var specialOption = new Option<bool>("--add-special-tokens") { Description = "Add the tokenizer's special tokens (BOS/EOS) around the text, as the post-processor says." };

        var command = new Command("tokenize", "Print the token ids of a text, exactly as Hugging Face tokenizers gives them.");
        command.Options.Add(tokenizerOption);
        command.Options.Add(textOption);
        command.Options.Add(fileOption);
        command.Options.Add(jsonOption);
        command.Options.Add(specialOption);
        command.SetAction(parseResult =>
        {
            var output = parseResult.InvocationConfiguration.Output;
            var error = parseResult.InvocationConfiguration.Error;
            string? text = parseResult.GetValue(textOption);
            string? file = parseResult.GetValue(fileOption);
            if ((text is null) == (file is null))
            {
                error.WriteLine("error: give exactly one of --text and --file");
                return 1;
            }
            try
            {
                var tokenizer = Load(parseResult.GetValue(tokenizerOption)!);
                text ??= File.ReadAllText(file!);
                var ids = tokenizer.Encode(text, parseResult.GetValue(specialOption));
                if (parseResult.GetValue(jsonOption))
                    output.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object> { ["ids"] = ids, ["count"] = ids.Count }));
                else
                    output.WriteLine(string.Join(' ', ids));
                return 0;
            }
            catch (Exception e) when (e is MambaException or IOException or NotSupportedException or UnauthorizedAccessException)
            {
                error.WriteLine($"error: {e.Message}");
                return 2;
            }
        });
        return command;
    }

    /// <summary>Loads a tokenizer from a tokenizer.json file or a model folder.</summary>
    internal static MambaTokenizer Load(string path) =>
        Directory.Exists(path) ? MambaTokenizer.FromDirectory(path) : MambaTokenizer.FromFile(path);
}
