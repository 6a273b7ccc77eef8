using Mamba.Compute;
using Mamba.Compute.Cpu;
using static Mamba.Tests.Training.Float64Forward;

namespace Mamba.Tests.Training;

/// <summary>
/// Every training op of the CPU backend against central finite differences in float64 through the plain-loop forwards
/// of <see cref="Float64Forward"/> (which are themselves checked against the backend's forward ops). The scalar loss is
/// Σ g ⊙ output with a random g, so its gradient with respect to the output is g, the op's gradient input.
/// </summary>
public class CpuBackwardTests
{
    private static readonly CpuBackend Backend = new(threads: 2);

    /// <summary>Relative tolerance of the float32 analytic gradient against float64 finite differences.</summary>
    private const double Tolerance = 1e-3;

    private static float[] Random(Random rng, int count, double scale = 1.0, double offset = 0)
    {
        var data = new float[count];
        for (int i = 0; i < count; i++) data[i] = (float)((rng.NextDouble() * 2 - 1) * scale + offset);
        return data;
    }

    private static double[] D(float[] data) => data.Select(v => (double)v).ToArray();

    private static float[] Get(DeviceTensor t)
    {
        var data = new float[t.ElementCount];
        Backend.Download(t, data);
        return data;
    }

    private static CpuTensor Up(float[] data, params int[] shape) => (CpuTensor)Backend.Upload(data, DType.F32, shape);

