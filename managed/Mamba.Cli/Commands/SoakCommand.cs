using System.CommandLine;
using System.Diagnostics;
using Mamba.Compute;
using Mamba.Compute.Cuda;
using Mamba.Generation;
using Mamba.Lora;
using Mamba.Model;

namespace Mamba.Cli.Commands;

/// <summary>
/// `mamba soak`: a long mixed workload on one loaded model — batches of several sizes, streaming, cancelled
/// generations, sessions forked and restored, a LoRA adapter switched on and off per request — where every output must
/// equal a reference computed first, one prompt at a time, and device memory must stay flat; on CUDA then an
/// out-of-memory phase (SoakCommand.Oom.cs: injected allocation failures, then a real out-of-memory under ballast), after
/// which the model must still give the references and memory return to the baseline; then load/generate/dispose cycles
/// whose memory must return to where it started. Exit 1 on any mismatch or memory growth.
/// </summary>
internal static partial class SoakCommand
{
    private static readonly string[] Prompts =
        ["The Mamba architecture", "Once upon a time", "Hello", "The president said that", "A wise man once said", "In the beginning God created"];

    public static Command Create()
    {
        var model = ModelOptions.Model();
        var device = CommonOptions.Device("auto");
        var dtype = CommonOptions.DType();
        var threads = CommonOptions.Threads();
        var seconds = new Option<double>("--seconds") { Description = "How long the mixed workload runs", DefaultValueFactory = _ => 600 };
        var cycles = new Option<int>("--cycles") { Description = "Load/generate/dispose cycles after the workload", DefaultValueFactory = _ => 0 };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens per generation", DefaultValueFactory = _ => 16 };
        var seed = new Option<int>("--seed") { Description = "Seed of the workload's choices and of the test adapter", DefaultValueFactory = _ => 1 };
        var tie = new Option<double?>("--tie-tolerance") { Description = "CUDA batches, as a fraction of the largest |logit|: how far a batch row's prompt logits may move from the prompt alone, and how close two tokens' logits must be for a batch row to leave its one-prompt reference (default 1e-3 in f32, 2e-2 in 16-bit)" };
        var growth = new Option<double>("--max-growth-mib") { Description = "Device memory growth over the warmed-up baseline that fails the run", DefaultValueFactory = _ => 64 };
        var oom = new Option<bool>("--oom")
        {
            Description = "After the workload on CUDA: injected allocation failures, then a real out-of-memory (--oom false skips it)",
            DefaultValueFactory = _ => true,
        };
        var command = new Command("soak", "Soak test: a mixed generation workload against reference outputs, with memory tracking, out-of-memory recovery on CUDA, then load/dispose cycles.")
        {
            model, device, dtype, threads, seconds, cycles, maxNew, seed, growth, tie, oom,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var dir = parse.GetValue(model) ?? ModelOptions.DefaultModelDirectory;
            string deviceText = parse.GetValue(device)!, dtypeText = parse.GetValue(dtype)!;
            int threadCount = parse.GetValue(threads), newTokens = parse.GetValue(maxNew);
            var rng = new Random(parse.GetValue(seed));
            var lm = ModelOptions.Load(dir, deviceText, dtypeText, threadCount);
            // Device memory is read through a context of its own, made once (cudaMemGetInfo is device-wide).
            using var probe = lm.Backend.Kind == BackendKind.Cuda ? CudaBackend.Create(0, DType.F32) : null;
            long Used() => UsedBytes(probe);
            try
            {
            var options = lm.DefaultGenerationOptions with { MaxNewTokens = newTokens, MinNewTokens = 0, DoSample = false, StopSequences = [] };

            // A test adapter whose B is not zero (uniform in ±1), so that switching it changes the outputs clearly: on the
            // default model it moves each prompt's last logits by 0.67–1.24 of their largest |logit|, far above the CUDA
            // batch check's tolerance. Not stronger: with B in ±3 the model turns chaotic, and a perturbation of B by half
            // a bf16 ulp moved the logits by up to 0.81 of their scale within 16 tokens (in ±1: at most 0.011, not
            // growing), so the GEMV/cuBLAS rounding difference became other tokens. Measured on the CPU in f32 with
            // bench/SoakAdapterSensitivity.
            var loraConfig = new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["in_proj", "x_proj", "embeddings"] };
            var init = LoraAdapter.CreateInitialized(loraConfig, lm.Config, parse.GetValue(seed));
            var adapterRng = new Random(parse.GetValue(seed) + 1);
            var adapter = new LoraAdapter(loraConfig, init.Modules.ToDictionary(kv => kv.Key, kv => new LoraModuleWeights(kv.Value.A,
                new HostTensor(kv.Value.B.Data.Select(_ => (float)(adapterRng.NextDouble() - 0.5) * 2f).ToArray(), kv.Value.B.Shape))));
            lm.Network.LoadAdapter(adapter, "soak");

            // References: each prompt alone, with and without the adapter.
            var reference = new Dictionary<(int, bool), (IReadOnlyList<int> Ids, string Text)>();
            for (int i = 0; i < Prompts.Length; i++)
                foreach (bool withAdapter in new[] { false, true })
                {
                    var r = await lm.GenerateAsync(Prompts[i], options with { Adapter = withAdapter ? "soak" : null }, cancellationToken);
                    reference[(i, withAdapter)] = (r.OutputIds, r.Text);
                }

            // On the CPU a row's bits do not depend on the batch (every GEMM row is summed the same way), so a batch row
            // must equal its prompt's one-at-a-time reference. On CUDA they may: one row runs the GEMV kernel and several
            // rows cuBLAS, which sums in another order, so a near tie can pick another token. There each batch
            // composition's first run is its reference (a repeat must give the same bits), and a row of a first run may
            // differ from the one-prompt reference only where that reference's logits hold the two tokens within the tie
            // tolerance (at the first token that differs). Both are measured on the position's logit scale (the largest
            // |logit|), like the prefill drift: each first run's prompts run once more as that batch and alone, and the
            // row's logits may differ by no more than the tolerance (the GEMV and cuBLAS roundings differed by 1.4 % of it in
            // bf16 with the earlier ±3 test adapter, measured on an H100; the test adapter moves the prompt logits by far
            // more, so a row run with the wrong adapter state cannot pass).
            bool rowInvariant = lm.Backend.Kind == BackendKind.Cpu;
            var batchReference = new Dictionary<string, IReadOnlyList<int>[]>();
            int batchRowsCompared = 0, batchRowsAtTies = 0;
            double largestTieGap = 0;
            double tieTolerance = parse.GetValue(tie) ?? (lm.Network.ActivationDType == DType.F32 ? 1e-3 : 2e-2);
            // The first token where `got` leaves `expected`, and the logits of the prompt with the reference's tokens before
            // it, run alone (teacher-forced); null when one of them stopped early.
            float[]? Divergence(int prompt, bool withAdapter, IReadOnlyList<int> expected, IReadOnlyList<int> got, out int position)
            {
                position = 0;
                while (position < expected.Count && position < got.Count && expected[position] == got[position]) position++;
                if (position >= expected.Count || position >= got.Count) return null;
                return LastLogits([lm.Encode(Prompts[prompt]).Concat(expected.Take(position)).ToArray()], withAdapter)[0];
            }
            // logit(a) − logit(b) on the position's logit scale (its largest |logit|, as the drift below).
            static double Gap(float[] logits, int a, int b) => (logits[a] - logits[b]) / LogitScale(logits);
            // Last-position logits of several token sequences run as one left-padded batch (the batch prefill path),
            // or of one sequence alone: comparing the two measures how far a row's numbers move with its batch, apart
            // from any token choice (teacher forcing).
            float[][] LastLogits(IReadOnlyList<IReadOnlyList<int>> sequences, bool withAdapter)
            {
                int n = sequences.Count, width = sequences.Max(x => x.Count), vocab = lm.Config.VocabSize;
                var ids = new int[n, width];
                var mask = new int[n, width];
                for (int j = 0; j < n; j++)
                    for (int t = 0; t < sequences[j].Count; t++)
                    {
                        ids[j, width - sequences[j].Count + t] = sequences[j][t];
                        mask[j, width - sequences[j].Count + t] = 1;
                    }
                var adapterOnDevice = withAdapter ? lm.Network.Adapters.Single(a => a.Name == "soak") : null;
                var data = lm.Network.Forward(ids, new ForwardOptions { LogitsToKeep = 1, AttentionMask = mask, Adapter = adapterOnDevice }).Logits.Data;
                return Enumerable.Range(0, n).Select(j => data.AsSpan(j * vocab, vocab).ToArray()).ToArray();
            }
            static double LogitScale(ReadOnlySpan<float> l)
            {
                double scale = 1e-30;
                foreach (var v in l) scale = Math.Max(scale, Math.Abs(v));
                return scale;
            }
            // max |a − b| / max |b|: the relative drift of one row's logits.
            static double Drift(float[] a, float[] b)
            {
                double diff = 0;
                for (int v = 0; v < b.Length; v++) diff = Math.Max(diff, Math.Abs(a[v] - b[v]));
                return diff / LogitScale(b);
            }
            var aloneLogits = new Dictionary<(int, bool), float[]>();
            double largestPrefillDrift = 0;
            string largestPrefillDriftAt = "";
            // For a row that left its reference: the same batch run again as one prefill over each row's prompt and its
            // generated tokens before `position` (the failing row's tokens equal its reference's there), against the row
            // alone (`alone`, the same prefix); their gaps between the two tokens and the drift of the row's logits.
            string TeacherForced(int[] rows, IReadOnlyList<int>[] generated, int row, bool withAdapter, float[] alone, int expectedToken, int position)
            {
                var sequences = rows.Select((r, j) => (IReadOnlyList<int>)lm.Encode(Prompts[r]).Concat(generated[j].Take(position)).ToArray()).ToArray();
                var batchLogits = LastLogits(sequences, withAdapter)[row];
                int g = generated[row][position];
                return $"teacher-forced at that token, the batch prefers the reference's token by {Gap(batchLogits, expectedToken, g):G3}, the prompt alone by "
                    + $"{Gap(alone, expectedToken, g):G3}; the row's logits drift {Drift(batchLogits, alone):G3} of their scale";
            }
            string[] names = ["batch", "streaming", "cancelled", "session", "adapter switch"];
            var runs = new int[names.Length];
            var failures = new List<string>();
            void Expect(bool ok, string what)
            {
                if (!ok && failures.Count < 20) failures.Add(what);
            }
            long? baseline = null;
            long maxUsed = 0;
            var clock = Stopwatch.StartNew();
            double limit = parse.GetValue(seconds);
            int iteration = 0;
            while (clock.Elapsed.TotalSeconds < limit || iteration < names.Length * 2)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int scenario = iteration < names.Length * 2 ? iteration % names.Length : rng.Next(names.Length); // every scenario warms up twice first
                bool withAdapter = rng.Next(2) == 1;
                var o = options with { Adapter = withAdapter ? "soak" : null };
                int p = rng.Next(Prompts.Length);
                switch (scenario)
                {
                    case 0:
                    {
                        var rows = Enumerable.Range(0, 1 + rng.Next(Prompts.Length)).Select(_ => rng.Next(Prompts.Length)).ToArray();
                        var results = await lm.GenerateBatchAsync(rows.Select(i => Prompts[i]).ToArray(), o, cancellationToken);
                        var ids = results.Select(r => (IReadOnlyList<int>)r.OutputIds).ToArray();
                        string key = string.Join(',', rows) + (withAdapter ? "+adapter" : "");
                        bool firstRun = !batchReference.TryGetValue(key, out var first);
                        if (firstRun)
                        {
                            batchReference[key] = ids;
                            // The prompts' prefill as this batch against each prompt alone, before any token is chosen
                            // (0 on the CPU, whose rows do not depend on the batch).
                            var prefill = LastLogits(rows.Select(r => lm.Encode(Prompts[r])).ToArray(), withAdapter);
                            for (int j = 0; j < rows.Length; j++)
                            {
                                if (!aloneLogits.TryGetValue((rows[j], withAdapter), out var alone))
                                    aloneLogits[(rows[j], withAdapter)] = alone = LastLogits([lm.Encode(Prompts[rows[j]])], withAdapter)[0];
                                double drift = Drift(prefill[j], alone);
                                if (drift > largestPrefillDrift) (largestPrefillDrift, largestPrefillDriftAt) = (drift, $"[{key}] row {j}");
                                // A row that padding, the mask or the adapter treats wrongly moves by far more (see above).
                                Expect(drift <= tieTolerance, $"batch [{key}], row {j} ('{Prompts[rows[j]]}'): the prompt's logits as this batch differ from the prompt alone by {drift:G3} of their scale (tolerance {tieTolerance:G3})");
                            }
                        }
                        if (rowInvariant)
                        {
                            for (int j = 0; j < rows.Length; j++)
                                Expect(ids[j].SequenceEqual(reference[(rows[j], withAdapter)].Ids), $"batch of {rows.Length}, row {j} ('{Prompts[rows[j]]}', adapter {withAdapter})");
                        }
                        else if (!firstRun)
                        {
                            // The first run of a batch composition is its reference; every later run must repeat it.
                            for (int j = 0; j < rows.Length; j++)
                                Expect(ids[j].SequenceEqual(first![j]), $"batch [{key}], row {j} ('{Prompts[rows[j]]}') differs from that batch's first run");
                        }
                        else
                        {
                            for (int j = 0; j < rows.Length; j++)
                            {
                                batchRowsCompared++;
                                var expected = reference[(rows[j], withAdapter)].Ids;
                                if (ids[j].SequenceEqual(expected)) continue;
                                var alone = Divergence(rows[j], withAdapter, expected, ids[j], out int position);
                                double gap = alone is null ? double.PositiveInfinity : Math.Abs(Gap(alone, expected[position], ids[j][position]));
                                if (gap <= tieTolerance)
                                {
                                    batchRowsAtTies++;
                                    largestTieGap = Math.Max(largestTieGap, gap);
                                }
                                else
                                    Expect(false, alone is null
                                        ? $"batch [{key}], row {j} ('{Prompts[rows[j]]}') stops at another length than its one-prompt reference"
                                        : $"batch [{key}], row {j} ('{Prompts[rows[j]]}') differs from its one-prompt reference at token {position}, where the logits are {gap:G3} apart "
                                            + $"(of their scale; a near tie is ≤ {tieTolerance:G3}); {TeacherForced(rows, ids, j, withAdapter, alone, expected[position], position)}");
                            }
                        }
                        break;
                    }
                    case 1:
                    {
                        var text = new System.Text.StringBuilder();
                        await foreach (var piece in lm.GenerateStreamingAsync(Prompts[p], o, cancellationToken)) text.Append(piece);
                        Expect(text.ToString() == reference[(p, withAdapter)].Text, $"streaming '{Prompts[p]}' (adapter {withAdapter})");
                        break;
                    }
                    case 2:
                    {
                        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                        int pieces = 0, stopAfter = 1 + rng.Next(3);
                        bool cancelled = false;
                        try
                        {
                            await foreach (var _ in lm.GenerateStreamingAsync(Prompts[p], o, cts.Token))
                                if (++pieces == stopAfter) cts.Cancel();
                        }
                        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                        {
                            cancelled = true;
                        }
                        // No piece after the cancellation; a generation that ended by itself on that very piece has nothing left to stop.
                        Expect(pieces <= stopAfter, $"cancelling '{Prompts[p]}' after {stopAfter} pieces did not stop it ({pieces} pieces{(cancelled ? ", then cancelled" : "")})");
                        var after = await lm.GenerateAsync(Prompts[p], o, cancellationToken);
                        Expect(after.OutputIds.SequenceEqual(reference[(p, withAdapter)].Ids), $"generation after a cancelled one ('{Prompts[p]}')");
                        break;
                    }
                    case 3:
                    {
                        using var session = lm.CreateSession();
                        session.Append(Prompts[p]);
                        var saved = session.SaveState();
                        using var fork = session.Fork();
                        var next = lm.Encode(" and then");
                        var a = session.Append(next).ToArray();
                        var b = fork.Append(next).ToArray();
                        Expect(a.SequenceEqual(b), $"session fork of '{Prompts[p]}'");
                        session.RestoreState(saved);
                        Expect(session.Append(next).ToArray().SequenceEqual(a), $"session restore of '{Prompts[p]}'");
                        break;
                    }
                    default:
                    {
                        foreach (bool on in new[] { withAdapter, !withAdapter })
                        {
                            var r = await lm.GenerateAsync(Prompts[p], options with { Adapter = on ? "soak" : null }, cancellationToken);
                            Expect(r.OutputIds.SequenceEqual(reference[(p, on)].Ids), $"adapter {(on ? "on" : "off")} for '{Prompts[p]}'");
                        }
                        break;
                    }
                }
                runs[scenario]++;
                iteration++;
                if (iteration == names.Length * 2) baseline = Used();
                if (baseline is not null && iteration % 5 == 0) maxUsed = Math.Max(maxUsed, Used());
            }
            long end = Used();
            long start = baseline ?? end;
            maxUsed = Math.Max(maxUsed, end);
            double growthMiB = (maxUsed - start) / 1048576.0;
            Console.WriteLine($"soak: {iteration} iterations in {clock.Elapsed.TotalSeconds:F0} s on {lm.Backend.Kind} ({string.Join(", ", names.Select((n, i) => $"{n} {runs[i]}"))})");
            string drifted = $"prompt prefill as a batch against alone: largest logit drift {largestPrefillDrift:G3} of the scale{(largestPrefillDriftAt.Length > 0 ? $" ({largestPrefillDriftAt})" : "")}";
            Console.WriteLine(rowInvariant
                ? $"batches: {batchReference.Count} compositions, every row equal to its one-prompt reference; {drifted}"
                : $"batches: {batchReference.Count} compositions, each checked on its repeats; of their first runs' {batchRowsCompared} rows, "
                    + $"{batchRowsAtTies} differ from the one-prompt reference at a near tie (largest logit gap {largestTieGap:G3} of the scale, tolerance {tieTolerance:G3}); {drifted}");
            Console.WriteLine($"memory ({MemoryWhat(lm)}): baseline {start / 1048576.0:F1} MiB, max {maxUsed / 1048576.0:F1} MiB, end {end / 1048576.0:F1} MiB, growth {growthMiB:F1} MiB");

            bool oomOk = true;
            if (!parse.GetValue(oom))
                Console.WriteLine("oom: skipped (--oom false)");
            else if (probe is null)
                Console.WriteLine($"oom: skipped (the {lm.Backend.Kind} backend has no device allocations to fail)");
            else
            {
                var (lines, memoryOk) = await OomPhase(lm, probe, options, reference, Expect, Used, start, parse.GetValue(growth), cancellationToken);
                foreach (var line in lines) Console.WriteLine(line);
                oomOk = memoryOk;
            }
            Console.WriteLine($"mismatches: {failures.Count}");
            foreach (var f in failures) Console.WriteLine($"  {f}");

            bool ok = failures.Count == 0 && growthMiB <= parse.GetValue(growth) && oomOk;
            int cycleCount = parse.GetValue(cycles);
            if (cycleCount > 0)
            {
                lm.Dispose();
                long initial = Used();
                // The first cycle warms what a process keeps once (array pools, JIT); the baseline is taken after it.
                await Cycle(dir, CommonOptions.ModelOptionsFor(deviceText, dtypeText, threadCount), Prompts[0], cancellationToken);
                long before = Used();
                long maxCycle = before;
                for (int c = 1; c < cycleCount; c++)
                {
                    await Cycle(dir, CommonOptions.ModelOptionsFor(deviceText, dtypeText, threadCount), Prompts[c % Prompts.Length], cancellationToken);
                    maxCycle = Math.Max(maxCycle, Used());
                }
                long after = Used();
                double leak = (after - before) / 1048576.0;
                Console.WriteLine($"cycles: {cycleCount} load/generate/dispose; memory with the model disposed {initial / 1048576.0:F1} MiB, after the first cycle {before / 1048576.0:F1} MiB, "
                    + $"after the last {after / 1048576.0:F1} MiB (max {maxCycle / 1048576.0:F1}): change over the last {cycleCount - 1} cycles {leak:F1} MiB");
                ok &= leak <= parse.GetValue(growth);
            }
            Console.WriteLine(ok ? "PASS" : "FAIL");
            return ok ? 0 : 1;
            }
            finally
            {
                lm.Dispose();
            }
        });
        return command;
    }

    /// <summary>One load/generate/dispose cycle, in its own method so no reference to the model outlives it.</summary>
    private static async Task Cycle(string dir, Mamba.MambaModelOptions options, string prompt, CancellationToken cancellationToken)
    {
        using var m = Mamba.MambaModel.Load(dir, options);
        _ = await m.GenerateAsync(prompt, m.DefaultGenerationOptions with { MaxNewTokens = 4 }, cancellationToken);
    }

    private static string MemoryWhat(Mamba.MambaModel model) =>
        model.Backend.Kind == BackendKind.Cuda ? "device, cudaMemGetInfo" : "managed heap after a full collection";

    /// <summary>Device memory in use (CUDA, through <paramref name="probe"/>), else the managed heap after a full collection (the CPU backend's tensors are managed arrays).</summary>
    private static long UsedBytes(CudaBackend? probe)
    {
        if (probe is not null)
        {
            var (free, total) = probe.MemoryInfo();
            return total - free;
        }
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return GC.GetTotalMemory(forceFullCollection: true);
    }
}
