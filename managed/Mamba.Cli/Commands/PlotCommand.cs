using System.CommandLine;

namespace Mamba.Cli.Commands;

/// <summary>
/// `mamba plot`: draws the loss curve of a training run from its metrics.jsonl, the PNG that `train` and `finetune`
/// write at the end; for runs on a machine without the native drawing library, or to redraw after the fact.
/// </summary>
internal static class PlotCommand
{
    public static Command Create()
    {
        var run = new Argument<string>("run") { Description = "A training output folder (its metrics.jsonl) or a metrics.jsonl file" };
        var output = new Option<string?>("--out") { Description = "PNG to write (default: loss_curve.png beside the metrics)" };
        var command = new Command("plot", "Draw the training and validation loss of a run (metrics.jsonl) as a PNG.") { run, output };
        command.SetAction(parse =>
        {
            string path = parse.GetValue(run)!;
            string metrics = Directory.Exists(path) ? Path.Combine(path, "metrics.jsonl") : path;
            if (!File.Exists(metrics)) throw new FileNotFoundException($"no metrics file: {metrics}", metrics);
            string png = parse.GetValue(output) ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(metrics))!, "loss_curve.png");
            if (!LossCurvePlot.Write(metrics, png)) throw new InvalidOperationException($"{metrics} holds no loss values to draw");
            Console.WriteLine($"loss curve: {png}");
            return 0;
        });
        return command;
    }
}
