using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Mamba.Compute;
using Mamba.Compute.Cuda;
using Mamba.Model;

namespace Mamba.Cli.Commands;

/// <summary>
/// `mamba bench --train`: training throughput of whole optimizer steps (forward, backward with the fused lm_head +
/// cross-entropy, global gradient norm, AdamW on fp32 master weights writing the compute-dtype parameters), with and
/// without activation recompute; peak device memory of a step; and the selective-scan backward alone at the model's
/// shape (median of the timed runs).
/// </summary>
internal static class BenchTrainCommand
{
    private sealed record Row(string Model, string Device, string DType, int Batch, int Length, bool Recompute, double StepSeconds,
        double TokensPerSecond, double ForwardBackwardSeconds, double OptimizerSeconds, double PeakMiB, double ScanBackwardMicroseconds);

    /// <summary>
    /// Full training (every parameter, <paramref name="loraRank"/> 0) or LoRA (rank r on x_proj, embeddings, in_proj and
    /// out_proj, the documentation's targets; the base frozen), timed over whole optimizer steps.
    /// </summary>
    public static void Run(MambaForCausalLM lm, IMambaBackend backend, DType activation, string name, IEnumerable<int> batches, IEnumerable<int> lengths,
        int repeat, bool asJson, int loraRank = 0)
    {
        Mamba.Lora.LoadedLoraAdapter? adapter = null;
        ITrainableModel model = lm;
        IReadOnlyList<float[]> initial;
        if (loraRank > 0)
        {
            var config = new Mamba.Lora.LoraConfig { R = loraRank, LoraAlpha = loraRank, TargetModules = FinetuneCommand.DefaultTargets };
            var init = Mamba.Lora.LoraAdapter.CreateInitialized(config, lm.Config, 1);
            adapter = lm.LoadAdapter(init, "bench");
            var lora = new Mamba.Training.LoraTrainingModel(lm, adapter, init);
            (model, initial) = (lora, lora.InitialValues);
            name += $" + LoRA r {loraRank} on [{string.Join(", ", config.TargetModules)}] ({adapter.ParameterCount:N0} trainable)";
        }
        else
        {
            initial = MambaParameterTable.Entries(lm.Config).Select(entry =>
            {
                var host = new float[entry.ElementCount];
                backend.Download(lm.Parameters[entry.Key], host);
                if (entry.Spec.Form == ParameterForm.NegExp)
                    for (int j = 0; j < host.Length; j++) host[j] = MathF.Log(-host[j]);
                return host;
            }).ToArray();
        }
        var tensors = model.TrainableTensors;
        // fp32 master weights and AdamW moments, as the trainer keeps them.
        var masters = tensors.Select((t, i) => (Master: backend.Upload(initial[i], DType.F32, t.Parameter.Shape),
            M: backend.Allocate(DType.F32, t.Parameter.Shape), V: backend.Allocate(DType.F32, t.Parameter.Shape))).ToArray();
        try
        {
            if (!asJson)
            {
                Console.WriteLine($"training: model {name}: {lm.Config.Summary()}, {lm.ParameterCount:N0} parameters");
                Console.WriteLine($"backend {backend.Description}, compute {activation.ToShortName()}, fp32 master weights, AdamW");
                Console.WriteLine($"{"batch",6} {"length",7} {"recompute",9} {"step s",9} {"tokens/s",10} {"fwd+bwd s",10} {"optim s",8} {"peak MiB",9} {"scan bwd us",12}");
            }
            var rng = new Random(11);
            foreach (int batch in batches)
                foreach (int length in lengths)
                {
                    double scanUs = TimeScanBackward(lm.Config, backend, activation, batch, length, repeat);
                    foreach (bool recompute in new[] { true, false })
                    {
                        var ids = new int[batch, length];
                        for (int b = 0; b < batch; b++)
                            for (int t = 0; t < length; t++) ids[b, t] = rng.Next(lm.Config.VocabSize);
                        float scale = 1f / (batch * (length - 1));
                        var steps = new List<(double Total, double Fb, double Opt)>();
                        double peakMiB = 0;
                        for (int r = 0; r < repeat + 1; r++) // round 0 warms up
                        {
                            (backend as CudaBackend)?.ResetPeakTensorBytes();
                            var clock = Stopwatch.StartNew();
                            model.ZeroGradients();
                            model.ForwardBackward(ids, ids, null, scale, recompute);
                            double fb = clock.Elapsed.TotalSeconds;
                            double norm2 = 0;
                            foreach (var t in tensors) norm2 += backend.SumOfSquares(t.Gradient);
                            float clip = (float)Math.Min(1.0, 1.0 / (Math.Sqrt(norm2) + 1e-6));
                            var args = new AdamWStepArgs(1e-4f, 0.9f, 0.999f, 1e-8f, 0f, 1f - MathF.Pow(0.9f, r + 1), 1f - MathF.Pow(0.999f, r + 1), clip);
                            for (int i = 0; i < tensors.Count; i++)
                            {
                                var (master, m, v) = masters[i];
                                var a = args with { WeightDecay = tensors[i].WeightDecay ? 0.1f : 0f };
                                backend.AdamWStep(master, tensors[i].Gradient, m, v, tensors[i].Parameter, tensors[i].NegExp, a);
                            }
                            backend.Synchronize();
                            double total = clock.Elapsed.TotalSeconds;
                            if (backend is CudaBackend cuda)
                                peakMiB = Math.Max(peakMiB, (UsedBytes(backend) + cuda.PeakTensorBytes - cuda.LiveTensorBytes) / 1048576.0);
                            else peakMiB = Math.Max(peakMiB, Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0);
                            if (r > 0) steps.Add((total, fb, total - fb));
                        }
                        steps.Sort((x, y) => x.Total.CompareTo(y.Total));
                        var median = steps[steps.Count / 2];
                        var row = new Row(name, backend.Kind.ToString().ToLowerInvariant(), activation.ToShortName(), batch, length, recompute, median.Total,
                            batch * length / median.Total, median.Fb, median.Opt, peakMiB, scanUs);
                        if (asJson) Console.WriteLine(JsonSerializer.Serialize(row, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
                        else Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                            $"{batch,6} {length,7} {(recompute ? "on" : "off"),9} {median.Total,9:F4} {row.TokensPerSecond,10:N0} {median.Fb,10:F4} {median.Opt,8:F4} {peakMiB,9:F0} {scanUs,12:F1}"));
                    }
                }
        }
        finally
        {
            foreach (var (master, m, v) in masters)
            {
                master.Dispose();
                m.Dispose();
                v.Dispose();
            }
            adapter?.Dispose();
        }
    }

