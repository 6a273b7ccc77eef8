using System.CommandLine;
using Mamba.Compute;
using Mamba.Model;
using Mamba.Training;
using Microsoft.Extensions.Logging;
using Spectre.Console;

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
        var data = new Option<string[]>("--data") { Description = "Training files: plain text (one document each) or .jsonl", Required = true, AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--output") { Description = "Output folder (checkpoints, final model, metrics.jsonl, loss_curve.png)", Required = true };
        var defaults = new TrainingOptions { OutputDir = ".", DataFiles = ["."] };
        var learningRate = new Option<double>("--learning-rate") { Description = "Peak AdamW learning rate", DefaultValueFactory = _ => defaults.LearningRate };
        var epochs = new Option<double>("--num-train-epochs") { Description = "Passes over the data", DefaultValueFactory = _ => defaults.NumTrainEpochs };
        var maxSteps = new Option<int>("--max-steps") { Description = "Optimizer steps (overrides --num-train-epochs when > 0)", DefaultValueFactory = _ => defaults.MaxSteps };
        var batch = new Option<int>("--per-device-train-batch-size") { Description = "Sequences per forward pass", DefaultValueFactory = _ => defaults.PerDeviceTrainBatchSize };
        var evalBatch = new Option<int>("--per-device-eval-batch-size") { Description = "Sequences per evaluation pass", DefaultValueFactory = _ => defaults.PerDeviceEvalBatchSize };
        var accumulation = new Option<int>("--gradient-accumulation-steps") { Description = "Forward passes per optimizer step", DefaultValueFactory = _ => defaults.GradientAccumulationSteps };
        var warmup = new Option<int>("--warmup-steps") { Description = "Linear warm-up steps", DefaultValueFactory = _ => defaults.WarmupSteps };
        var scheduler = new Option<string>("--lr-scheduler-type") { Description = "linear, cosine or constant", DefaultValueFactory = _ => "linear" };
        var weightDecay = new Option<double>("--weight-decay") { Description = "Decoupled weight decay (not on A_log, D, norms, biases)", DefaultValueFactory = _ => defaults.WeightDecay };
        var beta1 = new Option<double>("--adam-beta1") { Description = "AdamW β1", DefaultValueFactory = _ => defaults.AdamBeta1 };
        var beta2 = new Option<double>("--adam-beta2") { Description = "AdamW β2", DefaultValueFactory = _ => defaults.AdamBeta2 };
        var epsilon = new Option<double>("--adam-epsilon") { Description = "AdamW ε", DefaultValueFactory = _ => defaults.AdamEpsilon };
        var maxGradNorm = new Option<double>("--max-grad-norm") { Description = "Global gradient-norm clip (0 = off)", DefaultValueFactory = _ => defaults.MaxGradNorm };
        var logging = new Option<int>("--logging-steps") { Description = "Steps between metric records", DefaultValueFactory = _ => defaults.LoggingSteps };
        var evalSteps = new Option<int>("--eval-steps") { Description = "Steps between evaluations (0 = at the end only)", DefaultValueFactory = _ => defaults.EvalSteps };
        var saveSteps = new Option<int>("--save-steps") { Description = "Steps between checkpoints (0 = at the end and on Ctrl+C only)", DefaultValueFactory = _ => defaults.SaveSteps };
        var seed = new Option<int>("--seed") { Description = "Seed of the data order and of a new model's weights", DefaultValueFactory = _ => defaults.Seed };
        var bf16 = new Option<bool>("--bf16") { Description = "bf16 compute with fp32 master weights (sets --dtype bf16)" };
        var maxLength = new Option<int>("--max-length") { Description = "Tokens per training sequence", DefaultValueFactory = _ => defaults.MaxLength };
        var evalData = new Option<string[]>("--eval-data") { Description = "Held-out evaluation files (instead of --validation-split)", AllowMultipleArgumentsPerToken = true };
        var textField = new Option<string>("--text-field") { Description = "JSONL field holding the text", DefaultValueFactory = _ => defaults.TextField };
        var validation = new Option<double>("--validation-split") { Description = "Fraction of sequences held out for evaluation", DefaultValueFactory = _ => defaults.ValidationSplit };
        var recompute = new Option<bool>("--recompute") { Description = "Recompute activations per layer in the backward pass (less memory)" };
        var resume = new Option<string?>("--resume") { Description = "Checkpoint folder to continue from exactly" };
        var device = CommonOptions.Device();
        var dtype = CommonOptions.DType();
        var threads = CommonOptions.Threads();
        var command = new Command("train", "Train or fine-tune a model on text or JSONL files (AdamW, checkpoints, metrics.jsonl, loss curve).")
        {
            model, preset, hidden, layers, state, vocab, tokenizer, data, output, learningRate, epochs, maxSteps, batch, evalBatch,
            accumulation, warmup, scheduler, weightDecay, beta1, beta2, epsilon, maxGradNorm, logging, evalSteps, saveSteps, seed,
            bf16, maxLength, textField, evalData, validation, recompute, resume, device, dtype, threads,
        };
        command.SetAction(parse =>
        {
            var options = new TrainingOptions
            {
                OutputDir = parse.GetValue(output)!,
                DataFiles = parse.GetValue(data) ?? [],
                EvalDataFiles = parse.GetValue(evalData) ?? [],
                TextField = parse.GetValue(textField)!,
                MaxLength = parse.GetValue(maxLength),
                ValidationSplit = parse.GetValue(validation),
                LearningRate = parse.GetValue(learningRate),
                NumTrainEpochs = parse.GetValue(epochs),
                MaxSteps = parse.GetValue(maxSteps),
                PerDeviceTrainBatchSize = parse.GetValue(batch),
                PerDeviceEvalBatchSize = parse.GetValue(evalBatch),
                GradientAccumulationSteps = parse.GetValue(accumulation),
                WarmupSteps = parse.GetValue(warmup),
                LrSchedulerType = ParseScheduler(parse.GetValue(scheduler)!),
                WeightDecay = parse.GetValue(weightDecay),
                AdamBeta1 = parse.GetValue(beta1),
                AdamBeta2 = parse.GetValue(beta2),
                AdamEpsilon = parse.GetValue(epsilon),
                MaxGradNorm = parse.GetValue(maxGradNorm),
                LoggingSteps = parse.GetValue(logging),
                EvalSteps = parse.GetValue(evalSteps),
                SaveSteps = parse.GetValue(saveSteps),
                Seed = parse.GetValue(seed),
                Bf16 = parse.GetValue(bf16),
                GradientCheckpointing = parse.GetValue(recompute),
                ResumeFromCheckpoint = parse.GetValue(resume),
            };
            options.Validate();
            foreach (var file in options.DataFiles)
                if (!File.Exists(file)) throw new FileNotFoundException($"--data {file}: file not found", file);
            foreach (var file in options.EvalDataFiles)
                if (!File.Exists(file)) throw new FileNotFoundException($"--eval-data {file}: file not found", file);

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
            using var trainer = new MambaTrainer(network, weights, tokenizerPath, options, new StderrLogger());
            using var cts = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                e.Cancel = true;
                cts.Cancel();
            };
            Console.CancelKeyPress += onCancel;
            try
            {
                var last = Run(trainer, cts.Token);
                Console.WriteLine($"trained {last.Step} steps: loss {last.Loss:F4}" + (last.EvalLoss is { } el ? $", eval loss {el:F4}, perplexity {Math.Exp(el):F2}" : "")
                    + (last.SkippedSteps > 0 ? $", {last.SkippedSteps} step(s) skipped (non-finite)" : ""));
                Console.WriteLine($"model: {options.OutputDir}");
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
                var png = Path.Combine(options.OutputDir, "loss_curve.png");
                if (LossCurvePlot.Write(Path.Combine(options.OutputDir, "metrics.jsonl"), png)) Console.Error.WriteLine($"loss curve: {png}");
            }
            return 0;
        });
        return command;
    }

    private static LearningRateSchedulerType ParseScheduler(string text) => text.ToLowerInvariant() switch
    {
        "linear" => LearningRateSchedulerType.Linear,
        "cosine" => LearningRateSchedulerType.Cosine,
        "constant" or "constant_with_warmup" => LearningRateSchedulerType.Constant,
        _ => throw new ArgumentException($"--lr-scheduler-type {text}: expected linear, cosine or constant"),
    };

    private static string Describe(TrainingProgress p) =>
        $"step {p.Step}/{p.TotalSteps}  loss {p.Loss:F4}  lr {p.LearningRate:G3}  {p.TokensPerSecond:N0} tok/s  ETA {p.EstimatedRemaining:hh\\:mm\\:ss}"
        + (p.EvalLoss is { } e ? $"  eval {e:F4}" : "") + (p.Skipped ? "  [skipped: non-finite]" : "");

    /// <summary>Trains with a live progress bar on stderr, or one line per step when stderr is redirected.</summary>
    private static TrainingProgress Run(MambaTrainer trainer, CancellationToken cancellationToken)
    {
        if (Console.IsErrorRedirected)
        {
            var lines = new SyncProgress(p =>
            {
                if (p.Step % trainer.Options.LoggingSteps == 0 || p.Skipped || p.EvalLoss is not null || p.Step == p.TotalSteps)
                    Console.Error.WriteLine(Describe(p));
            });
            return trainer.Train(lines, cancellationToken);
        }
        TrainingProgress? result = null;
        ModelOptions.Status.Progress()
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask("preparing data", maxValue: 1);
                var reporter = new SyncProgress(p =>
                {
                    task.MaxValue = p.TotalSteps;
                    task.Value = p.Step;
                    task.Description = Markup.Escape(Describe(p));
                });
                result = trainer.Train(reporter, cancellationToken);
            });
        return result!;
    }

    private sealed class SyncProgress(Action<TrainingProgress> handler) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => handler(value);
    }

    /// <summary>Warnings and errors of the trainer (skipped steps, cancellation) on stderr.</summary>
    private sealed class StderrLogger : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel)) Console.Error.WriteLine($"{logLevel.ToString().ToLowerInvariant()}: {formatter(state, exception)}");
        }
    }
}
