using Mamba.Compute;

namespace Mamba.Tests.Gpu;

/// <summary>
/// The CUDA training (backward) ops against the CPU backend's: the same (device-rounded) inputs on both sides,
/// overwritten outputs poisoned with NaN on the GPU, accumulated ones pre-filled with the same known values, and the
/// parts an op must leave alone (the other half of grad xz) checked to be unchanged. Shapes cover L = 1, L &lt; K,
/// prime lengths, the scan backward's time tile (16) and checkpoint segment (128) ± 1, a channel count that leaves the
/// last channel block partial, d_state 1, 16 and 64, batch 1..9, f32 and the 16-bit dtypes.
/// </summary>
[Category("Gpu")]
public class CudaBackwardTests : GpuOpTestBase
{
    private static IMambaBackend CpuOps => Cpu;

    private static double TolBwd(DType dt) => dt == DType.F32 ? 1e-4 : 3e-2;

    /// <summary>A [rows, 2·width] pair whose GPU side is NaN in the half the op writes and both sides hold the same known values in the other.</summary>
    private (DeviceTensor G, DeviceTensor C) HalfPoisoned(Random rng, DType dt, bool writeFirstHalf, int batch, int length, int width)
    {
        long rows = (long)batch * length;
        var keep = Rand(rng, rows * 2 * width);
        var gpu = (float[])keep.Clone();
        var cpu = (float[])keep.Clone();
        for (long r = 0; r < rows; r++)
            for (int j = 0; j < width; j++)
            {
                long i = r * 2 * width + (writeFirstHalf ? j : width + j);
                gpu[i] = float.NaN;
                cpu[i] = 0;
            }
        var g = Pair(gpu, dt, batch, length, 2 * width);
        var rounded = Get(RequireGpu(), g.G);
        for (long i = 0; i < rounded.Length; i++)
            if (!float.IsNaN(rounded[i])) cpu[i] = rounded[i];
        var c = Own(Cpu.Upload(cpu, DType.F32, batch, length, 2 * width));
        return (g.G, c);
    }

    // ---- embedding --------------------------------------------------------------------------------------------------

    [TestCase(1, 7, 16)]
    [TestCase(37, 11, 300)]  // repeated ids
    public void EmbeddingBackwardMatchesTheCpu(int count, int vocab, int dim)
    {
        var rng = new Random(3 + count);
        var ids = Enumerable.Range(0, count).Select(_ => rng.Next(vocab)).ToArray();
        var g = Pair(Rand(rng, (long)count * dim), DType.F32, count, dim);
        var table = Pair(Rand(rng, (long)vocab * dim), DType.F32, vocab, dim);
        RequireGpu().EmbeddingBackward(ids, g.G, table.G);
        CpuOps.EmbeddingBackward(ids, g.C, table.C);
        AssertClose(table, 1e-6, "grad table");
    }

    [Test]
    public void EmbeddingBackwardIsBitReproducibleWithRepeatedIds()
    {
        // 4,096 positions over 5 ids: each row sums ~800 gradients, where an unordered (atomic) sum differs run to run.
        var rng = new Random(11);
        const int count = 4096, vocab = 5, dim = 96;
        var ids = Enumerable.Range(0, count).Select(_ => rng.Next(vocab)).ToArray();
        var grads = Rand(rng, (long)count * dim);
        var start = Rand(rng, (long)vocab * dim);
        var gpu = RequireGpu();
        float[] Run()
        {
            using var g = gpu.Upload(grads, DType.F32, count, dim);
            using var table = gpu.Upload(start, DType.F32, vocab, dim);
            gpu.EmbeddingBackward(ids, g, table);
            return Get(gpu, table);
        }
        var first = Run();
        for (int run = 0; run < 3; run++) Assert.That(Run(), Is.EqualTo(first), $"run {run + 2} differs from the first");
        // And right: against a float64 sum.
        for (int v = 0; v < vocab; v++)
            for (int j = 0; j < dim; j++)
            {
                double expected = start[v * dim + j];
                for (int m = 0; m < count; m++) if (ids[m] == v) expected += grads[(long)m * dim + j];
                Assert.That(first[v * dim + j], Is.EqualTo(expected).Within(1e-4 * Math.Max(1, Math.Abs(expected))), $"row {v}, column {j}");
            }
    }

    // ---- lm_head + cross-entropy ------------------------------------------------------------------------------------

