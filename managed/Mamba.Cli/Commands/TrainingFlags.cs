using System.CommandLine;
using Mamba.Training;

namespace Mamba.Cli.Commands;

/// <summary>
/// The flags `mamba train` and `mamba finetune` share: the kebab-case of transformers' TrainingArguments names (plus the
/// data files), with each command's defaults.
/// </summary>
internal sealed class TrainingFlags
{
    private readonly Option<string[]> _data = new("--data") { Description = "Training files: plain text (one document each) or .jsonl", Required = true, AllowMultipleArgumentsPerToken = true };
    private readonly Option<string> _output;
    private readonly Option<double> _learningRate, _epochs, _weightDecay, _beta1, _beta2, _epsilon, _maxGradNorm, _validation;
    private readonly Option<int> _maxSteps, _batch, _evalBatch, _accumulation, _warmup, _logging, _evalSteps, _saveSteps, _seed, _maxLength;
    private readonly Option<string> _scheduler, _textField;
    private readonly Option<bool> _bf16 = new("--bf16") { Description = "bf16 compute with fp32 master weights (sets --dtype bf16)" };
    private readonly Option<string[]> _evalData = new("--eval-data") { Description = "Held-out evaluation files (instead of --validation-split)", AllowMultipleArgumentsPerToken = true };
    private readonly Option<bool> _recompute = new("--recompute") { Description = "Recompute activations per layer in the backward pass (less memory)" };
    private readonly Option<string?> _resume = new("--resume") { Description = "Checkpoint folder to continue from exactly" };
    private readonly Option<bool> _evalOnStart = new("--eval-on-start") { Description = "Evaluate once before the first step (recorded as step 0)" };

    public TrainingFlags(TrainingOptions defaults, string weightDecayDescription, string outputDescription = "Output folder (checkpoints, final model, metrics.jsonl, loss_curve.png)")
    {
        _output = new Option<string>("--output") { Description = outputDescription, Required = true };
        _learningRate = new("--learning-rate") { Description = "Peak AdamW learning rate", DefaultValueFactory = _ => defaults.LearningRate };
        _epochs = new("--num-train-epochs") { Description = "Passes over the data", DefaultValueFactory = _ => defaults.NumTrainEpochs };
        _maxSteps = new("--max-steps") { Description = "Optimizer steps (overrides --num-train-epochs when > 0)", DefaultValueFactory = _ => defaults.MaxSteps };
        _batch = new("--per-device-train-batch-size") { Description = "Sequences per forward pass", DefaultValueFactory = _ => defaults.PerDeviceTrainBatchSize };
        _evalBatch = new("--per-device-eval-batch-size") { Description = "Sequences per evaluation pass", DefaultValueFactory = _ => defaults.PerDeviceEvalBatchSize };
        _accumulation = new("--gradient-accumulation-steps") { Description = "Forward passes per optimizer step", DefaultValueFactory = _ => defaults.GradientAccumulationSteps };
        _warmup = new("--warmup-steps") { Description = "Linear warm-up steps", DefaultValueFactory = _ => defaults.WarmupSteps };
        _scheduler = new("--lr-scheduler-type") { Description = "linear, cosine or constant", DefaultValueFactory = _ => defaults.LrSchedulerType.ToString().ToLowerInvariant() };
        _weightDecay = new("--weight-decay") { Description = weightDecayDescription, DefaultValueFactory = _ => defaults.WeightDecay };
        _beta1 = new("--adam-beta1") { Description = "AdamW β1", DefaultValueFactory = _ => defaults.AdamBeta1 };
        _beta2 = new("--adam-beta2") { Description = "AdamW β2", DefaultValueFactory = _ => defaults.AdamBeta2 };
        _epsilon = new("--adam-epsilon") { Description = "AdamW ε", DefaultValueFactory = _ => defaults.AdamEpsilon };
        _maxGradNorm = new("--max-grad-norm") { Description = "Global gradient-norm clip (0 = off)", DefaultValueFactory = _ => defaults.MaxGradNorm };
        _logging = new("--logging-steps") { Description = "Steps between metric records", DefaultValueFactory = _ => defaults.LoggingSteps };
        _evalSteps = new("--eval-steps") { Description = "Steps between evaluations (0 = at the end only)", DefaultValueFactory = _ => defaults.EvalSteps };
        _saveSteps = new("--save-steps") { Description = "Steps between checkpoints (0 = at the end and on Ctrl+C only)", DefaultValueFactory = _ => defaults.SaveSteps };
        _seed = new("--seed") { Description = "Seed of the data order and of new weights", DefaultValueFactory = _ => defaults.Seed };
        _maxLength = new("--max-length") { Description = "Tokens per training sequence", DefaultValueFactory = _ => defaults.MaxLength };
        _textField = new("--text-field") { Description = "JSONL field holding the text", DefaultValueFactory = _ => defaults.TextField };
        _validation = new("--validation-split") { Description = "Fraction of sequences held out for evaluation", DefaultValueFactory = _ => defaults.ValidationSplit };
    }

