using Mamba.Cli.Commands;
using Mamba.Compute.Cpu;
using Mamba.IO;
using Mamba.Model;

namespace Mamba.Tests.Cpu;

/// <summary>
/// The CPU backend's narrow weights (<see cref="CpuWeightFormat"/>): the bf16 widening kernel against a float64 oracle,
/// packed weights through Linear (GEMV and the widened-GEMM prefill path), Embedding and Download, the model with int8
/// and bf16 weights against the same model in float32 (a bound from the weights' own rounding error, greedy tokens where
/// the margins allow), the reference check with the quantized tolerances, and float32 left as it was.
/// </summary>
public class CpuWeightFormatTests
{
    private static float[] Uniform(Random rng, int count, double scale = 1.0)
    {
        var data = new float[count];
        for (int i = 0; i < count; i++) data[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return data;
    }

    private static float[] RoundBf16(float[] w) =>
        w.Select(v => BitConverter.UInt32BitsToSingle((uint)SafeTensorsWriter.FloatToBf16(v) << 16)).ToArray();

    private static ushort[] Bf16Bits(float[] w) => w.Select(SafeTensorsWriter.FloatToBf16).ToArray();

    /// <summary>The stored weight a format stands for, in float32.</summary>
    private static float[] Narrowed(float[] w, int n, int k, CpuWeightFormat format) => format switch
    {
        CpuWeightFormat.Int8 => Int8RowQuantized.Quantize(w, n, k).Dequantize(),
        CpuWeightFormat.BF16 => RoundBf16(w),
        _ => w,
    };

    private static IEnumerable<TestCaseData> Shapes()
    {
        foreach (int m in new[] { 1, 2, 3, 7 })
            foreach (int k in new[] { 1, 15, 16, 17, 64, 1539 })
                foreach (int n in new[] { 1, 5, 300 })
                    yield return new TestCaseData(m, n, k);
    }

    /// <summary>As the int8 kernel's test: only the float32 accumulation differs from Σ x·w̃ in float64; parallel = serial bits.</summary>
    [TestCaseSource(nameof(Shapes))]
    public void Bf16LinearMatchesTheFloat64OracleOverTheRoundedWeights(int m, int n, int k)
    {
        var rng = new Random(m * 1_000_003 + n * 1009 + k);
        var w = Uniform(rng, n * k, 0.5);
        var bits = Bf16Bits(w);
        var wd = RoundBf16(w);
        var x = Uniform(rng, m * k);
        var bias = Uniform(rng, n);
        foreach (bool withBias in new[] { false, true })
        {
            var expected = Float64Oracle.Linear(x, wd, withBias ? bias : null, m, n, k);
            var serial = new float[m * n];
            var parallel = new float[m * n];
            CpuInt8Linear.LinearBf16(x, m, bits, n, k, withBias ? bias : default, serial, parallel: false);
            CpuInt8Linear.LinearBf16(x, m, bits, n, k, withBias ? bias : default, parallel, parallel: true);
            double maxRef = expected.Max(Math.Abs), maxErr = 0;
            for (int i = 0; i < expected.Length; i++) maxErr = Math.Max(maxErr, Math.Abs(expected[i] - serial[i]));
            Assert.That(maxErr, Is.LessThanOrEqualTo(1e-5 * Math.Max(maxRef, 1e-30)), $"bias {withBias}: max error {maxErr:E3}");
            Assert.That(parallel, Is.EqualTo(serial).AsCollection);
        }
    }

    /// <summary>
    /// Packed weights through the backend: Download gives the weights they stand for, Embedding their rows, and Linear
    /// Σ x·w̃ (+ bias) for few rows (the widening GEMV) and many (widened tiles + the float32 GEMM, with n large enough
    /// for several tiles and a tail tile).
    /// </summary>
    [TestCase(CpuWeightFormat.Int8, 1)]
    [TestCase(CpuWeightFormat.Int8, 5)]
    [TestCase(CpuWeightFormat.Int8, 45)]
    [TestCase(CpuWeightFormat.BF16, 1)]
    [TestCase(CpuWeightFormat.BF16, 45)]
    public void PackedWeightsThroughTheBackendStandForTheirNarrowedValues(CpuWeightFormat format, int m)
    {
        int k = m >= CpuBackend.PackedGemmMinRows ? 1024 : 96;
        int n = 2 * CpuBackend.WidenTileFloats / k + 37; // the GEMM path takes 3 tiles, the last partial
        var rng = new Random(11 + m);
        var w = Uniform(rng, n * k, 0.3);
        var wd = Narrowed(w, n, k, format);
        var x = Uniform(rng, m * k);
        var bias = Uniform(rng, n);
        using var be = new CpuBackend(2, format);
        Assert.That(be.WeightFormat, Is.EqualTo(format));
        Assert.That(be.Description, Does.Contain($"{format.ToShortName()} weights"));
        using var wt = be.UploadWeight((float[])w.Clone(), DType.F32, n, k);
        Assert.That(wt, Is.InstanceOf<CpuPackedWeight>());
        var down = new float[n * k];
        be.Download(wt, down);
        Assert.That(down, Is.EqualTo(wd).AsCollection);

        using var xt = be.Upload(x, DType.F32, m, k);
        using var bt = be.Upload(bias, DType.F32, n);
        using var yt = be.Allocate(DType.F32, m, n);
        be.Linear(xt, wt, bt, yt);
        var y = new float[m * n];
        be.Download(yt, y);
        var expected = Float64Oracle.Linear(x, wd, bias, m, n, k);
        double maxRef = expected.Max(Math.Abs), maxErr = 0;
        for (int i = 0; i < y.Length; i++) maxErr = Math.Max(maxErr, Math.Abs(expected[i] - y[i]));
        Assert.That(maxErr, Is.LessThanOrEqualTo(1e-5 * maxRef), $"max error {maxErr:E3}, max|ref| {maxRef:E3}");

        int[] ids = [0, n - 1, 17, 17];
        using var emb = be.Allocate(DType.F32, ids.Length, k);
        be.Embedding(wt, ids, emb);
        var rows = new float[ids.Length * k];
        be.Download(emb, rows);
        for (int j = 0; j < ids.Length; j++)
            Assert.That(rows.AsSpan(j * k, k).ToArray(), Is.EqualTo(wd.AsSpan(ids[j] * k, k).ToArray()).AsCollection, $"id {ids[j]}");
        Assert.Throws<ArgumentOutOfRangeException>(() => be.Embedding(wt, [n], be.Allocate(DType.F32, 1, k)));
    }

    /// <summary>Copy into a packed weight converts again (LoRA merge); other ops refuse it with the reason.</summary>
    [Test]
    public void CopyIntoAPackedWeightRequantizesAndOtherOpsRefuseIt()
    {
        const int n = 8, k = 32;
        var rng = new Random(3);
        var w = Uniform(rng, n * k);
        var w2 = Uniform(rng, n * k, 2);
        using var be = new CpuBackend(1, CpuWeightFormat.Int8);
        using var wt = be.UploadWeight(w, DType.F32, n, k);
        using var src = be.Upload(w2, DType.F32, n, k);
        be.Copy(src, wt);
        var down = new float[n * k];
        be.Download(wt, down);
        Assert.That(down, Is.EqualTo(Int8RowQuantized.Quantize(w2, n, k).Dequantize()).AsCollection);
        using var other = be.Allocate(DType.F32, n, k);
        var e = Assert.Throws<ArgumentException>(() => be.Copy(wt, other))!;
        Assert.That(e.Message, Does.Contain("int8"));
        // A vector (not a matrix) is never packed.
        using var v = be.UploadWeight(new float[4], DType.F32, 4);
        Assert.That(v, Is.InstanceOf<CpuTensor>());
    }

    /// <summary>Float32 stays the reference path: the default backend packs nothing and describes itself as before.</summary>
    [Test]
    public void Float32WeightsAreUntouched()
    {
        using var be = new CpuBackend(2);
        Assert.That(be.WeightFormat, Is.EqualTo(CpuWeightFormat.F32));
        Assert.That(be.Description, Does.StartWith("CPU (C#, float32, "));
        var data = new float[6];
        using var t = be.UploadWeight(data, DType.F32, 2, 3);
        Assert.That(t, Is.InstanceOf<CpuTensor>());
        Assert.That(((CpuTensor)t).Data, Is.SameAs(data)); // owned, as UploadOwned
        using var model = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("tiny"), "model"));
        Assert.That(model.CpuWeights, Is.EqualTo(CpuWeightFormat.F32));
        foreach (var (_, tensor) in model.Parameters.Items) Assert.That(tensor, Is.InstanceOf<CpuTensor>());
    }

    private static readonly ParameterId[] LinearWeights =
        [ParameterId.Embeddings, ParameterId.InProjWeight, ParameterId.XProjWeight, ParameterId.OutProjWeight, ParameterId.LmHead];

    /// <summary>
    /// The model with int8 / bf16 weights against the same model in float32, on every fixture model, over the fixture's
    /// input. The bound is a first-order estimate from the weights' own rounding, fixed before measuring: each narrowed
    /// matrix W̃ = W + ΔW adds about ε = ‖ΔW‖_F / ‖W‖_F relative error to its product (the rounding errors are
    /// independent of the inputs), and a logit passes through the embedding, in_proj, x_proj and out_proj of every layer
    /// and the lm_head: 3·NL + 2 products. Summed linearly (not in quadrature, which would be smaller), the relative error
    /// max|Δlogits| / max|logits| is expected below (3·NL + 2)·ε_max. dt_proj stays float32 and every weight the model
    /// does not narrow is checked to be a plain float32 tensor.
    /// </summary>
    [Test]
    public void NarrowWeightLogitsStayWithinTheRoundingBoundOfTheFloat32Model(
        [ValueSource(typeof(TestFixtures), nameof(TestFixtures.ModelNames))] string name,
        [Values(CpuWeightFormat.Int8, CpuWeightFormat.BF16)] CpuWeightFormat format)
    {
        var dir = Path.Combine(TestFixtures.Model(name), "model");
        var weights = CheckpointLoader.LoadWeights(dir);
        var config = weights.Config;
        double epsMax = 0;
        foreach (var entry in MambaParameterTable.Entries(config).Where(e => LinearWeights.Contains(e.Spec.Id)))
        {
            var w = weights.Values[entry.Key];
            var wd = Narrowed(w, entry.DeviceShape[0], entry.DeviceShape[1], format);
            double d2 = 0, w2 = 0;
            for (int i = 0; i < w.Length; i++) { d2 += Math.Pow(wd[i] - w[i], 2); w2 += (double)w[i] * w[i]; }
            epsMax = Math.Max(epsMax, Math.Sqrt(d2 / w2));
        }
        double bound = (3 * config.NumHiddenLayers + 2) * epsMax;

        using var exact = MambaForCausalLM.FromPretrained(dir, new MambaModelOptions { Backend = BackendPreference.Cpu });
        using var narrow = MambaForCausalLM.FromPretrained(dir, new MambaModelOptions { Backend = BackendPreference.Cpu, CpuWeights = format });
        Assert.That(narrow.CpuWeights, Is.EqualTo(format));
        foreach (var (key, tensor) in narrow.Parameters.Items)
            Assert.That(tensor is CpuPackedWeight, Is.EqualTo(LinearWeights.Contains(key.Id)), key.ToString());

        using var reference = SafeTensorsFile.Open(Path.Combine(TestFixtures.Model(name), "reference.safetensors"));
        var info = reference.GetInfo("input_ids");
        var flat = reference.ReadInt64("input_ids");
        int b = (int)info.Shape[0], l = (int)info.Shape[1];
        var ids = new int[b, l];
        for (int i = 0; i < b; i++)
            for (int j = 0; j < l; j++) ids[i, j] = (int)flat[i * l + j];
        var f = exact.Forward(ids).Logits.Data;
        var q = narrow.Forward(ids).Logits.Data;
        double maxRef = f.Max(v => Math.Abs((double)v)), maxErr = 0;
        for (int i = 0; i < f.Length; i++) maxErr = Math.Max(maxErr, Math.Abs(q[i] - f[i]));
        double rel = maxErr / maxRef;
        TestContext.Out.WriteLine($"{name} {format}: eps_max {epsMax:E3}, bound {bound:E3}, measured {rel:E3}");
        // tiny-bf16 stores bf16 weights: rounding them to bf16 changes nothing (ε = 0), and the logits must not move
        // beyond the float32 summation-order noise of the GEMV against the GEMM.
        Assert.That(rel, Is.LessThanOrEqualTo(Math.Max(bound, 1e-6)), $"eps_max {epsMax:E3}");
        if (epsMax > 0) Assert.That(rel, Is.GreaterThan(0), "the narrow weights must change something");
    }

    /// <summary>
    /// Greedy tokens: along the float32 model's greedy continuation (teacher-forced, so one flip does not derail the
    /// rest), the narrow model picks the same token at every step whose float32 top-2 margin exceeds twice the logit
    /// error bound of the test above (a flip needs the top two logits to move by the margin together).
    /// </summary>
    [Test]
    public void GreedyTokensAgreeWhereTheMarginsAllow(
        [ValueSource(typeof(TestFixtures), nameof(TestFixtures.ModelNames))] string name,
        [Values(CpuWeightFormat.Int8, CpuWeightFormat.BF16)] CpuWeightFormat format)
    {
        var dir = Path.Combine(TestFixtures.Model(name), "model");
        using var exact = MambaForCausalLM.FromPretrained(dir);
        using var narrow = MambaForCausalLM.FromPretrained(dir, new MambaModelOptions { Backend = BackendPreference.Cpu, CpuWeights = format });
        // The bound of the test above, for this format and depth.
        double eps = EpsMax(dir, format);
        double bound = (3 * exact.Config.NumHiddenLayers + 2) * eps;
        var seq = new List<int> { 3, 17, 250 % exact.Config.VocabSize, 9 };
        int decisive = 0, agreed = 0;
        for (int step = 0; step < 16; step++)
        {
            var ids = new int[1, seq.Count];
            for (int j = 0; j < seq.Count; j++) ids[0, j] = seq[j];
            var keep = new ForwardOptions { LogitsToKeep = 1 };
            var fr = exact.Forward(ids, keep).Logits.Data;
            var qr = narrow.Forward(ids, keep).Logits.Data;
            int top = Mamba.Generation.ArgMaxRule.Of(fr);
            float second = float.NegativeInfinity;
            for (int v = 0; v < fr.Length; v++) if (v != top) second = Math.Max(second, fr[v]);
            double margin = fr[top] - second, maxAbs = fr.Max(Math.Abs);
            if (margin > 2 * bound * maxAbs)
            {
                decisive++;
                Assert.That(Mamba.Generation.ArgMaxRule.Of(qr), Is.EqualTo(top), $"step {step}: margin {margin / maxAbs:E3} of max|logit|, bound {bound:E3}");
            }
            if (Mamba.Generation.ArgMaxRule.Of(qr) == top) agreed++;
            seq.Add(top);
        }
        TestContext.Out.WriteLine($"{name} {format}: {agreed}/16 tokens equal, {decisive} steps with a margin above 2·bound");
        Assert.That(decisive, Is.GreaterThan(0), "no step had a decisive margin: the test would check nothing");
    }

    private static double EpsMax(string dir, CpuWeightFormat format)
    {
        var weights = CheckpointLoader.LoadWeights(dir);
        double epsMax = 0;
        foreach (var entry in MambaParameterTable.Entries(weights.Config).Where(e => LinearWeights.Contains(e.Spec.Id)))
        {
            var w = weights.Values[entry.Key];
            var wd = Narrowed(w, entry.DeviceShape[0], entry.DeviceShape[1], format);
            double d2 = 0, w2 = 0;
            for (int i = 0; i < w.Length; i++) { d2 += Math.Pow(wd[i] - w[i], 2); w2 += (double)w[i] * w[i]; }
            epsMax = Math.Max(epsMax, Math.Sqrt(d2 / w2));
        }
        return epsMax;
    }

    /// <summary>check-reference with narrow weights passes on every fixture with the documented tolerances, and skips gradients.</summary>
    [Test]
    public void ReferenceCheckPassesWithTheQuantizedTolerances(
        [ValueSource(typeof(TestFixtures), nameof(TestFixtures.ModelNames))] string name,
        [Values(CpuWeightFormat.Int8, CpuWeightFormat.BF16)] CpuWeightFormat format)
    {
        var fixture = TestFixtures.Model(name);
        using var model = MambaForCausalLM.FromPretrained(Path.Combine(fixture, "model"),
            new MambaModelOptions { Backend = BackendPreference.Cpu, CpuWeights = format });
        var rows = ReferenceCheck.Run(model, fixture, ReferenceCheck.AllGroups);
        var (forward, loss) = ReferenceCheck.QuantizedWeightTolerances(format);
        Assert.That(rows.Where(r => !r.Passed).Select(r => r.Format()), Is.Empty);
        Assert.That(rows.Where(r => r.Group == "forward").Select(r => r.Tolerance), Is.All.EqualTo(forward));
        Assert.That(rows.Single(r => r.Group == "loss").Tolerance, Is.EqualTo(loss));
        Assert.That(rows.Where(r => r.Group == "grad").Select(r => r.Compared), Is.EqualTo(new[] { false }));
    }

    /// <summary>Training needs float32 weights: the backward refuses a packed weight and says why.</summary>
    [Test]
    public void TrainingAnInt8ModelFailsWithTheReason()
    {
        using var model = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("tiny"), "model"),
            new MambaModelOptions { Backend = BackendPreference.Cpu, CpuWeights = CpuWeightFormat.Int8 });
        var ids = new int[,] { { 1, 2, 3, 4 } };
        var e = Assert.Catch<ArgumentException>(() =>
        {
            model.ZeroGradients();
            model.ForwardBackward(ids, ids, null, 0.25f, recomputeActivations: false);
        })!;
        Assert.That(e.Message, Does.Contain("int8").And.Contain("float32 weights"));
    }

    /// <summary>The CLI's --dtype: int8 is the CPU (auto means the CPU, cuda is refused); bf16 on the CPU is bf16 weights.</summary>
    [Test]
    public void CommandLineDTypeSelectsTheCpuWeights()
    {
        var int8 = CommonOptions.ModelOptionsFor("auto", "int8", 0);
        Assert.That((int8.Backend, int8.DType, int8.CpuWeights), Is.EqualTo((BackendPreference.Cpu, DType.F32, CpuWeightFormat.Int8)));
        Assert.Throws<ArgumentException>(() => CommonOptions.ModelOptionsFor("cuda", "int8", 0));
        var bf16 = CommonOptions.ModelOptionsFor("cpu", "bf16", 2);
        Assert.That((bf16.Backend, bf16.DType, bf16.CpuWeights, bf16.CpuThreads), Is.EqualTo((BackendPreference.Cpu, DType.F32, CpuWeightFormat.BF16, 2)));
        var auto = CommonOptions.ModelOptionsFor("auto", "bf16", 0);
        Assert.That((auto.DType, auto.CpuWeights), Is.EqualTo((DType.BF16, CpuWeightFormat.BF16)));
        var f32 = CommonOptions.ModelOptionsFor("cpu", "f32", 0);
        Assert.That((f32.DType, f32.CpuWeights), Is.EqualTo((DType.F32, CpuWeightFormat.F32)));
    }
}