    /// <summary>
    /// |analytic − expected| ≤ tol·(|expected| + 0.01·max|expected|) elementwise: relative where the gradient is not tiny,
    /// and never vacuous (the expected gradient must not be all zero unless <paramref name="allowZero"/>).
    /// </summary>
    private static void AssertGradient(double[] expected, float[] actual, string what, double tol = Tolerance, bool allowZero = false)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), what);
        double maxRef = expected.Max(Math.Abs);
        if (!allowZero) Assert.That(maxRef, Is.GreaterThan(1e-6), $"{what}: the expected gradient is zero, the check would be vacuous");
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs(expected[i] - actual[i]);
            double bound = tol * (Math.Abs(expected[i]) + 0.01 * maxRef) + 1e-12;
            if (!(err <= bound))
                Assert.Fail($"{what}[{i}]: analytic {actual[i]:G9}, expected {expected[i]:G9} (error {err:E2} > {bound:E2}; max|expected| {maxRef:E2})");
        }
    }

    private static void AssertForward(double[] expected, float[] actual, string what, double tol = 2e-5)
    {
        double maxRef = expected.Max(Math.Abs), maxErr = 0;
        for (int i = 0; i < expected.Length; i++) maxErr = Math.Max(maxErr, Math.Abs(expected[i] - actual[i]));
        Assert.That(maxErr, Is.LessThanOrEqualTo(tol * Math.Max(maxRef, 1e-30)), $"{what}: forward max error {maxErr:E3}, max|ref| {maxRef:E3}");
    }

    private static double[] Plus(float[] initial, double[] gradient) => initial.Select((v, i) => v + gradient[i]).ToArray();

    // ---- Linear ----

    [TestCase(1, 1, 1)]
    [TestCase(3, 5, 7)]
    [TestCase(13, 6, 17)]
    [TestCase(40, 33, 20)]
    public void LinearBackwardMatchesFiniteDifferences(int m, int n, int k)
    {
        var rng = new Random(m * 100 + n * 10 + k);
        var x = Random(rng, m * k);
        var w = Random(rng, n * k);
        var b = Random(rng, n);
        var g = Random(rng, m * n);
        double[] xd = D(x), wd = D(w), bd = D(b), gd = D(g);
        var y = Backend.Allocate(DType.F32, m, n);
        Backend.Linear(Up(x, m, k), Up(w, n, k), Up(b, n), y);
        AssertForward(Linear(xd, wd, bd, m, n, k), Get(y), "linear");

        double Loss() => Dot(gd, Linear(xd, wd, bd, m, n, k));
        var fdX = FiniteDifferences(xd, Loss);
        var fdW = FiniteDifferences(wd, Loss);
        var fdB = FiniteDifferences(bd, Loss);
        foreach (var accumulate in new[] { false, true })
        {
            var gxInit = Random(rng, m * k, 3);
            var gwInit = Random(rng, n * k, 3);
            var gbInit = Random(rng, n, 3);
            var gx = Up(gxInit, m, k);
            var gw = Up(gwInit, n, k);
            var gb = Up(gbInit, n);
            Backend.LinearBackward(Up(x, m, k), Up(w, n, k), Up(g, m, n), gx, accumulate, gw, gb);
            AssertGradient(accumulate ? Plus(gxInit, fdX) : fdX, Get(gx), $"gX (accumulate={accumulate})");
            AssertGradient(Plus(gwInit, fdW), Get(gw), "gW (added to)");
            AssertGradient(Plus(gbInit, fdB), Get(gb), "gb (added to)");
        }
        // Without gradX and bias: only the weight gradient.
        var gw2 = Backend.Allocate(DType.F32, n, k);
        Backend.LinearBackward(Up(x, m, k), Up(w, n, k), Up(g, m, n), null, false, gw2, null);
        AssertGradient(fdW, Get(gw2), "gW alone");
    }

    [Test]
    public void LinearBackwardRejectsMismatchedShapes()
    {
        var x = Backend.Allocate(DType.F32, 4, 3);
        var w = Backend.Allocate(DType.F32, 5, 3);
        Assert.Throws<ArgumentException>(() => Backend.LinearBackward(x, w, Backend.Allocate(DType.F32, 4, 4), null, false, Backend.Allocate(DType.F32, 5, 3), null));
        Assert.Throws<ArgumentException>(() => Backend.LinearBackward(x, w, Backend.Allocate(DType.F32, 4, 5), null, false, Backend.Allocate(DType.F32, 4, 3), null));
        Assert.Throws<ArgumentException>(() => Backend.LinearBackward(x, w, Backend.Allocate(DType.F32, 4, 5), Backend.Allocate(DType.F32, 4, 5), false, Backend.Allocate(DType.F32, 5, 3), null));
        Assert.Throws<ArgumentException>(() => Backend.LinearBackward(x, w, Backend.Allocate(DType.F32, 4, 5), null, false, Backend.Allocate(DType.F32, 5, 3), Backend.Allocate(DType.F32, 4)));
    }

    // ---- RMSNorm ----

    [TestCase(1, 1)]
    [TestCase(3, 8)]
    [TestCase(13, 33)]
    public void AddRmsNormBackwardMatchesFiniteDifferences(int rows, int width)
    {
        var rng = new Random(rows * 31 + width);
        const float eps = 1e-5f;
        var x = Random(rng, rows * width, 2);
        var w = Random(rng, width, 1, 1);
        var g = Random(rng, rows * width);
        double[] xd = D(x), wd = D(w), gd = D(g);
        var y = Backend.Allocate(DType.F32, rows, width);
        Backend.AddRmsNorm(Up((float[])x.Clone(), rows, width), null, Up(w, width), eps, y);
        AssertForward(RmsNorm(xd, wd, eps, rows, width), Get(y), "rmsnorm");

        double Loss() => Dot(gd, RmsNorm(xd, wd, eps, rows, width));
        var fdX = FiniteDifferences(xd, Loss);
        var fdW = FiniteDifferences(wd, Loss);
        var giInit = Random(rng, rows * width);
        var gwInit = Random(rng, width);
        var gi = Up(giInit, rows, width);
        var gw = Up(gwInit, width);
        Backend.AddRmsNormBackward(Up(x, rows, width), Up(w, width), eps, Up(g, rows, width), gi, gw);
        AssertGradient(Plus(giInit, fdX), Get(gi), "gx (added to the residual gradient)");
        AssertGradient(Plus(gwInit, fdW), Get(gw), "gw (added to)");
    }

    // ---- Causal conv + SiLU ----

    // (batch, length, inner, kernel)
    [TestCase(1, 1, 3, 4)]
    [TestCase(3, 2, 5, 4)]
    [TestCase(1, 13, 6, 4)]
    [TestCase(3, 13, 9, 3)]
    [TestCase(2, 7, 70, 4)]
    public void CausalConv1dBackwardMatchesFiniteDifferences(int batch, int length, int inner, int kernel)
    {
        var rng = new Random(batch * 1000 + length * 10 + inner + kernel);
        int rows = batch * length;
        var xz = Random(rng, rows * 2 * inner, 1.5);
        var w = Random(rng, inner * kernel);
        var bias = Random(rng, inner, 0.5);
        var g = Random(rng, rows * inner);
        var mask = Enumerable.Range(0, rows).Select(i => rng.NextDouble() < 0.3 ? 0f : 1f).ToArray();
        mask[0] = 1f;
        foreach (var withBias in new[] { true, false })
            foreach (var withMask in new[] { false, true })
            {
                string what = $"conv bias={withBias} mask={withMask}";
                double[] xd = D(xz), wd = D(w), bd = D(bias), gd = D(g);
                double[]? md = withMask ? D(mask) : null;
                var u = Backend.Allocate(DType.F32, batch, length, inner);
                Backend.CausalConv1d(Up(xz, batch, length, 2 * inner), Up(w, inner, kernel), withBias ? Up(bias, inner) : null,
                    withMask ? Up(mask, rows) : null, u, null);
                AssertForward(Conv(xd, wd, withBias ? bd : null, md, batch, length, inner, kernel), Get(u), what);

                double Loss() => Dot(gd, Conv(xd, wd, withBias ? bd : null, md, batch, length, inner, kernel));
                var fdXz = FiniteDifferences(xd, Loss);
                var fdW = FiniteDifferences(wd, Loss);
                var fdB = FiniteDifferences(bd, Loss);
                var gxzInit = Random(rng, rows * 2 * inner, 5);
                var gwInit = Random(rng, inner * kernel);
                var gbInit = Random(rng, inner);
                var gxz = Up(gxzInit, batch, length, 2 * inner);
                var gw = Up(gwInit, inner, kernel);
                var gb = Up(gbInit, inner);
                Backend.CausalConv1dBackward(Up(xz, batch, length, 2 * inner), Up(w, inner, kernel), withBias ? Up(bias, inner) : null,
                    withMask ? Up(mask, rows) : null, Up(g, batch, length, inner), gxz, gw, withBias ? gb : null);
                var got = Get(gxz);
                var xHalf = new List<float>();
                var xHalfExpected = new List<double>();
                for (int r = 0; r < rows; r++)
                    for (int c = 0; c < 2 * inner; c++)
                    {
                        int i = r * 2 * inner + c;
                        if (c < inner) { xHalf.Add(got[i]); xHalfExpected.Add(fdXz[i]); }
                        else Assert.That(got[i], Is.EqualTo(gxzInit[i]), $"{what}: the z half of gradXz must be left as it is");
                    }
                AssertGradient([.. xHalfExpected], [.. xHalf], $"{what}: gx");
                AssertGradient(Plus(gwInit, fdW), Get(gw), $"{what}: gW");
                if (withBias) AssertGradient(Plus(gbInit, fdB), Get(gb), $"{what}: gb");
                else Assert.That(Get(gb), Is.EqualTo(gbInit), $"{what}: no bias gradient without a bias");
            }
    }

    // ---- Selective scan ----

    private static SsmParameters Ssm(float[] wdt, float[] bdt, float[] aLog, float[] d, int inner, int n, int rank) =>
        new(Up(wdt, inner, rank), Up(bdt, inner), Up(aLog.Select(v => (float)-Math.Exp(v)).ToArray(), inner, n), Up(d, inner));

    // (batch, length, inner, state, rank)
    [TestCase(1, 1, 3, 16, 2)]
    [TestCase(3, 13, 5, 16, 3)]
    [TestCase(1, 13, 4, 1, 2)]
    [TestCase(3, 2, 6, 1, 1)]
    [TestCase(2, 7, 40, 4, 5)]
    public void SelectiveScanBackwardMatchesFiniteDifferences(int batch, int length, int inner, int n, int rank)
    {
        var rng = new Random(batch * 7919 + length * 31 + inner * 7 + n * 3 + rank);
        int rows = batch * length, width = rank + 2 * n;
        var u = Random(rng, rows * inner);
        var dbc = Random(rng, rows * width);
        var xz = Random(rng, rows * 2 * inner, 2);
        var wdt = Random(rng, inner * rank, 0.7);
        var bdt = Random(rng, inner, 1.5, -0.5);
        if (inner > 2) bdt[1] = 23; // Δ past the softplus threshold for one channel
        var aLog = Random(rng, inner * n, 1.0, 0.3);
        var d = Random(rng, inner);
        var g = Random(rng, rows * inner);
        double[] ud = D(u), dbcd = D(dbc), xzd = D(xz), wdtd = D(wdt), bdtd = D(bdt), aLogd = D(aLog), dd = D(d), gd = D(g);

        var ssm = Ssm(wdt, bdt, aLog, d, inner, n, rank);
        var y = Backend.Allocate(DType.F32, batch, length, inner);
        Backend.SelectiveScan(ssm, Up(u, batch, length, inner), Up(dbc, batch, length, width), Up(xz, batch, length, 2 * inner), y, null);
        AssertForward(Scan(ud, dbcd, xzd, wdtd, bdtd, aLogd, dd, batch, length, inner, n, rank), Get(y), "scan", 5e-5);

        double Loss() => Dot(gd, Scan(ud, dbcd, xzd, wdtd, bdtd, aLogd, dd, batch, length, inner, n, rank));
        var fdU = FiniteDifferences(ud, Loss);
        var fdDbc = FiniteDifferences(dbcd, Loss);
        var fdXz = FiniteDifferences(xzd, Loss);
        var fdWdt = FiniteDifferences(wdtd, Loss);
        var fdBdt = FiniteDifferences(bdtd, Loss);
        var fdALog = FiniteDifferences(aLogd, Loss);
        var fdD = FiniteDifferences(dd, Loss);

        var gu = Up(Random(rng, rows * inner, 9), batch, length, inner);      // overwritten
        var gdbc = Up(Random(rng, rows * width, 9), batch, length, width);    // overwritten
        var gxzInit = Random(rng, rows * 2 * inner, 9);
        var gxz = Up(gxzInit, batch, length, 2 * inner);
        var init = new[] { Random(rng, inner * rank), Random(rng, inner), Random(rng, inner * n), Random(rng, inner) };
        var grads = new SsmGradients(Up(init[0], inner, rank), Up(init[1], inner), Up(init[2], inner, n), Up(init[3], inner));
        Backend.SelectiveScanBackward(ssm, Up(u, batch, length, inner), Up(dbc, batch, length, width), Up(xz, batch, length, 2 * inner),
            Up(g, batch, length, inner), gu, gdbc, gxz, grads);

        AssertGradient(fdU, Get(gu), "gu");
        var gotDbc = Get(gdbc);
        string[] parts = ["gδ̃", "gB", "gC"];
        for (int part = 0; part < 3; part++)
        {
            int c0 = part == 0 ? 0 : rank + (part - 1) * n, count = part == 0 ? rank : n;
            var expected = new double[rows * count];
            var actual = new float[rows * count];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < count; c++)
                {
                    expected[r * count + c] = fdDbc[r * width + c0 + c];
                    actual[r * count + c] = gotDbc[r * width + c0 + c];
                }
            AssertGradient(expected, actual, parts[part]);
        }
        var gotXz = Get(gxz);
        var z = new List<float>();
        var zExpected = new List<double>();
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < 2 * inner; c++)
            {
                int i = r * 2 * inner + c;
                if (c >= inner) { z.Add(gotXz[i]); zExpected.Add(fdXz[i]); }
                else
                {
                    Assert.That(fdXz[i], Is.EqualTo(0).Within(1e-9), "the scan does not read x");
                    Assert.That(gotXz[i], Is.EqualTo(gxzInit[i]), "the x half of gradXz must be left as it is");
                }
            }
        AssertGradient([.. zExpected], [.. z], "gz");
        AssertGradient(Plus(init[0], fdWdt), Get(grads.DtProjWeight), "gW_dt (added to)");
        AssertGradient(Plus(init[1], fdBdt), Get(grads.DtProjBias), "gb_dt (added to)");
        AssertGradient(Plus(init[2], fdALog), Get(grads.ALog), "gA_log (added to)");
        AssertGradient(Plus(init[3], fdD), Get(grads.D), "gD (added to)");
    }

    // ---- lm_head + cross-entropy ----

    // (rows, vocab, width)
    [TestCase(1, 5, 3)]
    [TestCase(13, 17, 8)]
    [TestCase(300, 11, 4)] // more than one chunk of rows
    public void LinearCrossEntropyBackwardMatchesFiniteDifferences(int rows, int vocab, int width)
    {
        var rng = new Random(rows * 13 + vocab * 7 + width);
        const int ignore = -100;
        var hidden = Random(rng, rows * width, 2);
        var w = Random(rng, vocab * width);
        var targets = Enumerable.Range(0, rows).Select(i => rng.NextDouble() < 0.25 ? ignore : rng.Next(vocab)).ToArray();
        targets[0] = rows > 1 ? ignore : 2;
        if (rows > 1) targets[^1] = vocab - 1;
        int valid = targets.Count(t => t != ignore);
        float scale = 1f / valid;
        double[] hd = D(hidden), wd = D(w);

        // The reference forward against the backend's Linear + CrossEntropySum.
        var logits = Backend.Allocate(DType.F32, rows, vocab);
        Backend.Linear(Up(hidden, rows, width), Up(w, vocab, width), null, logits);
        double backendLoss = Backend.CrossEntropySum(logits, targets, ignore, out int backendCount);
        double referenceLoss = LinearCrossEntropy(hd, wd, targets, ignore, rows, vocab, width);
        Assert.That(backendCount, Is.EqualTo(valid));
        Assert.That(backendLoss, Is.EqualTo(referenceLoss).Within(1e-5 * Math.Abs(referenceLoss)));

        double Loss() => scale * LinearCrossEntropy(hd, wd, targets, ignore, rows, vocab, width);
        var fdH = FiniteDifferences(hd, Loss);
        var fdW = FiniteDifferences(wd, Loss);
        var gh = Up(Random(rng, rows * width, 9), rows, width); // overwritten, ignored rows with zeros
        var gwInit = Random(rng, vocab * width);
        var gw = Up(gwInit, vocab, width);
        double loss = Backend.LinearCrossEntropyBackward(Up(hidden, rows, width), Up(w, vocab, width), targets, ignore, scale, gh, gw, out int count);
        Assert.That(count, Is.EqualTo(valid));
        Assert.That(loss, Is.EqualTo(referenceLoss).Within(1e-5 * Math.Abs(referenceLoss)), "returned loss sum");
        var gotH = Get(gh);
        AssertGradient(fdH, gotH, "g hidden");
        for (int r = 0; r < rows; r++)
            if (targets[r] == ignore)
                Assert.That(gotH.AsSpan(r * width, width).ToArray(), Is.All.EqualTo(0f), $"ignored row {r} has a zero gradient");
        AssertGradient(Plus(gwInit, fdW), Get(gw), "g weight (added to)");
    }

    [Test]
    public void LinearCrossEntropyBackwardWithEveryRowIgnored()
    {
        var gh = Up([1, 2, 3, 4], 2, 2);
        var gw = Up([5, 6, 7, 8, 9, 10], 3, 2);
        double loss = Backend.LinearCrossEntropyBackward(Up([1, 2, 3, 4], 2, 2), Up([1, 0, 0, 1, 1, 1], 3, 2), [-100, -100], -100, 1f, gh, gw, out int count);
        Assert.That((loss, count), Is.EqualTo((0.0, 0)));
        Assert.That(Get(gh), Is.All.EqualTo(0f));
        Assert.That(Get(gw), Is.EqualTo(new float[] { 5, 6, 7, 8, 9, 10 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Backend.LinearCrossEntropyBackward(Up([1, 2, 3, 4], 2, 2), Up([1, 0, 0, 1, 1, 1], 3, 2), [0, 3], -100, 1f, gh, gw, out _));
        Assert.Throws<ArgumentException>(() => Backend.LinearCrossEntropyBackward(Up([1, 2, 3, 4], 2, 2), Up([1, 0, 0, 1, 1, 1], 3, 2), [0], -100, 1f, gh, gw, out _));
    }

    // ---- Embedding ----

    [Test]
    public void EmbeddingBackwardScatterAddsRepeatedIds()
    {
        var rng = new Random(5);
        const int vocab = 7, width = 5;
        int[] ids = [3, 0, 3, 6, 3, 0];
        var go = Random(rng, ids.Length * width);
        var initial = Random(rng, vocab * width);
        var expected = initial.Select(v => (double)v).ToArray();
        for (int m = 0; m < ids.Length; m++)
            for (int j = 0; j < width; j++) expected[ids[m] * width + j] += go[m * width + j];
        var table = Up(initial, vocab, width);
        Backend.EmbeddingBackward(ids, Up(go, ids.Length, width), table);
        AssertGradient(expected, Get(table), "scatter-add", 1e-6);
        for (int j = 0; j < width; j++)
        {
            Assert.That(Get(table)[1 * width + j], Is.EqualTo(initial[1 * width + j]), "rows without ids are untouched");
            Assert.That(Get(table)[5 * width + j], Is.EqualTo(initial[5 * width + j]), "rows without ids are untouched");
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => Backend.EmbeddingBackward([7], Up(go[..width], 1, width), table));
        Assert.Throws<ArgumentException>(() => Backend.EmbeddingBackward([1, 2], Up(go[..width], 1, width), table));
    }

    // ---- Sum of squares, AdamW ----

    [TestCase(1)]
    [TestCase(1000)]
    [TestCase(200_001)]
    public void SumOfSquaresIsFloat64(int count)
    {
        var data = Random(new Random(count), count, 3);
        double expected = 0;
        foreach (var v in data) expected += (double)v * v;
        Assert.That(Backend.SumOfSquares(Up(data, count)), Is.EqualTo(expected).Within(1e-12 * expected));
    }

    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(true, true)]
    public void AdamWStepMatchesTorchFormula(bool withParameter, bool negExp)
    {
        var rng = new Random(17);
        const int count = 1001;
        const double lr = 3e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, wd = 0.1, scale = 0.5;
        var master = Random(rng, count);
        var m = Backend.Allocate(DType.F32, count);
        var v = Backend.Allocate(DType.F32, count);
        var masterT = Up(master, count);
        var parameter = withParameter ? Backend.Allocate(DType.F32, count) : null;
        double[] pRef = D(master), mRef = new double[count], vRef = new double[count];
        for (int step = 1; step <= 5; step++)
        {
            var grad = Random(rng, count, 2);
            if (step == 3) Array.Clear(grad, 0, 10); // zero gradients still decay
            double bc1 = 1 - Math.Pow(beta1, step), bc2 = 1 - Math.Pow(beta2, step);
            // torch.optim.AdamW (single tensor): param.mul_(1 − lr·wd); exp_avg.lerp_(g, 1 − β1);
            // exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2); denom = sqrt(exp_avg_sq)/sqrt(bc2) + eps; param.addcdiv_(exp_avg, denom, −lr/bc1).
            for (int i = 0; i < count; i++)
            {
                double g = scale * grad[i];
                pRef[i] *= 1 - lr * wd;
                mRef[i] += (g - mRef[i]) * (1 - beta1);
                vRef[i] = vRef[i] * beta2 + (1 - beta2) * g * g;
                pRef[i] -= lr / bc1 * mRef[i] / (Math.Sqrt(vRef[i]) / Math.Sqrt(bc2) + eps);
            }
            var args = new AdamWStepArgs((float)lr, (float)beta1, (float)beta2, (float)eps, (float)wd, (float)bc1, (float)bc2, (float)scale);
            Backend.AdamWStep(masterT, Up(grad, count), m, v, parameter, negExp, args);
        }
        AssertGradient(pRef, Get(masterT), "master", 1e-5);
        AssertGradient(mRef, Get(m), "m", 1e-5);
        AssertGradient(vRef, Get(v), "v", 1e-5);
        if (parameter is not null)
            AssertGradient(pRef.Select(p => negExp ? -Math.Exp(p) : p).ToArray(), Get(parameter), "parameter", 1e-5);
        Assert.Throws<ArgumentException>(() => Backend.AdamWStep(masterT, Up(new float[3], 3), m, v, null, false, default));
    }

    // ---- Determinism ----

    /// <summary>The training ops give the same bits for 1 and 8 threads (the parallel paths engaged: shapes past the serial cut-offs).</summary>
    [Test]
    public void BackwardOpsAreBitIdenticalForAnyThreadCount()
    {
        const int batch = 2, length = 70, inner = 96, n = 16, rank = 6, kernel = 4, vocab = 300;
        int rows = batch * length, width = rank + 2 * n;
        var rng = new Random(99);
        var u = Random(rng, rows * inner);
        var dbc = Random(rng, rows * width);
        var xz = Random(rng, rows * 2 * inner, 2);
        var wdt = Random(rng, inner * rank);
        var bdt = Random(rng, inner);
        var aLog = Random(rng, inner * n);
        var d = Random(rng, inner);
        var g = Random(rng, rows * inner);
        var convW = Random(rng, inner * kernel);
        var hidden = Random(rng, rows * inner);
        var head = Random(rng, vocab * inner);
        var targets = Enumerable.Range(0, rows).Select(i => i % 5 == 0 ? -100 : rng.Next(vocab)).ToArray();
        List<float[]> Run(CpuBackend backend)
        {
            CpuTensor T(float[] data, params int[] shape) => (CpuTensor)backend.Upload(data, DType.F32, shape);
            var results = new List<float[]>();
            var ssm = new SsmParameters(T(wdt, inner, rank), T(bdt, inner), T(aLog.Select(v => -MathF.Exp(v)).ToArray(), inner, n), T(d, inner));
            var grads = new SsmGradients(T(new float[inner * rank], inner, rank), T(new float[inner], inner), T(new float[inner * n], inner, n), T(new float[inner], inner));
            var gu = T(new float[rows * inner], batch, length, inner);
            var gdbc = T(new float[rows * width], batch, length, width);
            var gxz = T(new float[rows * 2 * inner], batch, length, 2 * inner);
            backend.SelectiveScanBackward(ssm, T(u, batch, length, inner), T(dbc, batch, length, width), T(xz, batch, length, 2 * inner),
                T(g, batch, length, inner), gu, gdbc, gxz, grads);
            var cw = T(new float[inner * kernel], inner, kernel);
            var cb = T(new float[inner], inner);
            backend.CausalConv1dBackward(T(xz, batch, length, 2 * inner), T(convW, inner, kernel), T(d, inner), null, gu, gxz, cw, cb);
            var lw = T(new float[inner * width], width, inner);
            var lx = T(new float[rows * inner], rows, inner);
            var lb = T(new float[width], width);
            backend.LinearBackward(T(u, rows, inner), T(lw.Data.Select((_, i) => (float)Math.Sin(i)).ToArray(), width, inner), gdbc, lx, false, lw, lb);
            var ni = T(new float[rows * inner], rows, inner);
            var nw = T(new float[inner], inner);
            backend.AddRmsNormBackward(T(hidden, rows, inner), T(d, inner), 1e-5f, T(g, rows, inner), ni, nw);
            var hh = T(new float[rows * inner], rows, inner);
            var hw = T(new float[vocab * inner], vocab, inner);
            double loss = backend.LinearCrossEntropyBackward(T(hidden, rows, inner), T(head, vocab, inner), targets, -100, 0.01f, hh, hw, out _);
            foreach (var t in new[] { gu, gdbc, gxz, (CpuTensor)grads.DtProjWeight, (CpuTensor)grads.DtProjBias, (CpuTensor)grads.ALog, (CpuTensor)grads.D,
                cw, cb, lw, lx, lb, ni, nw, hh, hw })
                results.Add((float[])t.Data.Clone());
            results.Add([(float)loss, (float)(loss - (float)loss)]);
            return results;
        }
        var one = Run(new CpuBackend(threads: 1));
        var many = Run(new CpuBackend(threads: 8));
        var again = Run(new CpuBackend(threads: 8));
        for (int i = 0; i < one.Count; i++)
        {
            Assert.That(many[i], Is.EqualTo(one[i]), $"result {i}: 8 threads differ from 1");
            Assert.That(again[i], Is.EqualTo(many[i]), $"result {i}: two runs differ");
        }
    }
}
