using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Mamba.Compute.Cuda;
using Mamba.Generation;
using Mamba.Model;

namespace Mamba.Cli.Commands;

/// <summary>
/// `mamba bench`: prefill tokens/s, decode ms/token and tokens/s (greedy, argmax on the device), and peak
/// memory, for a model folder or a published shape with random weights. One cache per (batch, prompt) is reset
/// between rounds, as a server reuses its caches: the untimed warm-up round builds the per-cache fast decode step
/// (CUDA graph capture or fused-kernel plan), so the timed rounds measure steady-state steps. Prefill and decode run
/// through the generation core (<see cref="GenerationLoop"/>), as every generate method does. The decode path that
/// ran is reported (fused, graph, ops on CUDA; cpu).
/// </summary>
internal static class BenchCommand
{
    private sealed record Row(string Model, string Device, string DType, int Batch, int PromptTokens, int NewTokens, int ChunkTokens,
        double PrefillSeconds, double PrefillTokensPerSecond, double DecodeMsPerToken, double DecodeTokensPerSecond, long PeakBytes,
        long WeightBytes, long StateBytes, long WorkspaceBytes, string DecodePath);

    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Model folder to measure (default: --config with random weights)" };
        var config = new Option<string>("--config") { Description = "Published shape with random weights: 130m, 370m, 790m, 1.4b, 2.8b", DefaultValueFactory = _ => "130m" };
        var device = CommonOptions.Device("auto");
        var dtype = CommonOptions.DType();
        var threads = CommonOptions.Threads();
        var batches = new Option<string>("--batch") { Description = "Comma-separated batch sizes", DefaultValueFactory = _ => "1" };
        var prompts = new Option<string>("--prompt-tokens") { Description = "Comma-separated prompt lengths", DefaultValueFactory = _ => "512" };
        var newTokens = new Option<int>("--new-tokens") { Description = "Decode steps to time", DefaultValueFactory = _ => 128 };
        var repeat = new Option<int>("--repeat") { Description = "Timed repetitions (the median is reported)", DefaultValueFactory = _ => 3 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object per measurement" };
        var chunk = new Option<int>("--chunk") { Description = "Prefill chunk in tokens (0 = the whole prompt at once); memory stays that of one chunk", DefaultValueFactory = _ => 0 };
        var loraRank = new Option<int>("--lora-r") { Description = "With --train: LoRA of this rank on x_proj, embeddings, in_proj, out_proj (the base frozen) instead of full training", DefaultValueFactory = _ => 0 };
        var train = new Option<bool>("--train") { Description = "Measure training steps instead (forward + backward + AdamW; --batch and --prompt-tokens give the batch and sequence length), with and without activation recompute, peak memory, and the scan backward alone" };
        var command = new Command("bench", "Measure prefill and decode speed and peak memory, or (--train) training throughput.")
        {
            model, config, device, dtype, threads, batches, prompts, newTokens, repeat, json, chunk, train, loraRank,
        };
        command.SetAction(parse =>
        {
            using var backend = CommonOptions.CreateBackend(parse.GetValue(device)!, parse.GetValue(dtype)!, parse.GetValue(threads), out var activation);
            long beforeWeights = UsedBytes(backend);
            string name;
            MambaWeights weights;
            if (parse.GetValue(model) is { } dir)
            {
                weights = CheckpointLoader.LoadWeights(dir);
                name = Path.GetFileName(Path.TrimEndingDirectorySeparator(dir));
            }
            else
            {
                name = parse.GetValue(config)!;
                weights = MambaInitializer.Create(MambaConfig.Preset(name), seed: 1);
            }
            using var lm = new MambaForCausalLM(weights, backend, activation, adoptWeights: true);
            weights = null!; // the host copy is no longer needed on GPUs
            long weightBytes = UsedBytes(backend) - beforeWeights;
            int chunkTokens = parse.GetValue(chunk);
            bool asJson = parse.GetValue(json);
            if (parse.GetValue(train))
            {
                BenchTrainCommand.Run(lm, backend, activation, name, ParseList(parse.GetValue(batches)!), ParseList(parse.GetValue(prompts)!),
                    Math.Max(1, parse.GetValue(repeat)), asJson, parse.GetValue(loraRank));
                return 0;
            }
            if (!asJson)
            {
                Console.WriteLine($"model {name}: {lm.Config.Summary()}, {lm.ParameterCount:N0} parameters");
                Console.WriteLine($"backend {backend.Description}, activations {activation.ToShortName()}");
                Console.WriteLine($"{"batch",6} {"prompt",7} {"prefill s",10} {"prefill tok/s",14} {"decode ms/tok",14} {"decode tok/s",13} {"peak MiB",9} {"weights",8} {"state",7} {"workspace",9} {"path",6}");
            }
            var rng = new Random(7);
            int steps = parse.GetValue(newTokens), reps = Math.Max(1, parse.GetValue(repeat));
            foreach (var batch in ParseList(parse.GetValue(batches)!))
                foreach (var length in ParseList(parse.GetValue(prompts)!))
                {
                    var ids = new int[batch, length];
                    for (int b = 0; b < batch; b++)
                        for (int t = 0; t < length; t++) ids[b, t] = rng.Next(lm.Config.VocabSize);
                    var prefill = new List<double>();
                    var decode = new List<double>();
                    long baseline = UsedBytes(backend), peak = baseline;
                    using var cache = lm.CreateCache(batch);
                    long stateBytes = Math.Max(0, UsedBytes(backend) - baseline);
                    long fastBefore = 0, fusedBefore = 0;
                    // Greedy through the generation core with no eos: the prefill chooses token 1, then `steps` decode
                    // steps run (one forward each) and choose tokens 2 .. steps + 1; no row leaves the batch early.
                    var options = new GenerationOptions { MaxNewTokens = steps + 1 };
                    for (int r = 0; r < reps + 1; r++) // the first round warms up (JIT, cuBLAS heuristics, the cache's fast decode step)
                    {
                        cache.Reset();
                        if (r == 1)
                        {
                            fastBefore = lm.FastDecodeSteps;
                            fusedBefore = lm.FusedDecodeSteps;
                        }
                        using var loop = GenerationLoop.ForBatch(lm, ids, null, options, eosIds: [], cache, chunkTokens);
                        var clock = Stopwatch.StartNew();
                        loop.Prefill();
                        backend.Synchronize();
                        double tPrefill = clock.Elapsed.TotalSeconds;
                        peak = Math.Max(peak, UsedBytes(backend));
                        clock.Restart();
                        loop.Decode();
                        backend.Synchronize();
                        double tDecode = clock.Elapsed.TotalSeconds;
                        peak = Math.Max(peak, UsedBytes(backend));
                        if (r == 0) continue;
                        prefill.Add(tPrefill);
                        decode.Add(tDecode);
                    }
                    double p = Median(prefill), d = Median(decode);
                    bool device = backend is CudaBackend;
                    string path = !device ? "cpu" : lm.FusedDecodeSteps > fusedBefore ? "fused" : lm.FastDecodeSteps > fastBefore ? "graph" : "ops";
                    var row = new Row(name, backend.Kind.ToString().ToLowerInvariant(), activation.ToShortName(), batch, length, steps, chunkTokens,
                        p, batch * length / p, steps > 0 ? d * 1000 / steps : 0, steps > 0 ? batch * steps / d : 0, peak,
                        device ? weightBytes : 0, device ? stateBytes : 0, device ? Math.Max(0, peak - baseline - stateBytes) : 0, path);
                    if (asJson) Console.WriteLine(JsonSerializer.Serialize(row, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
                    else Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{batch,6} {length,7} {p,10:F4} {row.PrefillTokensPerSecond,14:N0} {row.DecodeMsPerToken,14:F3} {row.DecodeTokensPerSecond,13:N0} {peak / 1048576.0,9:F0} {Mib(row.WeightBytes),8} {Mib(row.StateBytes),7} {Mib(row.WorkspaceBytes),9} {path,6}"));
                }
            return 0;
        });
        return command;
    }

    /// <summary>Device memory in use (CUDA; weights, state and workspace columns come from its differences) or the process's peak working set (CPU).</summary>
    private static long UsedBytes(Mamba.Compute.IMambaBackend backend)
    {
        if (backend is CudaBackend cuda)
        {
            var (free, total) = cuda.MemoryInfo();
            return total - free;
        }
        return Process.GetCurrentProcess().PeakWorkingSet64;
    }

    private static string Mib(long bytes) => bytes > 0 ? (bytes / 1048576.0).ToString("F1", CultureInfo.InvariantCulture) : "-";

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }

    private static int[] ParseList(string text) =>
        text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
}
