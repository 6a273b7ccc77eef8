using System.CommandLine;
using Mamba.Lora;
using Mamba.Model;
using Mamba.Training;

namespace Mamba.Cli.Commands;

/// <summary>
/// `mamba finetune`: LoRA fine-tuning of a model folder on text or JSONL, the equivalent of the model documentation's
/// PEFT + TRL example (<c>SFTTrainer(..., peft_config=LoraConfig(target_modules=[...]))</c>), with SFTConfig's defaults
/// where they apply (3 epochs, learning rate 2e-5, batch 8, max length 1024, logging every 10 steps) and PEFT's LoRA
/// defaults (r 8, alpha 8, dropout 0). The output folder holds the adapter in PEFT's format.
/// </summary>
internal static class FinetuneCommand
{
    /// <summary>The documentation example's target_modules.</summary>
    public static readonly string[] DefaultTargets = ["x_proj", "embeddings", "in_proj", "out_proj"];

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Base model folder (config.json, weights, tokenizer.json)", Required = true };
        var rank = new Option<int>("--lora-r") { Description = "LoRA rank r", DefaultValueFactory = _ => 8 };
        var alpha = new Option<double>("--lora-alpha") { Description = "LoRA alpha (scale alpha / r, or alpha / √r with --use-rslora)", DefaultValueFactory = _ => 8 };
        var dropout = new Option<double>("--lora-dropout") { Description = "LoRA dropout (only 0 is supported for training)", DefaultValueFactory = _ => 0 };
        var rslora = new Option<bool>("--use-rslora") { Description = "Rank-stabilised scaling alpha / √r" };
        var targets = new Option<string[]>("--targets")
        {
            Description = "Modules to adapt: embeddings, in_proj, x_proj, dt_proj, out_proj (comma or space separated)",
            AllowMultipleArgumentsPerToken = true,
            DefaultValueFactory = _ => DefaultTargets,
        };
        var adapterSeed = new Option<int?>("--adapter-seed") { Description = "Seed of the adapter's initial A (default: --seed)" };
        // SFTConfig (TrainingArguments) defaults where they apply; eval loss at the end on the validation split.
        var flags = new TrainingFlags(new TrainingOptions
        {
            OutputDir = ".", DataFiles = ["."], NumTrainEpochs = 3, LearningRate = 2e-5, PerDeviceTrainBatchSize = 8, MaxLength = 1024, LoggingSteps = 10,
        }, "Decoupled weight decay on the adapter's factors", "Output folder: the adapter (adapter_config.json, adapter_model.safetensors), checkpoints, metrics.jsonl, loss_curve.png");
        var device = CommonOptions.Device();
        var dtype = CommonOptions.DType();
        var threads = CommonOptions.Threads();
        var command = new Command("finetune", "LoRA fine-tuning with PEFT-compatible adapters (the base model stays frozen).")
        {
            model, rank, alpha, dropout, rslora, targets, adapterSeed, device, dtype, threads,
        };
        flags.AddTo(command);
        command.SetAction(parse =>
        {
            var options = flags.Read(parse);
            var modelDir = parse.GetValue(model)!;
            var targetList = (parse.GetValue(targets) ?? DefaultTargets)
                .SelectMany(t => t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).Distinct().ToArray();
            var loraConfig = new LoraConfig
            {
                R = parse.GetValue(rank),
                LoraAlpha = parse.GetValue(alpha),
                LoraDropout = parse.GetValue(dropout),
                UseRslora = parse.GetValue(rslora),
                TargetModules = targetList,
                BaseModelNameOrPath = Path.GetFullPath(modelDir),
                InferenceMode = true,
            };
            loraConfig.Validate();
            var tokenizerPath = Path.Combine(modelDir, "tokenizer.json");
            if (!File.Exists(tokenizerPath)) throw new FileNotFoundException($"the model folder has no tokenizer.json: {tokenizerPath}", tokenizerPath);

            var weights = CheckpointLoader.LoadWeights(modelDir);
            var dtypeText = options.Bf16 ? "bf16" : parse.GetValue(dtype)!;
            var backend = CommonOptions.CreateBackend(parse.GetValue(device)!, dtypeText, parse.GetValue(threads), out var activation);
            using var network = new MambaForCausalLM(weights, backend, activation, ownsBackend: true, adoptWeights: true);
            var initial = LoraAdapter.CreateInitialized(loraConfig, network.Config, parse.GetValue(adapterSeed) ?? options.Seed);
            using var adapter = network.LoadAdapter(initial, "finetune");
            Console.Error.WriteLine($"model: {network.Config.Summary()}, {network.ParameterCount:N0} parameters (frozen), backend {backend.Kind}, compute {activation.ToShortName()}");
            Console.Error.WriteLine($"adapter: r {loraConfig.R}, alpha {loraConfig.LoraAlpha}{(loraConfig.UseRslora ? " (rsLoRA)" : "")}, "
                + $"{adapter.ModuleIds.Count()} modules on [{string.Join(", ", targetList)}], {adapter.ParameterCount:N0} trainable parameters "
                + $"({100.0 * adapter.ParameterCount / network.ParameterCount:F2} %)");
            foreach (var reason in LoraCompatibility.PeftIncompatibleModules(loraConfig).Select(LoraCompatibility.Reason))
                Console.Error.WriteLine($"warning: {reason}");
            using var trainer = new MambaTrainer(network, adapter, tokenizerPath, options, new TrainingConsole.StderrLogger(), initial);
            TrainingConsole.Execute(trainer, "adapter");
            return 0;
        });
        return command;
    }
}
