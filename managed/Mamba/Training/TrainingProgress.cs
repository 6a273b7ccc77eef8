namespace Mamba.Training;

/// <summary>What happened in one reported step of a training run (see <see cref="MambaTrainer"/>).</summary>
public sealed record TrainingProgress
{
    /// <summary>Optimizer steps done (skipped steps included: they consumed their data).</summary>
    public required int Step { get; init; }

    /// <summary>Steps the run will take.</summary>
    public required int TotalSteps { get; init; }

    /// <summary>Fractional epoch: sequences consumed / training sequences.</summary>
    public required double Epoch { get; init; }

    /// <summary>Mean cross-entropy over the counted targets of this step (NaN or ∞ on a skipped step).</summary>
    public required double Loss { get; init; }

    /// <summary>The learning rate this step used.</summary>
    public required double LearningRate { get; init; }

    /// <summary>Global gradient norm before clipping.</summary>
    public required double GradNorm { get; init; }

    /// <summary>Training tokens per second since the run (or resume) started.</summary>
    public required double TokensPerSecond { get; init; }

    /// <summary>Estimated time to the last step.</summary>
    public required TimeSpan EstimatedRemaining { get; init; }

    /// <summary>Mean validation loss when this step evaluated; otherwise null.</summary>
    public double? EvalLoss { get; init; }

    /// <summary>exp(<see cref="EvalLoss"/>) when this step evaluated.</summary>
    public double? EvalPerplexity => EvalLoss is { } l ? Math.Exp(l) : null;

    /// <summary>True when a non-finite loss or gradient made the step skip its update.</summary>
    public bool Skipped { get; init; }

    /// <summary>Steps skipped so far in this run.</summary>
    public int SkippedSteps { get; init; }

    /// <summary>The checkpoint folder written at this step, when one was.</summary>
    public string? CheckpointPath { get; init; }
}