    public static IEnumerable<TestCaseData> HeadCases()
    {
        foreach (var dt in AllDTypes)
        {
            yield return new TestCaseData(dt, 1, 50, 16);
            yield return new TestCaseData(dt, 37, 1031, 64);  // prime vocabulary
        }
        yield return new TestCaseData(DType.F32, 9, 70000, 24);  // a wide vocabulary
    }

    [TestCaseSource(nameof(HeadCases))]
    public void LinearCrossEntropyBackwardMatchesTheCpu(DType dt, int rows, int vocab, int dim)
    {
        var rng = new Random(5 + rows + vocab);
        var targets = Enumerable.Range(0, rows).Select(i => i % 4 == 3 ? -100 : rng.Next(vocab)).ToArray();
        var h = Pair(Rand(rng, (long)rows * dim, -2, 2), DType.F32, rows, dim);
        var w = Pair(Rand(rng, (long)vocab * dim, -0.5, 0.5), dt, vocab, dim);
        var gh = Out(DType.F32, rows, dim);
        var gw = Pair(Rand(rng, (long)vocab * dim, -0.01, 0.01), DType.F32, vocab, dim);
        float scale = 1f / Math.Max(1, targets.Count(t => t != -100));
        double lg = RequireGpu().LinearCrossEntropyBackward(h.G, w.G, targets, -100, scale, gh.G, gw.G, out int ng);
        double lc = CpuOps.LinearCrossEntropyBackward(h.C, w.C, targets, -100, scale, gh.C, gw.C, out int nc);
        Assert.That(ng, Is.EqualTo(nc), "count");
        Assert.That(lg, Is.EqualTo(lc).Within(Math.Max(1e-9, Math.Abs(lc)) * (dt == DType.F32 ? 1e-5 : 1e-2)), "loss sum");
        AssertClose(gh, TolBwd(dt), "grad hidden");
        AssertClose(gw, TolBwd(dt), "grad weight");
    }

    // ---- add + RMSNorm ----------------------------------------------------------------------------------------------

    [TestCase(DType.F32, 1, 16)]
    [TestCase(DType.F32, 37, 768)]
    [TestCase(DType.F32, 300, 100)]
    [TestCase(DType.BF16, 9, 130)]
    [TestCase(DType.F16, 5, 64)]
    public void AddRmsNormBackwardMatchesTheCpu(DType dt, int rows, int dim)
    {
        var rng = new Random(7 + rows + dim);
        var x = Pair(Rand(rng, (long)rows * dim, -3, 3), DType.F32, rows, dim);
        var w = Pair(Rand(rng, dim, 0.5, 1.5), DType.F32, dim);
        var gy = Pair(Rand(rng, (long)rows * dim), dt, rows, dim);
        var gx = Pair(Rand(rng, (long)rows * dim), DType.F32, rows, dim);
        var gw = Pair(Rand(rng, dim), DType.F32, dim);
        RequireGpu().AddRmsNormBackward(x.G, w.G, 1e-5f, gy.G, gx.G, gw.G);
        CpuOps.AddRmsNormBackward(x.C, w.C, 1e-5f, gy.C, gx.C, gw.C);
        AssertClose(gx, 1e-4, "grad input");
        AssertClose(gw, 1e-4, "grad weight");
    }

    // ---- linear -----------------------------------------------------------------------------------------------------

    public static IEnumerable<TestCaseData> LinearCases()
    {
        // (weight dtype, x dtype, gradY dtype, gradX dtype, M, N, K, bias, accumulate)
        foreach (var dt in AllDTypes)
        {
            yield return new TestCaseData(dt, dt, dt, dt, 1, 8, 16, true, false);
            yield return new TestCaseData(dt, dt, dt, dt, 37, 48, 33, false, true);
            yield return new TestCaseData(dt, DType.F32, DType.F32, DType.F32, 300, 17, 64, true, false);  // f32 gradY rounded to the weights
        }
        yield return new TestCaseData(DType.F32, DType.F32, DType.F32, DType.BF16, 9, 24, 40, true, true);  // grad x via the convert path
    }

