using System.CommandLine;
using System.Text.Json;

namespace Mamba.Cli.Commands;

/// <summary>
/// <c>mamba check-tokenizer &lt;tokenizer.json&gt; &lt;cases.json&gt;</c>: encodes every case of a reference file
/// (<c>{"cases": [{"text": ..., "ids": [...], "decoded": ...}]}</c>), prints each mismatch and exits 0 only when all match.
/// </summary>
internal static class CheckTokenizerCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var tokenizerArgument = new Argument<string>("tokenizer") { Description = "A tokenizer.json file, or a model folder holding one." };
        var casesArgument = new Argument<string>("cases") { Description = "Reference cases: {\"cases\": [{\"text\", \"ids\", \"decoded\"?}]} as produced with Hugging Face tokenizers." };
        var command = new Command("check-tokenizer", "Check the tokenizer against reference ids; exits 0 only when every case matches.");
        command.Arguments.Add(tokenizerArgument);
        command.Arguments.Add(casesArgument);
        command.SetAction(parseResult =>
        {
            var output = parseResult.InvocationConfiguration.Output;
            var error = parseResult.InvocationConfiguration.Error;
            string casesPath = parseResult.GetValue(casesArgument)!;
            try
            {
                var tokenizer = TokenizeCommand.Load(parseResult.GetValue(tokenizerArgument)!);
                var cases = ReadCases(casesPath);
                int failed = 0;
                foreach (var (text, expected, decoded) in cases)
                {
                    var got = tokenizer.Encode(text);
                    bool idsMatch = got.SequenceEqual(expected);
                    string? roundTrip = decoded is null ? null : tokenizer.Decode(expected);
                    bool decodeMatch = decoded is null || roundTrip == decoded;
                    if (idsMatch && decodeMatch) continue;
                    failed++;
                    output.WriteLine($"MISMATCH text: {JsonSerializer.Serialize(text)}");
                    output.WriteLine($"  expected: [{string.Join(", ", expected)}]");
                    output.WriteLine($"  got:      [{string.Join(", ", got)}]");
                    if (!decodeMatch)
                        output.WriteLine($"  decoded expected {JsonSerializer.Serialize(decoded)}, got {JsonSerializer.Serialize(roundTrip)}");
                }
                output.WriteLine($"{cases.Count - failed}/{cases.Count} cases match");
                return failed == 0 ? 0 : 1;
            }
            catch (Exception e) when (e is MambaException or IOException or NotSupportedException or UnauthorizedAccessException or ArgumentOutOfRangeException)
            {
                error.WriteLine($"error: {e.Message}");
                return 2;
            }
        });
        return command;
    }

    private static List<(string Text, int[] Ids, string? Decoded)> ReadCases(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            var root = doc.RootElement;
            var array = root.ValueKind == JsonValueKind.Array ? root
                : root.ValueKind == JsonValueKind.Object && root.TryGetProperty("cases", out var c) && c.ValueKind == JsonValueKind.Array ? c
                : throw new MambaFormatException("expected {\"cases\": [...]} or an array of cases", path, "cases");
            var list = new List<(string, int[], string?)>();
            int i = 0;
            foreach (var item in array.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Object
                    || !item.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String
                    || !item.TryGetProperty("ids", out var ids) || ids.ValueKind != JsonValueKind.Array)
                    throw new MambaFormatException("a case needs \"text\" (string) and \"ids\" (array)", path, $"cases[{i}]");
                string? decoded = item.TryGetProperty("decoded", out var d) && d.ValueKind == JsonValueKind.String ? d.GetString() : null;
                list.Add((text.GetString()!, [.. ids.EnumerateArray().Select(x => x.GetInt32())], decoded));
                i++;
            }
            return list;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw new MambaFormatException($"cases file is malformed: {e.Message}", path, null, e);
        }
    }
}
