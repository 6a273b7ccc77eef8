using System.Text.Json.Nodes;

namespace Mamba.Cli.Commands;

/// <summary>Draws the training (and evaluation) loss of a metrics.jsonl as a PNG with ScottPlot.</summary>
internal static class LossCurvePlot
{
    /// <summary>Writes <paramref name="pngPath"/> from <paramref name="metricsPath"/>; false when there is nothing to draw.</summary>
    public static bool Write(string metricsPath, string pngPath)
    {
        if (!File.Exists(metricsPath)) return false;
        var train = new List<(double Step, double Loss)>();
        var eval = new List<(double Step, double Loss)>();
        foreach (var line in File.ReadLines(metricsPath))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            var record = JsonNode.Parse(line)!.AsObject();
            double step = record["step"]!.GetValue<double>();
            if (record["loss"] is JsonValue loss) train.Add((step, loss.GetValue<double>()));
            if (record["eval_loss"] is JsonValue evalLoss) eval.Add((step, evalLoss.GetValue<double>()));
        }
        if (train.Count == 0 && eval.Count == 0) return false;
        var plot = new ScottPlot.Plot();
        if (train.Count > 0)
        {
            var line = plot.Add.Scatter(train.Select(p => p.Step).ToArray(), train.Select(p => p.Loss).ToArray());
            line.LegendText = "training loss";
        }
        if (eval.Count > 0)
        {
            var line = plot.Add.Scatter(eval.Select(p => p.Step).ToArray(), eval.Select(p => p.Loss).ToArray());
            line.LegendText = "validation loss";
        }
        plot.Title("mamba train");
        plot.XLabel("step");
        plot.YLabel("cross-entropy (nats)");
        plot.ShowLegend();
        plot.SavePng(pngPath, 900, 540);
        return true;
    }
}