    [TestCaseSource(nameof(LinearCases))]
    public void LinearBackwardMatchesTheCpu(DType wdt, DType xdt, DType gdt, DType gxdt, int m, int n, int k, bool bias, bool accumulate)
    {
        var rng = new Random(11 + m + n + k);
        var x = Pair(Rand(rng, (long)m * k), xdt, m, k);
        var w = Pair(Rand(rng, (long)n * k, -0.5, 0.5), wdt, n, k);
        var gy = Pair(Rand(rng, (long)m * n), gdt, m, n);
        var gx = accumulate ? Pair(Rand(rng, (long)m * k), gxdt, m, k) : Out(gxdt, m, k);
        var gw = Pair(Rand(rng, (long)n * k), DType.F32, n, k);
        var gb = bias ? Pair(Rand(rng, n), DType.F32, n) : default;
        RequireGpu().LinearBackward(x.G, w.G, gy.G, gx.G, accumulate, gw.G, bias ? gb.G : null);
        CpuOps.LinearBackward(x.C, w.C, gy.C, gx.C, accumulate, gw.C, bias ? gb.C : null);
        double tol = wdt == DType.F32 && gxdt == DType.F32 ? 1e-4 : 3e-2;
        AssertClose(gx, tol, "grad x");
        AssertClose(gw, tol, "grad weight");
        if (bias) AssertClose(gb, tol, "grad bias");
    }

    [Test]
    public void LinearBackwardWithoutGradX()
    {
        var rng = new Random(13);
        var x = Pair(Rand(rng, 5 * 7), DType.F32, 5, 7);
        var w = Pair(Rand(rng, 3 * 7), DType.F32, 3, 7);
        var gy = Pair(Rand(rng, 5 * 3), DType.F32, 5, 3);
        var gw = Pair(Rand(rng, 3 * 7), DType.F32, 3, 7);
        RequireGpu().LinearBackward(x.G, w.G, gy.G, null, false, gw.G, null);
        CpuOps.LinearBackward(x.C, w.C, gy.C, null, false, gw.C, null);
        AssertClose(gw, 1e-5, "grad weight");
    }

    // ---- causal conv + SiLU -----------------------------------------------------------------------------------------

    public static IEnumerable<TestCaseData> ConvCases()
    {
        // (dtype, B, L, E, K, bias, mask)
        foreach (var dt in AllDTypes)
        {
            yield return new TestCaseData(dt, 1, 1, 8, 4, true, false);     // L = 1
            yield return new TestCaseData(dt, 2, 3, 12, 4, true, true);     // L < K
            yield return new TestCaseData(dt, 3, 67, 40, 4, false, true);   // prime L, conv tile tail
        }
        yield return new TestCaseData(DType.F32, 9, 129, 130, 4, true, false);  // 2 conv tiles + 1, E over two blocks
        yield return new TestCaseData(DType.F32, 2, 64, 16, 3, true, false);    // exactly one tile, K = 3
        yield return new TestCaseData(DType.F32, 1, 65, 5, 2, true, true);      // K = 2
        yield return new TestCaseData(DType.BF16, 2, 300, 64, 4, true, true);
    }

    [TestCaseSource(nameof(ConvCases))]
    public void CausalConv1dBackwardMatchesTheCpu(DType dt, int batch, int length, int inner, int kernel, bool withBias, bool withMask)
    {
        var rng = new Random(19 + batch * 7 + length + inner);
        var xz = Pair(Rand(rng, (long)batch * length * 2 * inner, -2, 2), dt, batch, length, 2 * inner);
        var w = Pair(Rand(rng, (long)inner * kernel, -0.6, 0.6), DType.F32, inner, kernel);
        var b = withBias ? Pair(Rand(rng, inner, -0.3, 0.3), DType.F32, inner) : default;
        var mask = withMask ? Pair(Enumerable.Range(0, batch * length).Select(i => i % 5 == 1 ? 0f : 1f).ToArray(), DType.F32, batch * length) : default;
        var gu = Pair(Rand(rng, (long)batch * length * inner), dt, batch, length, inner);
        var gxz = HalfPoisoned(rng, dt, writeFirstHalf: true, batch, length, inner);
        var gw = Pair(Rand(rng, (long)inner * kernel), DType.F32, inner, kernel);
        var gb = withBias ? Pair(Rand(rng, inner), DType.F32, inner) : default;
        RequireGpu().CausalConv1dBackward(xz.G, w.G, withBias ? b.G : null, withMask ? mask.G : null, gu.G, gxz.G, gw.G, withBias ? gb.G : null);
        CpuOps.CausalConv1dBackward(xz.C, w.C, withBias ? b.C : null, withMask ? mask.C : null, gu.C, gxz.C, gw.C, withBias ? gb.C : null);
        AssertClose(Get(RequireGpu(), gxz.G), Get(Cpu, gxz.C), TolBwd(dt), "grad xz (x half written, z half kept)");
        AssertClose(gw, TolBwd(dt), "grad weight");
        if (withBias) AssertClose(gb, TolBwd(dt), "grad bias");
    }

