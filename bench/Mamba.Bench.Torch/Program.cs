// Side-by-side CPU benchmark: Mamba for .NET (CpuBackend, pure C#) vs the same model in TorchSharp-cpu (libtorch),
// float32, same random Mamba-130m weights. See bench/TORCH.md.
//
//   dotnet run -c Release --project bench/Mamba.Bench.Torch [-- --runs 7 --steps 32 --prefill 512 --skip-split]
using System.Diagnostics;
using Mamba;
using Mamba.Bench.Torch;
using Mamba.Compute;
using Mamba.Compute.Cpu;
using Mamba.Model;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

int runs = 7, steps = 32, prefillLen = 512, threads = 2;
bool split = true;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--runs": runs = int.Parse(args[++i]); break;
        case "--steps": steps = int.Parse(args[++i]); break;
        case "--prefill": prefillLen = int.Parse(args[++i]); break;
        case "--threads": threads = int.Parse(args[++i]); break;
        case "--skip-split": split = false; break;
        default: throw new ArgumentException($"unknown argument {args[i]}");
    }
}

NativeFixup.Apply(); // before the first TorchSharp call loads libLibTorchSharp.so
torch.set_num_threads(threads);
torch.set_num_interop_threads(1);
using var noGrad = torch.no_grad();

var config = MambaConfig.Preset("130m");
Console.WriteLine($"model: {config.Summary()}");
Console.WriteLine($"torch: TorchSharp {typeof(torch).Assembly.GetName().Version}, threads {torch.get_num_threads()}, .NET {Environment.Version}, {Environment.ProcessorCount} logical CPUs");
var sw = Stopwatch.StartNew();
var weights = MambaInitializer.Create(config, seed: 1);
Console.WriteLine($"weights: {weights.ParameterCount:N0} parameters (seed 1) in {sw.ElapsedMilliseconds} ms");
var backend = new CpuBackend(threads);
using var ours = new MambaForCausalLM(weights, backend);
using var theirs = new TorchMamba(weights);
Console.WriteLine($"ours: {backend.Description}");
int v = config.VocabSize;

// ---------------------------------------------------------------- correctness
var rng = new Random(7);
int[,] Ids(int length)
{
    var ids = new int[1, length];
    for (int t = 0; t < length; t++) ids[0, t] = rng.Next(v);
    return ids;
}
long[,] Long(int[,] ids)
{
    var r = new long[ids.GetLength(0), ids.GetLength(1)];
    for (int b = 0; b < ids.GetLength(0); b++)
        for (int t = 0; t < ids.GetLength(1); t++) r[b, t] = ids[b, t];
    return r;
}

