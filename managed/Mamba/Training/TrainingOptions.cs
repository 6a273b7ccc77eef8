namespace Mamba.Training;

/// <summary>The learning-rate schedule after warm-up (transformers' <c>lr_scheduler_type</c>).</summary>
public enum LearningRateSchedulerType
{
    /// <summary>Linear decay from the peak to zero at the last step.</summary>
    Linear,
    /// <summary>Half a cosine from the peak to zero at the last step.</summary>
    Cosine,
    /// <summary>The peak rate throughout (after the warm-up, when <see cref="TrainingOptions.WarmupSteps"/> is set).</summary>
    Constant,
}

/// <summary>
/// Settings of a training run. Names follow transformers' <c>TrainingArguments</c> (learning_rate → <see cref="LearningRate"/>,
/// and so on); defaults are theirs where they have one. <see cref="Validate"/> reports the first inconsistent value.
/// </summary>
public sealed record TrainingOptions
{
    /// <summary>Folder for checkpoints (<c>checkpoint-&lt;step&gt;/</c>), the final model, <c>metrics.jsonl</c> and the token cache.</summary>
    public required string OutputDir { get; init; }

    /// <summary>Training text: plain text files (each one document) or JSONL files (<c>.jsonl</c>, one document per line).</summary>
    public required IReadOnlyList<string> DataFiles { get; init; }

    /// <summary>
    /// Held-out evaluation text (same formats as <see cref="DataFiles"/>); when given, evaluation uses every packed sequence of
    /// these files and <see cref="ValidationSplit"/> is not applied to the training data.
    /// </summary>
    public IReadOnlyList<string> EvalDataFiles { get; init; } = [];

    /// <summary>The JSONL field holding the text (default <c>text</c>).</summary>
    public string TextField { get; init; } = "text";

    /// <summary>Tokens per training sequence (documents are packed, EOS between them).</summary>
    public int MaxLength { get; init; } = 512;

    /// <summary>Fraction of the packed sequences held out for evaluation (every k-th sequence, k = round(1 / fraction)); 0 for none.</summary>
    public double ValidationSplit { get; init; } = 0.05;

    /// <summary>Peak learning rate of AdamW.</summary>
    public double LearningRate { get; init; } = 5e-5;

    /// <summary>Passes over the training sequences (ignored when <see cref="MaxSteps"/> is positive).</summary>
    public double NumTrainEpochs { get; init; } = 3;

    /// <summary>Optimizer steps to run; when positive it overrides <see cref="NumTrainEpochs"/>.</summary>
    public int MaxSteps { get; init; } = -1;

    /// <summary>Sequences per forward pass.</summary>
    public int PerDeviceTrainBatchSize { get; init; } = 8;

    /// <summary>Sequences per forward pass during evaluation.</summary>
    public int PerDeviceEvalBatchSize { get; init; } = 8;

    /// <summary>Forward passes whose gradients are summed into one optimizer step.</summary>
    public int GradientAccumulationSteps { get; init; } = 1;

    /// <summary>Steps of linear warm-up from 0 to <see cref="LearningRate"/>.</summary>
    public int WarmupSteps { get; init; }

    /// <summary>The schedule after warm-up.</summary>
    public LearningRateSchedulerType LrSchedulerType { get; init; } = LearningRateSchedulerType.Linear;

    /// <summary>Decoupled weight decay, applied only to the parameters the table marks (not A_log, D, norms or biases).</summary>
    public double WeightDecay { get; init; }

    /// <summary>AdamW β1.</summary>
    public double AdamBeta1 { get; init; } = 0.9;

    /// <summary>AdamW β2.</summary>
    public double AdamBeta2 { get; init; } = 0.999;

    /// <summary>AdamW ε.</summary>
    public double AdamEpsilon { get; init; } = 1e-8;

    /// <summary>Global gradient-norm clip; 0 or less disables clipping.</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>Steps between metric records (and progress reports).</summary>
    public int LoggingSteps { get; init; } = 10;

