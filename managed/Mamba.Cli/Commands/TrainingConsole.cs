using Mamba.Training;
using Microsoft.Extensions.Logging;
using Spectre.Console;

namespace Mamba.Cli.Commands;

/// <summary>How `mamba train` and `mamba finetune` run a trainer on the console: progress, Ctrl+C, summary, loss curve.</summary>
internal static class TrainingConsole
{
    /// <summary>Trains to the end (Ctrl+C saves a checkpoint and stops), prints the summary and writes loss_curve.png.</summary>
    public static void Execute(MambaTrainer trainer, string whatWasSaved)
    {
        var options = trainer.Options;
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
            Console.WriteLine($"{whatWasSaved}: {options.OutputDir}");
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
            var png = Path.Combine(options.OutputDir, "loss_curve.png");
            // The plot is a convenience: a missing native drawing library (SkiaSharp) or an unreadable metrics line
            // must not turn a finished, saved run into a failure.
            try
            {
                if (LossCurvePlot.Write(Path.Combine(options.OutputDir, "metrics.jsonl"), png)) Console.Error.WriteLine($"loss curve: {png}");
            }
            catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or BadImageFormatException or IOException or UnauthorizedAccessException or MambaFormatException or InvalidOperationException)
            {
                Console.Error.WriteLine($"warning: loss curve not drawn ({e.GetType().Name}: {e.Message}); the metrics are in metrics.jsonl");
            }
        }
    }

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
    internal sealed class StderrLogger : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel)) Console.Error.WriteLine($"{logLevel.ToString().ToLowerInvariant()}: {formatter(state, exception)}");
        }
    }
}