var check = Ids(64);
bool ok = true;
// Logits of a 1 x 64 prompt, every position: ours vs TorchSharp fp32 (both scans), and both vs a float64 TorchSharp
// run of the same weights, which tells fp32 rounding (amplified through the random layers) from a real mismatch.
void CheckLogits(string label, MambaForCausalLM ourModel, TorchMamba torchModel, MambaWeights w, bool strict)
{
    var ourLogits = ourModel.Forward(check).Logits.Data;                     // [1, 64, V]
    double ourMax = ourLogits.Max(MathF.Abs);
    double[] f64;
    using (var theirs64 = new TorchMamba(w, ScalarType.Float64))
    using (var l64 = theirs64.Prefill(Long(check), 0, out var c64))
    {
        f64 = l64.contiguous().data<double>().ToArray();
        c64.Dispose();
    }
    (double Max, double L2Rel) Diff(IReadOnlyList<float> x, Func<int, double> reference)
    {
        double m = 0, num = 0, den = 0;
        for (int j = 0; j < f64.Length; j++)
        {
            double r = reference(j), dd = x[j] - r;
            m = Math.Max(m, Math.Abs(dd)); num += dd * dd; den += r * r;
        }
        return (m, Math.Sqrt(num / den));
    }
    var o64 = Diff(ourLogits, j => f64[j]);
    Console.WriteLine($"check {label}: max |logit| {ourMax:F3}; ours vs float64: max |diff| {o64.Max:E3} (L2 rel {o64.L2Rel:E2})");
    foreach (var kind in new[] { TorchMamba.ScanKind.HfSlow, TorchMamba.ScanKind.InPlace })
    {
        using var tl = torchModel.Prefill(Long(check), 0, out var c0, kind);
        c0.Dispose();
        var tdata = tl.contiguous().data<float>().ToArray();
        var t64 = Diff(tdata, j => f64[j]);
        var ot = Diff(tdata, j => ourLogits[j]);
        double rel = ot.Max / ourMax;
        if (strict) ok &= rel <= 1e-4 && tdata.Length == ourLogits.Length;
        Console.WriteLine($"check {label}: torch fp32 ({kind}) vs float64: max |diff| {t64.Max:E3} (L2 rel {t64.L2Rel:E2}); " +
            $"ours vs torch fp32: max |diff| {ot.Max:E3}, / max |logit| = {rel:E3} {(rel <= 1e-4 ? "OK (<= 1e-4)" : "ABOVE 1e-4")}, L2 rel {ot.L2Rel:E2}");
    }
}
{
    var w2 = MambaInitializer.Create(config with { NumHiddenLayers = 2 }, seed: 1);
    using var ours2 = new MambaForCausalLM(w2, backend);
    using var theirs2 = new TorchMamba(w2);
    CheckLogits("130m shape, 2 layers, 1x64", ours2, theirs2, w2, strict: true);
}
CheckLogits("130m, 24 layers, 1x64", ours, theirs, weights, strict: false);
{
    // Greedy decode: prefill 64 tokens, then 16 steps, both sides fed their own argmax.
    const int decodeSteps = 16;
    using var cache = ours.CreateCache(1);
    var ourTokens = new List<int> { ours.ForwardArgMax(check, cache)[0] };
    for (int s = 0; s < decodeSteps; s++) ourTokens.Add(ours.ForwardArgMax(new[,] { { ourTokens[^1] } }, cache)[0]);
    var torchTokens = new List<int>();
    using (var tl = theirs.Prefill(Long(check), 1, out var tc))
    {
        torchTokens.Add((int)tl.argmax(-1).item<long>());
        for (int s = 0; s < decodeSteps; s++)
        {
            using var step = theirs.Step([torchTokens[^1]], tc);
            torchTokens.Add((int)step.argmax(-1).item<long>());
        }
        tc.Dispose();
    }
    bool same = ourTokens.SequenceEqual(torchTokens);
    ok &= same;
    Console.WriteLine($"check greedy 1 + {decodeSteps} tokens: ours [{string.Join(' ', ourTokens)}]");
    Console.WriteLine($"                              torch [{string.Join(' ', torchTokens)}] {(same ? "MATCH" : "MISMATCH")}");
}
if (!ok) { Console.WriteLine("CORRECTNESS CHECK FAILED"); Environment.ExitCode = 1; }

// ---------------------------------------------------------------- timing
Console.WriteLine($"load average before timing: {File.ReadAllText("/proc/loadavg").Trim()}");
var prompt = Ids(prefillLen);
var promptLong = Long(prompt);

static double Median(List<double> xs) { var s = xs.OrderBy(x => x).ToList(); return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2; }

double TimeMs(Action a) { var t = Stopwatch.StartNew(); a(); return t.Elapsed.TotalMilliseconds; }

List<double> Repeat(int warm, int n, Action a)
{
    for (int i = 0; i < warm; i++) a();
    var xs = new List<double>();
    for (int i = 0; i < n; i++) xs.Add(TimeMs(a));
    return xs;
}

string Fmt(List<double> xs) => $"median {Median(xs),8:F1} ms  (min {xs.Min():F1}, max {xs.Max():F1}, n {xs.Count})";

// The two sides are interleaved (ours, torch, ours, torch, ...) so that load from other processes on the machine
// falls on both alike; each figure is the median, and the ratio is also given as the median of the paired ratios.
void OurPrefill() { using var c = ours.CreateCache(1); ours.ForwardArgMax(prompt, c); }
void TorchPrefill(TorchMamba.ScanKind kind)
{
    using var l = theirs.Prefill(promptLong, 1, out var c, kind);
    _ = l.argmax(-1).item<long>();
    c.Dispose();
}