    // ---- selective scan ---------------------------------------------------------------------------------------------

    public static IEnumerable<TestCaseData> ScanCases()
    {
        // (dtype, gradY dtype, B, L, E, N, R)
        foreach (var dt in AllDTypes)
        {
            yield return new TestCaseData(dt, dt, 1, 1, 8, 16, 4);      // L = 1
            yield return new TestCaseData(dt, dt, 3, 3, 17, 1, 2);      // N = 1, short
            yield return new TestCaseData(dt, DType.F32, 2, 67, 40, 16, 5);  // prime L, f32 gradY, partial channel block
        }
        foreach (int length in new[] { 15, 16, 17, 127, 128, 129, 257 })  // time tile (16) and the N > 64 kernel's segment (128) ± 1
            yield return new TestCaseData(DType.F32, DType.F32, 2, length, 24, 16, 3);
        yield return new TestCaseData(DType.F32, DType.F32, 9, 31, 20, 3, 1);     // batch 9, odd N, R = 1
        yield return new TestCaseData(DType.F32, DType.F32, 1, 200, 33, 64, 6);   // N = 64
        yield return new TestCaseData(DType.F32, DType.F32, 3, 33, 70, 8, 2);     // N = 8 (2 threads a channel), two tiles + 1
        yield return new TestCaseData(DType.BF16, DType.BF16, 2, 48, 200, 4, 3);  // N = 4 (a thread a channel)
        yield return new TestCaseData(DType.F32, DType.F32, 1, 40, 16, 128, 4);   // N = 128
        yield return new TestCaseData(DType.F32, DType.F32, 2, 130, 130, 32, 4);  // N = 32, E over several blocks
        yield return new TestCaseData(DType.BF16, DType.F32, 2, 300, 64, 64, 8);
    }

    [TestCaseSource(nameof(ScanCases))]
    public void SelectiveScanBackwardMatchesTheCpu(DType dt, DType gdt, int batch, int length, int inner, int n, int rank)
    {
        var rng = new Random(29 + batch * 3 + n + length);
        int ld = rank + 2 * n;
        var (ssmG, ssmC) = RandomSsm(rng, dt, inner, n, rank, biasDType: DType.F32);
        var (u, dbc, xz) = RandomScanInputs(rng, dt, batch, length, inner, ld);
        var gy = Pair(Rand(rng, (long)batch * length * inner), gdt, batch, length, inner);
        var gu = Out(dt, batch, length, inner);
        var gdbc = Out(dt, batch, length, ld);
        var gxz = HalfPoisoned(rng, dt, writeFirstHalf: false, batch, length, inner);
        var gW = Pair(Rand(rng, (long)inner * rank), DType.F32, inner, rank);
        var gB = Pair(Rand(rng, inner), DType.F32, inner);
        var gA = Pair(Rand(rng, (long)inner * n), DType.F32, inner, n);
        var gD = Pair(Rand(rng, inner), DType.F32, inner);
        RequireGpu().SelectiveScanBackward(ssmG, u.G, dbc.G, xz.G, gy.G, gu.G, gdbc.G, gxz.G, new SsmGradients(gW.G, gB.G, gA.G, gD.G));
        CpuOps.SelectiveScanBackward(ssmC, u.C, dbc.C, xz.C, gy.C, gu.C, gdbc.C, gxz.C, new SsmGradients(gW.C, gB.C, gA.C, gD.C));
        double tol = TolBwd(dt);
        AssertClose(gu, tol, "grad u");
        AssertClose(gdbc, tol, "grad dbc");
        AssertClose(Get(RequireGpu(), gxz.G), Get(Cpu, gxz.C), tol, "grad xz (z half written, x half kept)");
        AssertClose(gW, tol, "grad dt_proj weight");
        AssertClose(gB, tol, "grad dt_proj bias");
        AssertClose(gA, tol, "grad A_log");
        AssertClose(gD, tol, "grad D");
    }

