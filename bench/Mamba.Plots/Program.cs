using System.Globalization;
using System.Text.Json;
using ScottPlot;

// Usage: Mamba.Plots <out-dir> <bench.jsonl>...   (lines from `mamba bench --json`; other lines are skipped)
// Writes tokens-vs-batch.png (prefill and decode tokens/s against batch size, per prompt length and dtype) and
// tokens-vs-length.png (prefill tokens/s and peak memory against prompt length, per batch and dtype).
if (args.Length < 2)
{
    Console.Error.WriteLine("usage: Mamba.Plots <out-dir> <bench.jsonl>...");
    return 2;
}
var rows = new List<JsonElement>();
foreach (var file in args.Skip(1))
    foreach (var line in File.ReadLines(file))
        if (line.TrimStart().StartsWith('{'))
            rows.Add(JsonDocument.Parse(line).RootElement.Clone());
Directory.CreateDirectory(args[0]);
string Label(JsonElement r, string extra) => $"{r.GetProperty("model").GetString()} {r.GetProperty("device").GetString()} {r.GetProperty("d_type").GetString()} {extra}";
int Int(JsonElement r, string key) => r.GetProperty(key).GetInt32();
double Num(JsonElement r, string key) => r.GetProperty(key).GetDouble();

var byBatch = new Plot();
foreach (var group in rows.GroupBy(r => Label(r, $"L={Int(r, "prompt_tokens")}")))
{
    var points = group.OrderBy(r => Int(r, "batch")).ToArray();
    if (points.Length < 2) continue;
    var xs = points.Select(r => Math.Log2(Int(r, "batch"))).ToArray();
    var prefill = byBatch.Add.Scatter(xs, points.Select(r => Math.Log10(Num(r, "prefill_tokens_per_second"))).ToArray());
    prefill.LegendText = "prefill " + group.Key;
    var decode = byBatch.Add.Scatter(xs, points.Select(r => Math.Log10(Num(r, "decode_tokens_per_second"))).ToArray());
    decode.LegendText = "decode " + group.Key;
    decode.LinePattern = LinePattern.Dashed;
}
byBatch.Title("Mamba for .NET: tokens/s against batch size");
byBatch.XLabel("log2(batch)");
byBatch.YLabel("log10(tokens/s)");
byBatch.ShowLegend(Alignment.UpperLeft);
byBatch.SavePng(Path.Combine(args[0], "tokens-vs-batch.png"), 1000, 650);

var byLength = new Plot();
foreach (var group in rows.Where(r => r.TryGetProperty("chunk_tokens", out var c) && c.GetInt32() > 0)
             .GroupBy(r => Label(r, $"B={Int(r, "batch")} chunk={Int(r, "chunk_tokens")}")))
{
    var points = group.OrderBy(r => Int(r, "prompt_tokens")).ToArray();
    if (points.Length < 2) continue;
    var xs = points.Select(r => Math.Log2(Int(r, "prompt_tokens"))).ToArray();
    var prefill = byLength.Add.Scatter(xs, points.Select(r => Num(r, "prefill_tokens_per_second")).ToArray());
    prefill.LegendText = "prefill tokens/s " + group.Key;
    var memory = byLength.Add.Scatter(xs, points.Select(r => Num(r, "peak_bytes") / 1048576.0).ToArray());
    memory.LegendText = "peak MiB " + group.Key;
    memory.Axes.YAxis = byLength.Axes.Right;
    memory.LinePattern = LinePattern.Dotted;
}
byLength.Title("Mamba for .NET: prefill speed and peak memory against prompt length (chunked prefill)");
byLength.XLabel("log2(prompt tokens)");
byLength.YLabel("tokens/s");
byLength.Axes.Right.Label.Text = "peak device MiB";
byLength.ShowLegend(Alignment.LowerLeft);
// From zero: flat memory and linear time should look flat, not be magnified by auto-scaling.
var chunkedRows = rows.Where(r => r.TryGetProperty("chunk_tokens", out var c) && c.GetInt32() > 0).ToArray();
if (chunkedRows.Length > 0)
{
    byLength.Axes.AutoScale();
    byLength.Axes.SetLimitsY(0, chunkedRows.Max(r => Num(r, "prefill_tokens_per_second")) * 1.15, byLength.Axes.Left);
    byLength.Axes.SetLimitsY(0, chunkedRows.Max(r => Num(r, "peak_bytes")) / 1048576.0 * 1.15, byLength.Axes.Right);
}
byLength.SavePng(Path.Combine(args[0], "tokens-vs-length.png"), 1000, 650);
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{rows.Count} measurements -> {args[0]}/tokens-vs-batch.png, tokens-vs-length.png"));
return 0;
