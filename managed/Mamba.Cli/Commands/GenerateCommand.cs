using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Mamba.Generation;

namespace Mamba.Cli.Commands;

/// <summary>`mamba generate`: text (or ids) in, generated text out; several prompts run as one batch.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = ModelOptions.Model();
        var prompt = new Option<string[]>("--prompt") { Description = "Prompt text (repeat for a batch)", AllowMultipleArgumentsPerToken = false };
        var promptIds = new Option<string[]>("--prompt-ids") { Description = "Prompt token ids, comma-separated (repeat for a batch)" };
        var maxNew = new Option<int?>("--max-new-tokens") { Description = "Tokens to generate (default: generation_config.json, else 20)" };
        var minNew = new Option<int?>("--min-new-tokens") { Description = "Suppress eos until this many tokens exist" };
        var sample = new Option<bool>("--sample") { Description = "Sample instead of greedy decoding" };
        var temperature = new Option<float?>("--temperature") { Description = "Sampling temperature" };
        var topK = new Option<int?>("--top-k") { Description = "Keep the k most likely tokens (0 = off)" };
        var topP = new Option<float?>("--top-p") { Description = "Nucleus sampling mass" };
        var minP = new Option<float?>("--min-p") { Description = "Drop tokens below min-p × the top probability" };
        var repetition = new Option<float?>("--repetition-penalty") { Description = "Penalty for tokens already in the sequence (1 = off)" };
        var stop = new Option<string[]>("--stop") { Description = "Stop sequence (repeatable)" };
        var seed = new Option<int?>("--seed") { Description = "Seed for reproducible sampling" };
        var device = CommonOptions.Device("auto");
        var dtype = CommonOptions.DType();
        var threads = CommonOptions.Threads();
        var adapter = ModelOptions.Adapter();
        var json = new Option<bool>("--json") { Description = "Print one JSON object per prompt (prompt_ids, output_ids, text, finish_reason)" };
        var command = new Command("generate", "Generate text from one or more prompts.")
        {
            model, prompt, promptIds, maxNew, minNew, sample, temperature, topK, topP, minP, repetition, stop, seed, device, dtype, threads, adapter, json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var texts = parse.GetValue(prompt) ?? [];
            var idLists = parse.GetValue(promptIds) ?? [];
            if (texts.Length + idLists.Length == 0)
                throw new ArgumentException("give at least one --prompt or --prompt-ids");
            using var lm = ModelOptions.Load(parse.GetValue(model), parse.GetValue(device)!, parse.GetValue(dtype)!, parse.GetValue(threads));
            var prompts = new List<IReadOnlyList<int>>();
            foreach (var text in texts) prompts.Add(lm.Encode(text));
            foreach (var ids in idLists) prompts.Add(ParseIds(ids));
            var options = lm.DefaultGenerationOptions with { Adapter = ModelOptions.LoadAdapter(lm, parse.GetValue(adapter)) };
            if (parse.GetValue(maxNew) is { } m) options = options with { MaxNewTokens = m };
            if (parse.GetValue(minNew) is { } mn) options = options with { MinNewTokens = mn };
            if (parse.GetValue(sample)) options = options with { DoSample = true };
            if (parse.GetValue(temperature) is { } t) options = options with { Temperature = t };
            if (parse.GetValue(topK) is { } k) options = options with { TopK = k };
            if (parse.GetValue(topP) is { } p) options = options with { TopP = p };
            if (parse.GetValue(minP) is { } mp) options = options with { MinP = mp };
            if (parse.GetValue(repetition) is { } r) options = options with { RepetitionPenalty = r };
            if (parse.GetValue(stop) is { Length: > 0 } stops) options = options with { StopSequences = stops };
            if (parse.GetValue(seed) is { } s) options = options with { Seed = s };
            bool asJson = parse.GetValue(json);
            bool stream = !asJson && prompts.Count == 1 && lm.Tokenizer is not null;
            if (stream && texts.Length == 1) Console.Write(texts[0]);
            var results = await lm.GenerateWithCallbackAsync(prompts, options, (_, _, text) =>
            {
                if (stream) Console.Write(text);
            }, cancellationToken);
            if (stream) Console.WriteLine();
            for (int i = 0; i < results.Count; i++)
            {
                var result = results[i];
                if (asJson)
                {
                    Console.WriteLine(JsonSerializer.Serialize(new
                    {
                        prompt_ids = result.PromptIds,
                        output_ids = result.OutputIds,
                        text = result.Text,
                        finish_reason = result.FinishReason.ToString().ToLowerInvariant(),
                    }));
                }
                else if (!stream)
                {
                    Console.WriteLine($"[{i}] {(i < texts.Length ? texts[i] : "")}{result.Text}");
                    if (lm.Tokenizer is null) Console.WriteLine($"[{i}] ids: {string.Join(",", result.OutputIds)}");
                }
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"[{i}] {result.Usage.GeneratedTokens} tokens, finish: {result.FinishReason}, prefill {result.PrefillTime.TotalMilliseconds:F1} ms, decode {result.DecodeTokensPerSecond:F1} tokens/s"));
            }
            return 0;
        });
        return command;
    }

    internal static int[] ParseIds(string text)
    {
        try
        {
            return text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        }
        catch (FormatException)
        {
            throw new ArgumentException($"--prompt-ids '{text}': expected comma-separated integers like 1,2,3");
        }
    }
}
