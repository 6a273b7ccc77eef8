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
        int number = 0;
        foreach (var line in File.ReadLines(metricsPath))
        {
            number++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                if (JsonNode.Parse(line) is not JsonObject record || !TryNumber(record["step"], out double step))
                    throw new MambaFormatException("expected an object with a numeric \"step\"");
                if (TryNumber(record["loss"], out double loss)) train.Add((step, loss));
                if (TryNumber(record["eval_loss"], out double evalLoss)) eval.Add((step, evalLoss));
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or MambaFormatException)
            {
                throw new MambaFormatException($"line {number} is not a metrics record of mamba train ({e.Message})", metricsPath, inner: e);
            }
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

    private static bool TryNumber(JsonNode? node, out double value)
    {
        value = 0;
        return node is JsonValue v && v.TryGetValue(out value);
    }
}
