using Mamba.Compute.Cpu;

namespace Mamba.Tests.Cpu;

/// <summary>
/// The int8 per-row weight quantization (<see cref="Int8RowQuantized"/>) and the linear over it
/// (<see cref="CpuInt8Linear"/>): the rounding bound, edge rows, the kernel against a float64 oracle over the
/// dequantized weights at shapes that hit every vector tail and tile, determinism under parallelism, and the accuracy
/// lost against the float32 weights.
/// </summary>
public class Int8LinearTests
{
    private static float[] Uniform(Random rng, int count, double scale = 1.0)
    {
        var data = new float[count];
        for (int i = 0; i < count; i++) data[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return data;
    }

    private static float[] Gaussian(Random rng, int count, double std)
    {
        var data = new float[count];
        for (int i = 0; i < count; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            data[i] = (float)(std * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return data;
    }

    [TestCase(1, 1)]
    [TestCase(5, 17)]
    [TestCase(64, 1539)]
    public void QuantizationErrorIsAtMostHalfAStep(int n, int k)
    {
        var rng = new Random(n * 31 + k);
        var w = Uniform(rng, n * k);
        for (int i = 0; i < n; i++) // rows of very different magnitudes
            for (int p = 0; p < k; p++) w[i * k + p] *= MathF.Pow(10f, i % 7 - 3);
        var q = Int8RowQuantized.Quantize(w, n, k);
        Assert.That(q.N, Is.EqualTo(n));
        Assert.That(q.K, Is.EqualTo(k));
        Assert.That(q.Q, Has.Length.EqualTo(n * k));
        Assert.That(q.Scales, Has.Length.EqualTo(n));
        var d = q.Dequantize();
        for (int i = 0; i < n; i++)
        {
            float s = q.Scales[i];
            double max = 0;
            for (int p = 0; p < k; p++) max = Math.Max(max, Math.Abs(w[i * k + p]));
            Assert.That(s, Is.EqualTo((float)(max / 127)).Within(1).Ulps, $"scale of row {i}");
            for (int p = 0; p < k; p++)
            {
                int v = q.Q[i * k + p];
                Assert.That(v, Is.InRange(-127, 127));
                // Half a step, plus the float rounding of w / s and of s · q (a few ulps of the value).
                double bound = s / 2.0 * (1 + 1e-6) + 4e-7 * Math.Abs(w[i * k + p]);
                Assert.That(Math.Abs((double)d[i * k + p] - w[i * k + p]), Is.LessThanOrEqualTo(bound), $"row {i}, column {p}");
            }
        }
    }

    [Test]
    public void ZeroRowsStayZeroAndOneLargeValueTakesTheFullRange()
    {
        const int k = 20;
        var w = new float[3 * k];                         // row 0: all zero
        w[k + 7] = 1000f; w[k + 3] = 1f; w[k + 4] = -3.9f; // row 1: one large value, the rest below half a step
        for (int p = 0; p < k; p++) w[2 * k + p] = -0.5f; // row 2: constant negative
        var q = Int8RowQuantized.Quantize(w, 3, k);
        Assert.That(q.Scales[0], Is.EqualTo(0f));
        Assert.That(q.Q.AsSpan(0, k).ToArray(), Is.All.EqualTo((sbyte)0));
        Assert.That(q.Scales[1], Is.EqualTo(1000f / 127f));
        Assert.That(q.Q[k + 7], Is.EqualTo((sbyte)127));
        Assert.That(q.Q[k + 3], Is.EqualTo((sbyte)0));   // 1 / 7.87 rounds to 0
        Assert.That(q.Q[k + 4], Is.EqualTo((sbyte)0));   // -3.9 / 7.87 = -0.4953 rounds to 0
        Assert.That(q.Q.AsSpan(2 * k, k).ToArray(), Is.All.EqualTo((sbyte)-127));
        var d = q.Dequantize();
        Assert.That(d.AsSpan(0, k).ToArray(), Is.All.EqualTo(0f));
        Assert.That(d[k + 7], Is.EqualTo(1000f).Within(1e-3f));
    }

    [TestCase(float.NaN)]
    [TestCase(float.PositiveInfinity)]
    [TestCase(float.NegativeInfinity)]
    public void NonFiniteWeightsAreRejectedNamingTheRow(float bad)
    {
        var w = new float[4 * 8];
        w[2 * 8 + 5] = bad;
        var e = Assert.Throws<ArgumentException>(() => Int8RowQuantized.Quantize(w, 4, 8));
        Assert.That(e!.Message, Does.Contain("row 2"));
        Assert.That(e.ParamName, Is.EqualTo("w"));
    }

    [Test]
    public void ArgumentsAreValidated()
    {
        Assert.Throws<ArgumentException>(() => Int8RowQuantized.Quantize(new float[10], 3, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => Int8RowQuantized.Quantize(new float[0], -1, 4));
        var q = Int8RowQuantized.Quantize(new float[3 * 4], 3, 4);
        Assert.That(Assert.Throws<ArgumentException>(() => CpuInt8Linear.Linear(new float[7], 2, q, default, new float[6], false))!.ParamName, Is.EqualTo("x"));
        Assert.That(Assert.Throws<ArgumentException>(() => CpuInt8Linear.Linear(new float[8], 2, q, default, new float[5], false))!.ParamName, Is.EqualTo("y"));
        Assert.That(Assert.Throws<ArgumentException>(() => CpuInt8Linear.Linear(new float[8], 2, q, new float[2], new float[6], false))!.ParamName, Is.EqualTo("bias"));
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuInt8Linear.Linear(new float[8], -1, q, default, new float[6], false));
        Assert.Throws<ArgumentNullException>(() => CpuInt8Linear.Linear(new float[8], 2, null!, default, new float[6], false));
        CpuInt8Linear.Linear(default, 0, q, default, default, true); // m = 0: nothing to do
    }

    private static IEnumerable<TestCaseData> Shapes()
    {
        foreach (int m in new[] { 1, 2, 3, 7, 16 })
            foreach (int k in new[] { 1, 15, 16, 17, 64, 1536 + 3 })
                foreach (int n in new[] { 1, 5, 64, 300 })
                    yield return new TestCaseData(m, n, k);
    }

    /// <summary>
    /// Against Σ x·(s·q) in float64 over the dequantized weights, so only the float32 accumulation (and the scale
    /// applied after the sum rather than per element) differs. Parallel and serial must give the same bits.
    /// </summary>
    [TestCaseSource(nameof(Shapes))]
    public void LinearMatchesTheFloat64OracleOverTheDequantizedWeights(int m, int n, int k)
    {
        var rng = new Random(m * 1_000_003 + n * 1009 + k);
        var w = Uniform(rng, n * k, 0.5);
        for (int i = 0; i < n; i++) // rows of different scales, and one zero row where there are several
            for (int p = 0; p < k; p++) w[i * k + p] *= i == 3 ? 0f : 1 + i % 5;
        var q = Int8RowQuantized.Quantize(w, n, k);
        var wd = q.Dequantize();
        var x = Uniform(rng, m * k);
        var bias = Uniform(rng, n);
        foreach (bool withBias in new[] { false, true })
        {
            var expected = Float64Oracle.Linear(x, wd, withBias ? bias : null, m, n, k);
            var serial = new float[m * n];
            var parallel = new float[m * n];
            CpuInt8Linear.Linear(x, m, q, withBias ? bias : default, serial, parallel: false);
            CpuInt8Linear.Linear(x, m, q, withBias ? bias : default, parallel, parallel: true);
            double maxRef = expected.Max(Math.Abs), maxErr = 0;
            for (int i = 0; i < expected.Length; i++) maxErr = Math.Max(maxErr, Math.Abs(expected[i] - serial[i]));
            Assert.That(maxErr, Is.LessThanOrEqualTo(1e-5 * Math.Max(maxRef, 1e-30)), $"bias {withBias}: max error {maxErr:E3}, max|ref| {maxRef:E3}");
            for (int i = 0; i < serial.Length; i++)
                Assert.That(BitConverter.SingleToInt32Bits(parallel[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(serial[i])),
                    $"bias {withBias}, output {i}: serial {serial[i]:R}, parallel {parallel[i]:R}");
        }
    }

    /// <summary>
    /// The decode shape of the 130m model's in_proj (n = 3072, k = 768), large enough to run over several tasks, and
    /// m = 5 (the 4-input tile plus one): parallel gives the serial bits, and a row's output does not depend on the
    /// rows beside it (each input alone gives the same bits as inside the batch).
    /// </summary>
    [Test]
    public void ParallelAndBatchedGiveTheSameBitsAsSerialAndAlone()
    {
        const int m = 5, n = 3072, k = 768;
        var rng = new Random(7);
        var q = Int8RowQuantized.Quantize(Gaussian(rng, n * k, 0.02), n, k);
        var x = Gaussian(rng, m * k, 1);
        var bias = Gaussian(rng, n, 0.1);
        var serial = new float[m * n];
        var parallel = new float[m * n];
        CpuInt8Linear.Linear(x, m, q, bias, serial, parallel: false);
        CpuInt8Linear.Linear(x, m, q, bias, parallel, parallel: true);
        Assert.That(parallel, Is.EqualTo(serial).AsCollection);
        var alone = new float[n];
        for (int i = 0; i < m; i++)
        {
            CpuInt8Linear.Linear(x.AsSpan(i * k, k), 1, q, bias, alone, parallel: true);
            Assert.That(alone, Is.EqualTo(serial.AsSpan(i * n, n).ToArray()).AsCollection, $"row {i}");
        }
    }

    /// <summary>
    /// What int8 costs against the float32 weights on model-like data: Gaussian weights (std 0.02), k = 768.
    /// Expected relative error ‖y_int8 − y_f32‖ / ‖y_f32‖: a row's step is s = max|w|/127, and the max of 768
    /// Gaussians is about 3.2σ, so s ≈ 0.025σ; the rounding errors are uniform in ±s/2 (rms s/√12 ≈ 0.0073σ) and
    /// independent of x and w, so the output error relative to the output is also ≈ 0.0073 (0.7 %). The bound 1.5 %
    /// leaves room for rows whose max reaches ~4.5σ while still catching a wrong scale (an off-by-one in the range or a
    /// truncating round roughly doubles the error; a broken kernel is far off).
    /// </summary>
    [Test]
    public void AccuracyAgainstTheFloat32WeightsIsAboutOnePercent()
    {
        const int m = 4, n = 512, k = 768;
        var rng = new Random(2024);
        var w = Gaussian(rng, n * k, 0.02);
        var x = Gaussian(rng, m * k, 1);
        var q = Int8RowQuantized.Quantize(w, n, k);
        var y = new float[m * n];
        CpuInt8Linear.Linear(x, m, q, default, y, parallel: true);
        var reference = Float64Oracle.Linear(x, w, null, m, n, k);
        double err2 = 0, ref2 = 0, maxRel = 0, maxRef = reference.Max(Math.Abs);
        for (int i = 0; i < y.Length; i++)
        {
            double e = y[i] - reference[i];
            err2 += e * e;
            ref2 += reference[i] * reference[i];
            maxRel = Math.Max(maxRel, Math.Abs(e) / maxRef);
        }
        double rel = Math.Sqrt(err2 / ref2);
        TestContext.Out.WriteLine($"int8 per-row vs float32 weights (Gaussian std 0.02, m = {m}, n = {n}, k = {k}): " +
            $"relative L2 error {rel:P3}, max |error| / max |y| {maxRel:P3}");
        Assert.That(rel, Is.LessThan(0.015));
        Assert.That(rel, Is.GreaterThan(0.001), "suspiciously exact: is the kernel reading the float weights?");
    }
}