    [Test]
    public void SelectiveScanBackwardIsDeterministic()
    {
        var gpu = RequireGpu();
        var rng = new Random(31);
        const int batch = 2, length = 150, inner = 48, n = 16, rank = 4, ld = rank + 2 * n;
        var ssm = new SsmParameters(Own(gpu.Upload(Rand(rng, inner * rank, -0.5, 0.5), DType.F32, inner, rank)),
            Own(gpu.Upload(Rand(rng, inner, -4, -1), DType.F32, inner)), Own(gpu.Upload(Rand(rng, inner * n, -8, -0.05), DType.F32, inner, n)),
            Own(gpu.Upload(Rand(rng, inner, 0.5, 1.5), DType.F32, inner)));
        var u = Own(gpu.Upload(Rand(rng, batch * length * inner), DType.F32, batch, length, inner));
        var dbc = Own(gpu.Upload(Rand(rng, batch * length * ld), DType.F32, batch, length, ld));
        var xz = Own(gpu.Upload(Rand(rng, batch * length * 2 * inner), DType.F32, batch, length, 2 * inner));
        var gy = Own(gpu.Upload(Rand(rng, batch * length * inner), DType.F32, batch, length, inner));
        float[][] Run(bool fromSavedStates = false)
        {
            DeviceTensor? checkpoints = null;
            if (fromSavedStates)
            {
                // The states a training forward saves: the backward from them must be the recomputing one, bit for bit.
                checkpoints = Own(gpu.Allocate(DType.F32, gpu.ScanCheckpointShape(batch, length, inner, n)!));
                gpu.SelectiveScan(ssm, u, dbc, xz, Own(gpu.Allocate(DType.F32, batch, length, inner)), null, checkpoints);
            }
            var gu = Own(gpu.Allocate(DType.F32, batch, length, inner));
            var gd = Own(gpu.Allocate(DType.F32, batch, length, ld));
            var gx = Own(gpu.Allocate(DType.F32, batch, length, 2 * inner));
            var g = new SsmGradients(Own(gpu.Allocate(DType.F32, inner, rank)), Own(gpu.Allocate(DType.F32, inner)), Own(gpu.Allocate(DType.F32, inner, n)),
                Own(gpu.Allocate(DType.F32, inner)));
            gpu.SelectiveScanBackward(ssm, u, dbc, xz, gy, gu, gd, gx, g, checkpoints);
            return [Get(gpu, gu), Get(gpu, gd), Get(gpu, gx), Get(gpu, g.DtProjWeight), Get(gpu, g.DtProjBias), Get(gpu, g.ALog), Get(gpu, g.D)];
        }
        var first = Run();
        var second = Run();
        for (int i = 0; i < first.Length; i++) Assert.That(second[i], Is.EqualTo(first[i]), $"output {i} differs between runs");
        var saved = Run(fromSavedStates: true);
        for (int i = 0; i < first.Length; i++) Assert.That(saved[i], Is.EqualTo(first[i]), $"output {i} differs from the saved states");
    }

    // ---- sum of squares, AdamW --------------------------------------------------------------------------------------

    [TestCase(1)]
    [TestCase(1000)]
    [TestCase(300001)]
    public void SumOfSquaresMatchesTheCpu(int count)
    {
        var rng = new Random(37 + count);
        var x = Pair(Rand(rng, count, -3, 3), DType.F32, count);
        double g = RequireGpu().SumOfSquares(x.G);
        double c = CpuOps.SumOfSquares(x.C);
        Assert.That(g, Is.EqualTo(c).Within(Math.Abs(c) * 1e-12 + 1e-300));
        Assert.That(RequireGpu().SumOfSquares(x.G), Is.EqualTo(g), "deterministic");
    }

    [TestCase(DType.F32, false)]
    [TestCase(DType.BF16, false)]
    [TestCase(DType.F16, false)]
    [TestCase(DType.F32, true)]
    public void AdamWStepMatchesTheCpu(DType paramDt, bool negExp)
    {
        var rng = new Random(41);
        const int count = 1037;
        var master = Pair(Rand(rng, count, -2, 1), DType.F32, count);
        var grad = Pair(Rand(rng, count), DType.F32, count);
        var m = Pair(Rand(rng, count, -0.1, 0.1), DType.F32, count);
        var v = Pair(Rand(rng, count, 0, 0.01), DType.F32, count);
        var p = Out(paramDt, count);
        var args = new AdamWStepArgs(1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1 - MathF.Pow(0.9f, 3), 1 - MathF.Pow(0.95f, 3), 0.5f);
        RequireGpu().AdamWStep(master.G, grad.G, m.G, v.G, p.G, negExp, args);
        CpuOps.AdamWStep(master.C, grad.C, m.C, v.C, p.C, negExp, args);
        AssertClose(master, 1e-6, "master");
        AssertClose(m, 1e-6, "m");
        AssertClose(v, 1e-6, "v");
        AssertClose(p, paramDt == DType.F32 ? 1e-5 : 1e-2, "parameter");
    }
}