// Prefill 1 x L, last-position logits -> argmax (what generation does).
for (int i = 0; i < 2; i++) { OurPrefill(); TorchPrefill(TorchMamba.ScanKind.InPlace); }
var ourPrefill = new List<double>();
var torchPrefill = new List<double>();
for (int i = 0; i < runs; i++)
{
    ourPrefill.Add(TimeMs(OurPrefill));
    torchPrefill.Add(TimeMs(() => TorchPrefill(TorchMamba.ScanKind.InPlace)));
}
var prefillRatios = ourPrefill.Zip(torchPrefill, (o, t) => t / o).ToList();
Console.WriteLine($"prefill 1x{prefillLen} ours                : {Fmt(ourPrefill)}  -> {prefillLen / Median(ourPrefill) * 1000:F1} tokens/s");
Console.WriteLine($"prefill 1x{prefillLen} torch (InPlace scan): {Fmt(torchPrefill)}  -> {prefillLen / Median(torchPrefill) * 1000:F1} tokens/s");
// transformers' slow_forward scan as written there: slower, timed only for reference.
var hfSlow = Repeat(1, Math.Min(runs, 3), () => TorchPrefill(TorchMamba.ScanKind.HfSlow));
Console.WriteLine($"prefill 1x{prefillLen} torch (HfSlow scan) : {Fmt(hfSlow)}  -> {prefillLen / Median(hfSlow) * 1000:F1} tokens/s");

// Decode: after a prefill of the prompt, both sides step in turn (`steps` timed steps after 4 warm-up steps
// per round, 3 rounds); ms/token = median over all steps.
var ourSteps = new List<double>();
var torchSteps = new List<double>();
for (int round = 0; round < 3; round++)
{
    using var oc = ours.CreateCache(1);
    int otok = ours.ForwardArgMax(prompt, oc)[0];
    using var l = theirs.Prefill(promptLong, 1, out var tc);
    long ttok = l.argmax(-1).item<long>();
    void OurStep() => otok = ours.ForwardArgMax(new[,] { { otok } }, oc)[0];
    void TorchStep() { using var x = theirs.Step([ttok], tc); ttok = x.argmax(-1).item<long>(); }
    for (int s = 0; s < 4; s++) { OurStep(); TorchStep(); }
    for (int s = 0; s < steps; s++)
    {
        ourSteps.Add(TimeMs(OurStep));
        torchSteps.Add(TimeMs(TorchStep));
    }
    tc.Dispose();
}
var decodeRatios = ourSteps.Zip(torchSteps, (o, t) => t / o).ToList();
Console.WriteLine($"decode b1 ours ms/token          : {Fmt(ourSteps)}  mean {ourSteps.Average():F2}");
Console.WriteLine($"decode b1 torch ms/token         : {Fmt(torchSteps)}  mean {torchSteps.Average():F2}");
Console.WriteLine($"load average after timing: {File.ReadAllText("/proc/loadavg").Trim()}");

double pRatio = Median(torchPrefill) / Median(ourPrefill), dRatio = Median(torchSteps) / Median(ourSteps);
Console.WriteLine();
Console.WriteLine($"| measure | ours | TorchSharp-cpu | ours / torch speed (ratio of medians; median of paired ratios; ratio of minima) |");
Console.WriteLine($"|---|---|---|---|");
Console.WriteLine($"| prefill 1 x {prefillLen}, tokens/s | {prefillLen / Median(ourPrefill) * 1000:F0} | {prefillLen / Median(torchPrefill) * 1000:F0} | {pRatio:F2}x; {Median(prefillRatios):F2}x; {torchPrefill.Min() / ourPrefill.Min():F2}x |");
Console.WriteLine($"| decode batch 1, ms/token | {Median(ourSteps):F2} | {Median(torchSteps):F2} | {dRatio:F2}x; {Median(decodeRatios):F2}x; {torchSteps.Min() / ourSteps.Min():F2}x |");
Console.WriteLine($"target >= 2x: prefill {(pRatio >= 2 ? "MET" : "NOT MET")}, decode {(dRatio >= 2 ? "MET" : "NOT MET")}");