    /// <summary>Steps between evaluations on the validation split; 0 evaluates only at the end.</summary>
    public int EvalSteps { get; init; }

    /// <summary>Evaluate once before the first step (<c>eval_on_start</c>), recorded as step 0: the baseline the run improves on.</summary>
    public bool EvalOnStart { get; init; }

    /// <summary>Steps between checkpoints; 0 saves only at the end (and on cancellation).</summary>
    public int SaveSteps { get; init; } = 500;

    /// <summary>Seed of the data order.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>bf16 compute with fp32 master weights (the model's activation dtype must then be bf16).</summary>
    public bool Bf16 { get; init; }

    /// <summary>Recompute each layer's activations in the backward pass instead of keeping them (transformers' gradient_checkpointing).</summary>
    public bool GradientCheckpointing { get; init; }

    /// <summary>A checkpoint folder to continue from exactly (weights, optimizer state, step, data position).</summary>
    public string? ResumeFromCheckpoint { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid value.</summary>
    public void Validate()
    {
        static void Require(bool ok, string name, string message)
        {
            if (!ok) throw new ArgumentException($"{name}: {message}", name);
        }
        Require(!string.IsNullOrWhiteSpace(OutputDir), nameof(OutputDir), "an output folder is required");
        Require(DataFiles is { Count: > 0 }, nameof(DataFiles), "at least one data file is required");
        Require(!string.IsNullOrEmpty(TextField), nameof(TextField), "the JSONL text field name is empty");
        Require(MaxLength >= 2, nameof(MaxLength), $"{MaxLength} is too short: a sequence needs at least 2 tokens (one input, one target)");
        Require(ValidationSplit >= 0 && ValidationSplit < 1, nameof(ValidationSplit), $"{ValidationSplit} is outside [0, 1)");
        Require(double.IsFinite(LearningRate) && LearningRate >= 0, nameof(LearningRate), $"{LearningRate} must be finite and ≥ 0");
        Require(MaxSteps > 0 || (double.IsFinite(NumTrainEpochs) && NumTrainEpochs > 0), nameof(NumTrainEpochs),
            $"{NumTrainEpochs} epochs and max_steps {MaxSteps}: one of them must be positive");
        Require(PerDeviceTrainBatchSize >= 1, nameof(PerDeviceTrainBatchSize), $"{PerDeviceTrainBatchSize} must be ≥ 1");
        Require(PerDeviceEvalBatchSize >= 1, nameof(PerDeviceEvalBatchSize), $"{PerDeviceEvalBatchSize} must be ≥ 1");
        Require(GradientAccumulationSteps >= 1, nameof(GradientAccumulationSteps), $"{GradientAccumulationSteps} must be ≥ 1");
        Require(WarmupSteps >= 0, nameof(WarmupSteps), $"{WarmupSteps} must be ≥ 0");
        Require(Enum.IsDefined(LrSchedulerType), nameof(LrSchedulerType), $"unknown schedule {LrSchedulerType}");
        Require(double.IsFinite(WeightDecay) && WeightDecay >= 0, nameof(WeightDecay), $"{WeightDecay} must be finite and ≥ 0");
        Require(AdamBeta1 >= 0 && AdamBeta1 < 1, nameof(AdamBeta1), $"{AdamBeta1} is outside [0, 1)");
        Require(AdamBeta2 >= 0 && AdamBeta2 < 1, nameof(AdamBeta2), $"{AdamBeta2} is outside [0, 1)");
        Require(AdamEpsilon > 0 && double.IsFinite(AdamEpsilon), nameof(AdamEpsilon), $"{AdamEpsilon} must be finite and > 0");
        Require(!double.IsNaN(MaxGradNorm), nameof(MaxGradNorm), "is NaN");
        Require(LoggingSteps >= 1, nameof(LoggingSteps), $"{LoggingSteps} must be ≥ 1");
        Require(EvalSteps >= 0, nameof(EvalSteps), $"{EvalSteps} must be ≥ 0");
        Require(SaveSteps >= 0, nameof(SaveSteps), $"{SaveSteps} must be ≥ 0");
    }
}
