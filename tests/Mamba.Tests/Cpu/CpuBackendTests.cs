using Mamba.Compute;
using Mamba.Compute.Cpu;

namespace Mamba.Tests.Cpu;

/// <summary>Every CPU backend op against the float64 oracle, over sizes that hit vector tails, L = 1 and L &lt; K.</summary>
public class CpuBackendTests
{
    private static readonly CpuBackend Backend = new(threads: 2);

    private static float[] Random(Random rng, int count, double scale = 1.0)
    {
        var data = new float[count];
        for (int i = 0; i < count; i++) data[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return data;
    }

    private static void AssertClose(double[] expected, float[] actual, double relTol, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), what);
        double maxRef = expected.Max(Math.Abs), maxErr = 0;
        int worst = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs(expected[i] - actual[i]);
            if (double.IsNaN(actual[i])) err = double.PositiveInfinity;
            if (err > maxErr) { maxErr = err; worst = i; }
        }
        Assert.That(maxErr, Is.LessThanOrEqualTo(relTol * Math.Max(maxRef, 1e-30)),
            $"{what}: max error {maxErr:E3} at {worst} (expected {(worst >= 0 ? expected[worst] : 0)}, got {(worst >= 0 ? actual[worst] : 0)}), max|ref| {maxRef:E3}");
    }

    private static float[] Get(DeviceTensor t)
    {
        var data = new float[t.ElementCount];
        Backend.Download(t, data);
        return data;
    }

    [TestCase(1, 1, 1)]
    [TestCase(1, 7, 13)]
    [TestCase(5, 3, 8)]
    [TestCase(4, 2, 16)]
    [TestCase(9, 11, 67)]
    [TestCase(66, 130, 97)]
    [TestCase(40, 200, 40)]
    [TestCase(37, 300, 47)]
    [TestCase(100, 257, 771)]
    [TestCase(3, 50280 / 40, 33)]
    public void LinearMatchesOracle(int m, int n, int k)
    {
        var rng = new Random(m * 1000 + n * 10 + k);
        var x = Random(rng, m * k);
        var w = Random(rng, n * k);
        var bias = Random(rng, n);
        foreach (var withBias in new[] { false, true })
        {
            var y = Backend.Allocate(DType.F32, m, n);
            Array.Fill(((CpuTensor)y).Data, float.NaN); // poisoned: every element must be written
            Backend.Linear(Backend.Upload(x, DType.F32, m, k), Backend.Upload(w, DType.F32, n, k),
                withBias ? Backend.Upload(bias, DType.F32, n) : null, y);
            AssertClose(Float64Oracle.Linear(x, w, withBias ? bias : null, m, n, k), Get(y), 1e-5, $"linear bias={withBias}");
        }
    }

    /// <summary>
    /// A row's output does not depend on the other rows of the call (decode GEMV, small-M tiles and the packed
    /// prefill kernel all keep one summation order), so a sequence gives the same bits alone or in a batch.
    /// </summary>
    [TestCase(70, 160, 97)]
    [TestCase(45, 131, 768)]
    [TestCase(9, 130, 40)]
    public void LinearRowsAreBitIdenticalAloneAndBatched(int m, int n, int k)
    {
        var rng = new Random(m * 7 + n * 3 + k);
        var x = Random(rng, m * k);
        var w = Backend.Upload(Random(rng, n * k), DType.F32, n, k);
        var all = Backend.Allocate(DType.F32, m, n);
        Backend.Linear(Backend.Upload(x, DType.F32, m, k), w, null, all);
        var batched = Get(all);
        foreach (int row in new[] { 0, 1, m / 2, m - 1 })
        {
            var one = Backend.Allocate(DType.F32, 1, n);
            Backend.Linear(Backend.Upload(x.AsSpan(row * k, k).ToArray(), DType.F32, 1, k), w, null, one);
            Assert.That(Get(one), Is.EqualTo(batched.AsSpan(row * n, n).ToArray()), $"row {row} of {m}");
        }
    }

    [TestCase(1, 1)]
    [TestCase(3, 7)]
    [TestCase(2, 64)]
    [TestCase(5, 771)]
    public void AddRmsNormMatchesOracle(int rows, int d)
    {
        var rng = new Random(rows * 31 + d);
        var residual = Random(rng, rows * d, 3);
        var delta = Random(rng, rows * d);
        var w = Random(rng, d, 2);
        var sum = residual.Zip(delta, (a, b) => a + b).ToArray();
        var r = Backend.Upload(residual, DType.F32, rows, d);
        var y = Backend.Allocate(DType.F32, rows, d);
        Backend.AddRmsNorm(r, Backend.Upload(delta, DType.F32, rows, d), Backend.Upload(w, DType.F32, d), 1e-5f, y);
        AssertClose(sum.Select(v => (double)v).ToArray(), Get(r), 1e-6, "residual after add");
        AssertClose(Float64Oracle.RmsNorm(sum, w, 1e-5, rows, d), Get(y), 1e-5, "rmsnorm");
        // Without delta: a pure norm of the residual.
        var y2 = Backend.Allocate(DType.F32, rows, d);
        Backend.AddRmsNorm(Backend.Upload(residual, DType.F32, rows, d), null, Backend.Upload(w, DType.F32, d), 1e-5f, y2);
        AssertClose(Float64Oracle.RmsNorm(residual, w, 1e-5, rows, d), Get(y2), 1e-5, "rmsnorm without delta");
    }

    // (batch, length, inner, kernel): L = 1, L < K, L = K, odd/prime lengths, E not a multiple of 8.
    [TestCase(1, 1, 8, 4)]
    [TestCase(2, 2, 13, 4)]
    [TestCase(3, 3, 16, 3)]
    [TestCase(1, 4, 24, 4)]
    [TestCase(2, 17, 37, 4)]
    [TestCase(2, 31, 64, 2)]
    [TestCase(1, 300, 40, 4)]
    public void CausalConv1dMatchesOracle(int batch, int length, int inner, int kernel)
    {
        var rng = new Random(batch * 7 + length * 13 + inner);
        var xz = Random(rng, batch * length * 2 * inner, 2);
        var w = Random(rng, inner * kernel);
        var bias = Random(rng, inner);
        var mask = new float[batch * length];
        for (int i = 0; i < mask.Length; i++) mask[i] = rng.Next(4) == 0 ? 0 : 1;
        foreach (var (useBias, useMask) in new[] { (true, false), (false, true), (true, true) })
        {
            var u = Backend.Allocate(DType.F32, batch, length, inner);
            var state = Backend.Allocate(DType.F32, batch, inner, kernel);
            Array.Fill(((CpuTensor)u).Data, float.NaN);
            Array.Fill(((CpuTensor)state).Data, float.NaN);
            Backend.CausalConv1d(Backend.Upload(xz, DType.F32, batch, length, 2 * inner), Backend.Upload(w, DType.F32, inner, kernel),
                useBias ? Backend.Upload(bias, DType.F32, inner) : null, useMask ? Backend.Upload(mask, DType.F32, batch * length) : null, u, state);
            var (expectedU, expectedState) = Float64Oracle.Conv(xz, w, useBias ? bias : null, useMask ? mask : null, batch, length, inner, kernel);
            AssertClose(expectedU, Get(u), 1e-5, $"conv output bias={useBias} mask={useMask}");
            AssertClose(expectedState, Get(state), 0, "conv state");
        }
    }

    [TestCase(1, 8, 4)]
    [TestCase(3, 13, 3)]
    [TestCase(2, 40, 4)]
    public void CausalConv1dStepContinuesTheFullConv(int batch, int inner, int kernel)
    {
        // Prefill L tokens then step once must equal the full conv over L + 1 tokens at the last position.
        var rng = new Random(batch + inner + kernel);
        const int length = 5;
        var xz = Random(rng, batch * (length + 1) * 2 * inner);
        var w = Random(rng, inner * kernel);
        var bias = Random(rng, inner);
        var prefix = new float[batch * length * 2 * inner];
        var last = new float[batch * 2 * inner];
        for (int b = 0; b < batch; b++)
        {
            Array.Copy(xz, b * (length + 1) * 2 * inner, prefix, b * length * 2 * inner, length * 2 * inner);
            Array.Copy(xz, (b * (length + 1) + length) * 2 * inner, last, b * 2 * inner, 2 * inner);
        }
        var wt = Backend.Upload(w, DType.F32, inner, kernel);
        var bt = Backend.Upload(bias, DType.F32, inner);
        var state = Backend.Allocate(DType.F32, batch, inner, kernel);
        Backend.CausalConv1d(Backend.Upload(prefix, DType.F32, batch, length, 2 * inner), wt, bt, null, Backend.Allocate(DType.F32, batch, length, inner), state);
        var u = Backend.Allocate(DType.F32, batch, inner);
        Backend.CausalConv1dStep(Backend.Upload(last, DType.F32, batch, 2 * inner), wt, bt, state, u);
        var (full, fullState) = Float64Oracle.Conv(xz, w, bias, null, batch, length + 1, inner, kernel);
        var expected = new double[batch * inner];
        for (int b = 0; b < batch; b++) Array.Copy(full, (b * (length + 1) + length) * inner, expected, b * inner, inner);
        AssertClose(expected, Get(u), 1e-5, "conv step output");
        AssertClose(fullState, Get(state), 0, "conv state after step");
    }

    // (batch, length, inner, state, rank)
    [TestCase(1, 1, 8, 16, 4)]
    [TestCase(2, 3, 13, 1, 1)]
    [TestCase(1, 2, 16, 7, 3)]
    [TestCase(3, 17, 24, 16, 6)]
    [TestCase(2, 67, 37, 64, 5)]
    [TestCase(1, 300, 32, 16, 8)]
    public void SelectiveScanMatchesOracle(int batch, int length, int inner, int n, int rank)
    {
        var rng = new Random(batch * 3 + length * 5 + inner * 7 + n);
        var u = Random(rng, batch * length * inner);
        var dbc = Random(rng, batch * length * (rank + 2 * n));
        var xz = Random(rng, batch * length * 2 * inner, 2);
        var wdt = Random(rng, inner * rank);
        var bdt = Random(rng, inner, 3);
        bdt[0] = 25; // past the softplus threshold
        var aLog = Random(rng, inner * n, 1.5);
        var d = Random(rng, inner);
        var (expectedY, expectedState) = Float64Oracle.Scan(u, dbc, xz, wdt, bdt, aLog, d, null, batch, length, inner, n, rank);
        var ssm = Ssm(wdt, bdt, aLog, d, inner, n, rank);
        var y = Backend.Allocate(DType.F32, batch, length, inner);
        var state = Backend.Allocate(DType.F32, batch, inner, n);
        Array.Fill(((CpuTensor)y).Data, float.NaN);
        Array.Fill(((CpuTensor)state).Data, float.NaN);
        Backend.SelectiveScan(ssm, Backend.Upload(u, DType.F32, batch, length, inner), Backend.Upload(dbc, DType.F32, batch, length, rank + 2 * n),
            Backend.Upload(xz, DType.F32, batch, length, 2 * inner), y, state);
        AssertClose(expectedY, Get(y), 2e-5, "scan output");
        AssertClose(expectedState, Get(state), 2e-5, "final state");
    }

    [TestCase(1, 8, 16, 4)]
    [TestCase(3, 13, 5, 2)]
    [TestCase(2, 37, 64, 7)]
    public void SelectiveStateStepMatchesOracle(int batch, int inner, int n, int rank)
    {
        var rng = new Random(batch + inner * 3 + n);
        var u = Random(rng, batch * inner);
        var dbc = Random(rng, batch * (rank + 2 * n));
        var xz = Random(rng, batch * 2 * inner);
        var wdt = Random(rng, inner * rank);
        var bdt = Random(rng, inner);
        var aLog = Random(rng, inner * n);
        var d = Random(rng, inner);
        var initial = Random(rng, batch * inner * n, 2);
        var (expectedY, expectedState) = Float64Oracle.Scan(u, dbc, xz, wdt, bdt, aLog, d, initial, batch, 1, inner, n, rank);
        var state = Backend.Upload(initial, DType.F32, batch, inner, n);
        var y = Backend.Allocate(DType.F32, batch, inner);
        Backend.SelectiveStateStep(Ssm(wdt, bdt, aLog, d, inner, n, rank), Backend.Upload(u, DType.F32, batch, inner),
            Backend.Upload(dbc, DType.F32, batch, rank + 2 * n), Backend.Upload(xz, DType.F32, batch, 2 * inner), state, y);
        AssertClose(expectedY, Get(y), 2e-5, "step output");
        AssertClose(expectedState, Get(state), 2e-5, "state after step");
    }

    // Continuing from a state over a chunk equals running the whole sequence at once (lengths below and above K).
    [TestCase(1, 1, 2, 8, 4, 16)]
    [TestCase(2, 5, 2, 13, 4, 5)]
    [TestCase(3, 7, 9, 24, 3, 16)]
    [TestCase(1, 40, 33, 37, 4, 8)]
    public void ContinuationOpsEqualOneLongRun(int batch, int first, int second, int inner, int kernel, int n)
    {
        var rng = new Random(batch * 101 + first * 7 + second);
        const int rank = 3;
        int total = first + second;
        var xz = Random(rng, batch * total * 2 * inner, 2);
        var u = Random(rng, batch * total * inner);
        var dbc = Random(rng, batch * total * (rank + 2 * n));
        var w = Random(rng, inner * kernel);
        var bias = Random(rng, inner);
        var wdt = Random(rng, inner * rank);
        var bdt = Random(rng, inner);
        var aLog = Random(rng, inner * n);
        var d = Random(rng, inner);
        float[] Slice(float[] data, int width, int start, int count)
        {
            var part = new float[batch * count * width];
            for (int b = 0; b < batch; b++) Array.Copy(data, (b * total + start) * width, part, b * count * width, count * width);
            return part;
        }
        var (convFull, convStateFull) = Float64Oracle.Conv(xz, w, bias, null, batch, total, inner, kernel);
        var (scanFull, stateFull) = Float64Oracle.Scan(u, dbc, xz, wdt, bdt, aLog, d, null, batch, total, inner, n, rank);
        var wt = Backend.Upload(w, DType.F32, inner, kernel);
        var bt = Backend.Upload(bias, DType.F32, inner);
        var ssm = Ssm(wdt, bdt, aLog, d, inner, n, rank);
        var convState = Backend.Allocate(DType.F32, batch, inner, kernel);
        var ssmState = Backend.Allocate(DType.F32, batch, inner, n);
        var u2 = Backend.Allocate(DType.F32, batch, second, inner);
        var y2 = Backend.Allocate(DType.F32, batch, second, inner);
        Backend.CausalConv1d(Backend.Upload(Slice(xz, 2 * inner, 0, first), DType.F32, batch, first, 2 * inner), wt, bt, null, Backend.Allocate(DType.F32, batch, first, inner), convState);
        Backend.SelectiveScan(ssm, Backend.Upload(Slice(u, inner, 0, first), DType.F32, batch, first, inner), Backend.Upload(Slice(dbc, rank + 2 * n, 0, first), DType.F32, batch, first, rank + 2 * n),
            Backend.Upload(Slice(xz, 2 * inner, 0, first), DType.F32, batch, first, 2 * inner), Backend.Allocate(DType.F32, batch, first, inner), ssmState);
        var xz2 = Backend.Upload(Slice(xz, 2 * inner, first, second), DType.F32, batch, second, 2 * inner);
        Backend.CausalConv1dContinue(xz2, wt, bt, u2, convState);
        Backend.SelectiveScanContinue(ssm, Backend.Upload(Slice(u, inner, first, second), DType.F32, batch, second, inner),
            Backend.Upload(Slice(dbc, rank + 2 * n, first, second), DType.F32, batch, second, rank + 2 * n), xz2, y2, ssmState);
        double[] Tail(double[] full, int width) { var part = new double[batch * second * width]; for (int b = 0; b < batch; b++) Array.Copy(full, (b * total + first) * width, part, b * second * width, second * width); return part; }
        AssertClose(Tail(convFull, inner), Get(u2), 1e-5, "conv continuation");
        AssertClose(convStateFull, Get(convState), 0, "conv state after continuation");
        AssertClose(Tail(scanFull, inner), Get(y2), 2e-5, "scan continuation");
        AssertClose(stateFull, Get(ssmState), 2e-5, "ssm state after continuation");
    }

    private static SsmParameters Ssm(float[] wdt, float[] bdt, float[] aLog, float[] d, int inner, int n, int rank) =>
        new(Backend.Upload(wdt, DType.F32, inner, rank), Backend.Upload(bdt, DType.F32, inner),
            Backend.Upload(aLog.Select(v => -MathF.Exp(v)).ToArray(), DType.F32, inner, n), Backend.Upload(d, DType.F32, inner));

    [Test]
    public void EmbeddingGathersRowsAndRejectsBadIds()
    {
        var table = Enumerable.Range(0, 5 * 3).Select(i => (float)i).ToArray();
        var t = Backend.Upload(table, DType.F32, 5, 3);
        var output = Backend.Allocate(DType.F32, 3, 3);
        Backend.Embedding(t, [4, 0, 2], output);
        Assert.That(Get(output), Is.EqualTo(new float[] { 12, 13, 14, 0, 1, 2, 6, 7, 8 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Backend.Embedding(t, [1, 5, 0], output));
        Assert.Throws<ArgumentOutOfRangeException>(() => Backend.Embedding(t, [-1, 0, 0], output));
    }

    [Test]
    public void ArgMaxTakesTheLowestIndexOnTies()
    {
        var logits = Backend.Upload([1, 3, 3, 0, /**/ -1, -1, -2, -5, /**/ float.NaN, 2, 7, 7], DType.F32, 3, 4);
        var result = new int[3];
        Backend.ArgMax(logits, result);
        Assert.That(result, Is.EqualTo(new[] { 1, 0, 2 }));
    }

    [Test]
    public void CrossEntropyMatchesOracleAndIgnoresMinus100()
    {
        var rng = new Random(5);
        var logits = Random(rng, 6 * 11, 8);
        int[] targets = [3, -100, 10, 0, -100, 7];
        double sum = Backend.CrossEntropySum(Backend.Upload(logits, DType.F32, 6, 11), targets, -100, out int count);
        double expected = Float64Oracle.CrossEntropy(logits, targets, 11, out int expectedCount);
        Assert.That(count, Is.EqualTo(expectedCount).And.EqualTo(4));
        Assert.That(sum, Is.EqualTo(expected).Within(1e-9).Percent);
    }

    [Test]
    public void ShapeMismatchesThrowArgumentException()
    {
        var x = Backend.Allocate(DType.F32, 2, 8);
        var w = Backend.Allocate(DType.F32, 4, 7);
        var y = Backend.Allocate(DType.F32, 2, 4);
        Assert.Throws<ArgumentException>(() => Backend.Linear(x, w, null, y));
        Assert.Throws<NotSupportedException>(() => Backend.Allocate(DType.BF16, 2));
    }
}