// ---------------------------------------------------------------- split (per-op, one layer, x 24)
if (split)
{
    Console.WriteLine();
    Console.WriteLine($"split at 1 x {prefillLen}, per layer (x {config.NumHiddenLayers} layers in the model), median of {runs}:");
    int L = prefillLen, d = config.HiddenSize, e = config.IntermediateSize, n = config.StateSize, r = config.TimeStepRank, k = config.ConvKernel;
    
    var rnd = new Random(3);
    DeviceTensor Rand(params int[] shape)
    {
        var data = new float[shape.Aggregate(1, (x, y) => x * y)];
        for (int i = 0; i < data.Length; i++) data[i] = (float)(rnd.NextDouble() - 0.5);
        return backend.Upload(data, DType.F32, shape);
    }
    var aNeg = weights[ParameterId.ALog, 0].Select(x => -MathF.Exp(x)).ToArray();
    var ssm = new SsmParameters(backend.Upload(weights[ParameterId.DtProjWeight, 0], DType.F32, e, r), backend.Upload(weights[ParameterId.DtProjBias, 0], DType.F32, e),
        backend.Upload(aNeg, DType.F32, e, n), backend.Upload(weights[ParameterId.D, 0], DType.F32, e));
    var a = Rand(1, L, d); var res = Rand(1, L, d); var norm = backend.Upload(weights[ParameterId.Norm, 0], DType.F32, d);
    var inW = backend.Upload(weights[ParameterId.InProjWeight, 0], DType.F32, 2 * e, d); var xz = Rand(1, L, 2 * e);
    var convW = backend.Upload(weights[ParameterId.ConvWeight, 0], DType.F32, e, k); var convB = backend.Upload(weights[ParameterId.ConvBias, 0], DType.F32, e);
    var u = Rand(1, L, e); var xW = backend.Upload(weights[ParameterId.XProjWeight, 0], DType.F32, r + 2 * n, e); var dbc = Rand(1, L, r + 2 * n);
    var y = Rand(1, L, e); var outW = backend.Upload(weights[ParameterId.OutProjWeight, 0], DType.F32, d, e); var o = Rand(1, L, d);
    var ops = new (string Name, Action Run)[]
    {
        ("add+rmsnorm", () => backend.AddRmsNorm(res, o, norm, 1e-5f, a)),
        ("in_proj GEMM", () => backend.Linear(a, inW, null, xz)),
        ("conv1d+silu", () => backend.CausalConv1d(xz, convW, convB, null, u, null)),
        ("x_proj GEMM", () => backend.Linear(u, xW, null, dbc)),
        ("scan (+dt_proj, D, gate)", () => backend.SelectiveScan(ssm, u, dbc, xz, y, null)),
        ("out_proj GEMM", () => backend.Linear(y, outW, null, o)),
    };
    double total = 0;
    foreach (var (name, run) in ops)
    {
        double m = Median(Repeat(1, runs, run));
        total += m;
        Console.WriteLine($"  ours  {name,-26} {m,8:F2} ms  x{config.NumHiddenLayers} = {m * config.NumHiddenLayers,8:F1} ms");
    }
    Console.WriteLine($"  ours  sum per layer {total:F2} ms, x{config.NumHiddenLayers} = {total * config.NumHiddenLayers:F1} ms");

    // The same pieces in libtorch.
    using var scope = torch.NewDisposeScope();
    var ta = torch.randn(1, L, d); var tin = torch.randn(2 * e, d); var tu = torch.randn(1, e, L); var tcw = torch.randn(e, 1, k);
    var tx = torch.randn(r + 2 * n, e); var tout = torch.randn(d, e); var ty = torch.randn(1, L, e);
    var tdelta = torch.rand(1, L, e) * 0.1; var tA = -torch.rand(e, n); var tbs = torch.randn(1, L, n); var tcs = torch.randn(1, L, n);
    var tops = new (string Name, Action Run)[]
    {
        ("in_proj GEMM", () => F.linear(ta, tin).Dispose()),
        ("conv1d+silu", () => F.silu(F.conv1d(tu, tcw, null, padding: k - 1, groups: e)).Dispose()),
        ("x_proj GEMM", () => F.linear(ty, tx).Dispose()),
        ("out_proj GEMM", () => F.linear(ty, tout).Dispose()),
        ("scan loop (InPlace)", () =>
        {
            using var s2 = torch.NewDisposeScope();
            var dA = (tdelta.unsqueeze(-1) * tA).exp_().permute(1, 0, 2, 3).contiguous();
            var hs = (tdelta.unsqueeze(-1) * tbs.unsqueeze(2)).permute(1, 0, 2, 3).contiguous();
            for (int t = 1; t < L; t++) hs[t].addcmul_(dA[t], hs[t - 1], TorchMamba.One);
            torch.einsum("lben,bln->bel", hs, tcs);
        }),
    };
    foreach (var (name, run) in tops)
    {
        double m = Median(Repeat(1, runs, run));
        Console.WriteLine($"  torch {name,-26} {m,8:F2} ms  x{config.NumHiddenLayers} = {m * config.NumHiddenLayers,8:F1} ms");
    }
}
