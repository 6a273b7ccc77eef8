using System.CommandLine;
using Mamba.Compute;
using Mamba.Model;
using Mamba.Training;

namespace Mamba.Cli.Commands;

/// <summary>
/// `mamba train`: trains a model folder (<c>--model</c>) or a fresh randomly initialised shape (<c>--preset</c> and
/// size flags) on text or JSONL files. Flags are the kebab-case of transformers' TrainingArguments names.
/// </summary>
internal static class TrainCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Model folder to fine-tune (config.json, weights, tokenizer.json)" };
        var preset = new Option<string?>("--preset") { Description = "Train a new model of a published shape from random init: 130m, 370m, 790m, 1.4b, 2.8b" };
        var hidden = new Option<int?>("--hidden-size") { Description = "Width of a new model" };
        var layers = new Option<int?>("--layers") { Description = "Blocks of a new model" };
        var state = new Option<int?>("--state-size") { Description = "SSM state size of a new model" };
        var vocab = new Option<int?>("--vocab-size") { Description = "Vocabulary rows of a new model (default 50280)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer.json (default: the model's, or the bundled GPT-NeoX one for --preset)" };
        var flags = new TrainingFlags(new TrainingOptions { OutputDir = ".", DataFiles = ["."] }, "Decoupled weight decay (not on A_log, D, norms, biases)");
        var device = CommonOptions.Device();
        var dtype = CommonOptions.DType();
        var threads = CommonOptions.Threads();
        var command = new Command("train", "Train or fine-tune a model on text or JSONL files (AdamW, checkpoints, metrics.jsonl, loss curve).")
        {
            model, preset, hidden, layers, state, vocab, tokenizer, device, dtype, threads,
        };
        flags.AddTo(command);
        command.SetAction(parse =>
        {
            var options = flags.Read(parse);

            var modelDir = parse.GetValue(model);
            var presetName = parse.GetValue(preset);
            if ((modelDir is null) == (presetName is null) && !(modelDir is null && (parse.GetValue(hidden) ?? parse.GetValue(layers)) is not null))
                throw new ArgumentException("pass either --model DIR (fine-tune) or --preset NAME / size flags (train from random init)");
            MambaWeights weights;
            string tokenizerPath;
            if (modelDir is not null)
            {
                weights = CheckpointLoader.LoadWeights(modelDir);
                tokenizerPath = parse.GetValue(tokenizer) ?? Path.Combine(modelDir, "tokenizer.json");
            }
            else
            {
                var config = presetName is not null ? MambaConfig.Preset(presetName) : new MambaConfig();
                if (parse.GetValue(hidden) is { } h) config = config with { HiddenSize = h };
                if (parse.GetValue(layers) is { } l) config = config with { NumHiddenLayers = l };
                if (parse.GetValue(state) is { } n) config = config with { StateSize = n };
                if (parse.GetValue(vocab) is { } v) config = config with { VocabSize = v };
                weights = MambaInitializer.Create(config, options.Seed);
                tokenizerPath = parse.GetValue(tokenizer) ?? Path.Combine(ModelOptions.DefaultModelDirectory, "tokenizer.json");
            }
            if (!File.Exists(tokenizerPath)) throw new FileNotFoundException($"tokenizer not found: {tokenizerPath} (pass --tokenizer)", tokenizerPath);

            var dtypeText = options.Bf16 ? "bf16" : parse.GetValue(dtype)!;
            var backend = CommonOptions.CreateBackend(parse.GetValue(device)!, dtypeText, parse.GetValue(threads), out var activation);
            using var network = new MambaForCausalLM(weights, backend, activation, ownsBackend: true);
            Console.Error.WriteLine($"model: {weights.Config.Summary()}, {weights.ParameterCount:N0} parameters, backend {backend.Kind}, compute {activation.ToShortName()}");
            using var trainer = new MambaTrainer(network, weights, tokenizerPath, options, new TrainingConsole.StderrLogger());
            TrainingConsole.Execute(trainer, "model");
            return 0;
        });
        return command;
    }
}