    public void AddTo(Command command)
    {
        foreach (Option o in new Option[]
                 {
                     _data, _output, _learningRate, _epochs, _maxSteps, _batch, _evalBatch, _accumulation, _warmup, _scheduler, _weightDecay,
                     _beta1, _beta2, _epsilon, _maxGradNorm, _logging, _evalSteps, _saveSteps, _seed, _bf16, _maxLength, _textField, _evalData,
                     _validation, _recompute, _resume, _evalOnStart,
                 })
            command.Options.Add(o);
    }

    /// <summary>The options of a parsed command line, validated, with the data files checked to exist.</summary>
    public TrainingOptions Read(ParseResult parse)
    {
        var options = new TrainingOptions
        {
            OutputDir = parse.GetValue(_output)!,
            DataFiles = parse.GetValue(_data) ?? [],
            EvalDataFiles = parse.GetValue(_evalData) ?? [],
            TextField = parse.GetValue(_textField)!,
            MaxLength = parse.GetValue(_maxLength),
            ValidationSplit = parse.GetValue(_validation),
            LearningRate = parse.GetValue(_learningRate),
            NumTrainEpochs = parse.GetValue(_epochs),
            MaxSteps = parse.GetValue(_maxSteps),
            PerDeviceTrainBatchSize = parse.GetValue(_batch),
            PerDeviceEvalBatchSize = parse.GetValue(_evalBatch),
            GradientAccumulationSteps = parse.GetValue(_accumulation),
            WarmupSteps = parse.GetValue(_warmup),
            LrSchedulerType = ParseScheduler(parse.GetValue(_scheduler)!),
            WeightDecay = parse.GetValue(_weightDecay),
            AdamBeta1 = parse.GetValue(_beta1),
            AdamBeta2 = parse.GetValue(_beta2),
            AdamEpsilon = parse.GetValue(_epsilon),
            MaxGradNorm = parse.GetValue(_maxGradNorm),
            LoggingSteps = parse.GetValue(_logging),
            EvalSteps = parse.GetValue(_evalSteps),
            SaveSteps = parse.GetValue(_saveSteps),
            Seed = parse.GetValue(_seed),
            Bf16 = parse.GetValue(_bf16),
            GradientCheckpointing = parse.GetValue(_recompute),
            ResumeFromCheckpoint = parse.GetValue(_resume),
            EvalOnStart = parse.GetValue(_evalOnStart),
        };
        options.Validate();
        foreach (var file in options.DataFiles)
            if (!File.Exists(file)) throw new FileNotFoundException($"--data {file}: file not found", file);
        foreach (var file in options.EvalDataFiles)
            if (!File.Exists(file)) throw new FileNotFoundException($"--eval-data {file}: file not found", file);
        return options;
    }

    private static LearningRateSchedulerType ParseScheduler(string text) => text.ToLowerInvariant() switch
    {
        "linear" => LearningRateSchedulerType.Linear,
        "cosine" => LearningRateSchedulerType.Cosine,
        "constant" or "constant_with_warmup" => LearningRateSchedulerType.Constant,
        _ => throw new ArgumentException($"--lr-scheduler-type {text}: expected linear, cosine or constant"),
    };
}