    /// <summary>The selective-scan backward alone on random inputs of the model's mixer shape, from the states its forward saved (as
    /// in training): median microseconds over the timed runs.</summary>
    private static double TimeScanBackward(MambaConfig c, IMambaBackend be, DType dtype, int batch, int length, int repeat)
    {
        int e = c.IntermediateSize, n = c.StateSize, r = c.TimeStepRank;
        var rng = new Random(3);
        float[] Random(long count, float scale, float offset = 0)
        {
            var a = new float[count];
            for (long i = 0; i < count; i++) a[i] = offset + scale * (float)(rng.NextDouble() * 2 - 1);
            return a;
        }
        var owned = new List<DeviceTensor>();
        DeviceTensor Up(float[] data, DType t, params int[] shape) { var x = be.Upload(data, t, shape); owned.Add(x); return x; }
        DeviceTensor Zeros(DType t, params int[] shape) { var x = be.Allocate(t, shape); owned.Add(x); return x; }
        try
        {
            var ssm = new SsmParameters(Up(Random((long)e * r, 0.5f), dtype, e, r), Up(Random(e, 1f, -3f), DType.F32, e),
                Up(Random((long)e * n, 0.5f, -1.5f), DType.F32, e, n), Up(Random(e, 1f), DType.F32, e));
            var u = Up(Random((long)batch * length * e, 1f), dtype, batch, length, e);
            var dbc = Up(Random((long)batch * length * (r + 2 * n), 1f), dtype, batch, length, r + 2 * n);
            var xz = Up(Random((long)batch * length * 2 * e, 1f), dtype, batch, length, 2 * e);
            var gy = Up(Random((long)batch * length * e, 1f), dtype, batch, length, e);
            var gu = Zeros(dtype, batch, length, e);
            var gdbc = Zeros(dtype, batch, length, r + 2 * n);
            var gxz = Zeros(dtype, batch, length, 2 * e);
            var grads = new SsmGradients(Zeros(DType.F32, e, r), Zeros(DType.F32, e), Zeros(DType.F32, e, n), Zeros(DType.F32, e));
            // The states the training forward saves for the backward (where the backend saves them), made once.
            var checkpointShape = be.ScanCheckpointShape(batch, length, e, n);
            DeviceTensor? checkpoints = checkpointShape is null ? null : Zeros(DType.F32, checkpointShape);
            if (checkpoints is not null) be.SelectiveScan(ssm, u, dbc, xz, Zeros(dtype, batch, length, e), null, checkpoints);
            var times = new List<double>();
            for (int i = 0; i < repeat + 2; i++)
            {
                be.Synchronize();
                var clock = Stopwatch.StartNew();
                be.SelectiveScanBackward(ssm, u, dbc, xz, gy, gu, gdbc, gxz, grads, checkpoints);
                be.Synchronize();
                if (i > 0) times.Add(clock.Elapsed.TotalMicroseconds);
            }
            times.Sort();
            return times[times.Count / 2];
        }
        finally
        {
            foreach (var t in owned) t.Dispose();
        }
    }

    private static long UsedBytes(IMambaBackend backend)
    {
        if (backend is CudaBackend cuda)
        {
            var (free, total) = cuda.MemoryInfo();
            return total - free;
        }
        return Process.GetCurrentProcess().PeakWorkingSet64;
    }
}
