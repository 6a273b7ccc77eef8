using System.CommandLine;
using System.Text.Json.Nodes;
using Mamba.IO;
using Mamba.Model;

namespace Mamba.Cli.Commands;

/// <summary>`mamba init-model`: a model folder with random weights from the config's init scheme (for benchmarks and placeholders).</summary>
internal static class InitModelCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "Folder to write (created)", Required = true };
        var preset = new Option<string?>("--preset") { Description = "Published shape: 130m, 370m, 790m, 1.4b, 2.8b" };
        var hidden = new Option<int?>("--hidden-size") { Description = "Model width" };
        var layers = new Option<int?>("--layers") { Description = "Number of blocks" };
        var state = new Option<int?>("--state-size") { Description = "SSM state size" };
        var vocab = new Option<int?>("--vocab-size") { Description = "Vocabulary rows (default 50280, GPT-NeoX)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer.json to copy into the folder" };
        var dtype = new Option<string>("--dtype") { Description = "Storage dtype: f32, bf16 or f16", DefaultValueFactory = _ => "f32" };
        var seed = new Option<int>("--seed") { Description = "Random seed", DefaultValueFactory = _ => 0 };
        var command = new Command("init-model", "Write a model folder with random weights initialised by the config's init scheme (untrained).")
        {
            output, preset, hidden, layers, state, vocab, tokenizer, dtype, seed,
        };
        command.SetAction(parse =>
        {
            var config = parse.GetValue(preset) is { } name ? MambaConfig.Preset(name) : new MambaConfig();
            if (parse.GetValue(hidden) is { } h) config = config with { HiddenSize = h };
            if (parse.GetValue(layers) is { } l) config = config with { NumHiddenLayers = l };
            if (parse.GetValue(state) is { } n) config = config with { StateSize = n };
            if (parse.GetValue(vocab) is { } v) config = config with { VocabSize = v };
            var storage = DTypeExtensions.Parse(parse.GetValue(dtype)!);
            config = config with
            {
                TorchDType = storage switch { DType.BF16 => "bfloat16", DType.F16 => "float16", _ => "float32" },
                ExtraKeys = new Dictionary<string, JsonNode?> { ["mamba_dotnet_untrained"] = true },
            };
            var dir = parse.GetValue(output)!;
            Write(dir, MambaInitializer.Create(config, parse.GetValue(seed)), storage, parse.GetValue(tokenizer));
            Console.WriteLine($"wrote {dir}: {config.Summary()}, untrained random weights stored as {storage.ToShortName()}");
            return 0;
        });
        return command;
    }

    internal static void Write(string dir, MambaWeights weights, DType storage, string? tokenizerPath)
    {
        Directory.CreateDirectory(dir);
        weights.Config.Save(Path.Combine(dir, "config.json"));
        SafeTensorsWriter.WriteFloat32(Path.Combine(dir, "model.safetensors"),
            weights.Enumerate().ToDictionary(t => t.Name, t => (t.Data, t.Shape)), storage.ToSafeTensorsName());
        var generation = new JsonObject
        {
            ["bos_token_id"] = weights.Config.BosTokenId,
            ["eos_token_id"] = weights.Config.EosTokenId,
            ["pad_token_id"] = weights.Config.PadTokenId,
        };
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), generation.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
        if (tokenizerPath is not null) File.Copy(tokenizerPath, Path.Combine(dir, "tokenizer.json"), overwrite: true);
    }
}
