using System.CommandLine;
using Mamba.Model;

namespace Mamba.Cli.Commands;

/// <summary>`mamba convert`: rewrites a model folder's weights in another storage dtype (e.g. a trained F32 checkpoint as bf16 for shipping).</summary>
internal static class ConvertCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder to read (config.json, weights, tokenizer.json)", Required = true };
        var output = new Option<string>("--out") { Description = "Folder to write (created; must differ from --model)", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "Storage dtype: f32, bf16 or f16", DefaultValueFactory = _ => "bf16" };
        var command = new Command("convert", "Write a model folder's weights in another storage dtype (safetensors); config, tokenizer, generation config and model card are copied.")
        {
            model, output, dtype,
        };
        command.SetAction(parse =>
        {
            var source = parse.GetValue(model)!;
            var target = parse.GetValue(output)!;
            if (string.Equals(Path.GetFullPath(source).TrimEnd('/'), Path.GetFullPath(target).TrimEnd('/'), StringComparison.Ordinal))
                throw new ArgumentException("--out must be another folder than --model");
            var storage = DTypeExtensions.Parse(parse.GetValue(dtype)!);
            var weights = CheckpointLoader.LoadWeights(source);
            var config = weights.Config with { TorchDType = storage switch { DType.BF16 => "bfloat16", DType.F16 => "float16", _ => "float32" } };
            var tokenizer = Path.Combine(source, "tokenizer.json");
            InitModelCommand.Write(target, new MambaWeights(new ParameterStore<float[]>(config, e => weights.Values[e.Key])), storage, File.Exists(tokenizer) ? tokenizer : null);
            foreach (var file in new[] { "generation_config.json", "README.md" })
                if (File.Exists(Path.Combine(source, file))) File.Copy(Path.Combine(source, file), Path.Combine(target, file), overwrite: true);
            Console.WriteLine($"wrote {target}: {config.Summary()}, weights stored as {storage.ToShortName()}");
            return 0;
        });
        return command;
    }
}
