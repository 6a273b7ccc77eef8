using System.CommandLine;
using System.Text.Json;
using Mamba.Tokenization;

namespace Mamba.Cli.Commands;

/// <summary><c>mamba tokenize --tokenizer &lt;tokenizer.json|model dir&gt; (--text T | --file F) [--json] [--count] [--jsonl-field F]</c>:
/// prints the token ids of a text, or only their count (of a whole file, or summed over a JSONL file's documents).</summary>
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
        var countOption = new Option<bool>("--count") { Description = "Print only the number of tokens (with --json: {\"count\": n, \"documents\": d})." };
        var jsonlOption = new Option<string?>("--jsonl-field")
        {
            Description = "Read --file as JSONL and tokenize this string field of each line as its own document (as `mamba train` does, without the EOS it appends); implies --count.",
        };

        var command = new Command("tokenize", "Print the token ids of a text, exactly as Hugging Face tokenizers gives them.");
        command.Options.Add(tokenizerOption);
        command.Options.Add(textOption);
        command.Options.Add(fileOption);
        command.Options.Add(jsonOption);
        command.Options.Add(specialOption);
        command.Options.Add(countOption);
        command.Options.Add(jsonlOption);
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
                bool special = parseResult.GetValue(specialOption);
                bool json = parseResult.GetValue(jsonOption);
                string? field = parseResult.GetValue(jsonlOption);
                if (field is not null)
                {
                    if (file is null)
                    {
                        error.WriteLine("error: --jsonl-field needs --file");
                        return 1;
                    }
                    var (count, documents) = CountJsonl(tokenizer, file, field, special);
                    WriteCount(output, json, count, documents);
                    return 0;
                }
                text ??= File.ReadAllText(file!);
                var ids = tokenizer.Encode(text, special);
                if (parseResult.GetValue(countOption))
                    WriteCount(output, json, ids.Count, 1);
                else if (json)
                    output.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object> { ["ids"] = ids, ["count"] = ids.Count }));
                else
                    output.WriteLine(string.Join(' ', ids));
                return 0;
            }
            catch (Exception e) when (e is MambaException or IOException or NotSupportedException or UnauthorizedAccessException or JsonException or InvalidDataException)
            {
                error.WriteLine($"error: {e.Message}");
                return 2;
            }
        });
        return command;
    }

    private static void WriteCount(TextWriter output, bool json, long count, long documents)
    {
        if (json)
            output.WriteLine(JsonSerializer.Serialize(new Dictionary<string, long> { ["count"] = count, ["documents"] = documents }));
        else
            output.WriteLine(count);
    }

    /// <summary>Sums the token counts of a JSONL file's documents (one JSON object a line, <paramref name="field"/> a
    /// string; blank lines skipped), each tokenized on its own. Lines are encoded in parallel.</summary>
    internal static (long Tokens, long Documents) CountJsonl(MambaTokenizer tokenizer, string path, string field, bool special)
    {
        long tokens = 0, documents = 0;
        int lineNumber = 0;
        var lines = File.ReadLines(path).Select(line => (Line: line, Number: ++lineNumber)).Where(x => !string.IsNullOrWhiteSpace(x.Line));
        foreach (var chunk in lines.Chunk(256))
        {
            var counts = new int[chunk.Length];
            var errors = new string?[chunk.Length];
            Parallel.For(0, chunk.Length, i =>
            {
                try
                {
                    using var doc = JsonDocument.Parse(chunk[i].Line);
                    if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty(field, out var value) || value.ValueKind != JsonValueKind.String)
                        errors[i] = $"no string field \"{field}\"";
                    else counts[i] = tokenizer.Encode(value.GetString()!, special).Count;
                }
                catch (JsonException e)
                {
                    errors[i] = $"not JSON: {e.Message}";
                }
            });
            // The first bad line in file order, whichever thread met it first.
            for (int i = 0; i < chunk.Length; i++)
                if (errors[i] is { } message) throw new InvalidDataException($"{path}:{chunk[i].Number}: {message}");
            foreach (int c in counts)
                tokens += c;
            documents += chunk.Length;
        }
        return (tokens, documents);
    }

    /// <summary>Loads a tokenizer from a tokenizer.json file or a model folder.</summary>
    internal static MambaTokenizer Load(string path) =>
        Directory.Exists(path) ? MambaTokenizer.FromDirectory(path) : MambaTokenizer.FromFile(path);
}
