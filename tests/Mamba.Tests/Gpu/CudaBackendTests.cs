using Mamba.Compute;
using Mamba.Compute.Cpu;
using Mamba.Compute.Cuda;
using Mamba.Native;

namespace Mamba.Tests.Gpu;

/// <summary>
/// Every <see cref="CudaBackend"/> op against the C# <see cref="CpuBackend"/> oracle on random inputs, with the
/// GPU output buffers poisoned (NaN) beforehand. Inputs of 16-bit runs are rounded on the device first and the
/// oracle sees the rounded values, so the tolerance covers only the op's own arithmetic and output rounding.
/// Without libmamba, a driver or a GPU every test is ignored with the reason.
/// </summary>
[Category("Gpu")]
[NonParallelizable]
public class CudaBackendTests : GpuOpTestBase
{
    // ---- memory ------------------------------------------------------------------------------------

    [TestCaseSource(nameof(AllDTypes))]
    public void UploadDownloadRoundTrip(DType dt)
    {
        var gpu = RequireGpu();
        var data = Rand(new Random(1), 1001, -100, 100);
        var t = Own(gpu.Upload(data, dt, 7, 11, 13));
        var back = Get(gpu, t);
        for (int i = 0; i < data.Length; i++)
        {
            double expected = dt switch { DType.F32 => data[i], DType.F16 => (float)(Half)data[i], _ => BF16(data[i]) };
            Assert.That(back[i], Is.EqualTo(expected), $"element {i} of {dt}");
        }
        var copy = Own(gpu.Allocate(dt, 7, 11, 13));
        gpu.Copy(t, copy);
        Assert.That(Get(gpu, copy), Is.EqualTo(back));
        gpu.Zero(copy);
        Assert.That(Get(gpu, copy).All(v => v == 0f));
    }

    [TestCaseSource(nameof(AllDTypes))]
    public void GatherRows(DType dt)
    {
        var rng = new Random(10);
        var src = Pair(Rand(rng, 9 * 13), dt, 9, 13);
        int[] rows = [8, 0, 3, 3];
        var dst = Out(dt, rows.Length, 13);
        RequireGpu().GatherRows(src.G, rows, dst.G);
        Cpu.GatherRows(src.C, rows, dst.C);
        AssertClose(dst, 0, "gathered rows");
    }

    private static float BF16(float v)
    {
        uint bits = BitConverter.SingleToUInt32Bits(v);
        bits += 0x7FFFu + ((bits >> 16) & 1u);
        return BitConverter.UInt32BitsToSingle(bits & 0xFFFF0000u);
    }

    // ---- ops ---------------------------------------------------------------------------------------

    [TestCase(DType.F32, 1, 17), TestCase(DType.BF16, 37, 64), TestCase(DType.F16, 5, 300)]
    public void Embedding(DType dt, int count, int width)
    {
        var rng = new Random(2);
        int vocab = 53;
        var table = Pair(Rand(rng, (long)vocab * width), dt, vocab, width);
        var ids = Enumerable.Range(0, count).Select(_ => rng.Next(vocab)).ToArray();
        ids[0] = vocab - 1;
        var o = Out(dt, count, width);
        RequireGpu().Embedding(table.G, ids, o.G);
        Cpu.Embedding(table.C, ids, o.C);
        AssertClose(o, 0, "embedding");
        Assert.Throws<ArgumentOutOfRangeException>(() => RequireGpu().Embedding(table.G, [vocab], Own(RequireGpu().Allocate(dt, 1, width))));
    }

    [TestCase(DType.F32, 1, 8, true), TestCase(DType.F32, 37, 768, true), TestCase(DType.F32, 5, 33, false),
     TestCase(DType.BF16, 19, 96, true), TestCase(DType.F16, 3, 1000, true)]
    public void AddRmsNorm(DType dt, int rows, int width, bool withDelta)
    {
        var rng = new Random(3);
        var residual = Pair(Rand(rng, (long)rows * width, -2, 2), DType.F32, rows, width);
        var weight = Pair(Rand(rng, width, 0.5, 1.5), dt, width);
        (DeviceTensor G, DeviceTensor C)? delta = withDelta ? Pair(Rand(rng, (long)rows * width), dt, rows, width) : null;
        var o = Out(dt, rows, width);
        RequireGpu().AddRmsNorm(residual.G, delta?.G, weight.G, 1e-5f, o.G);
        Cpu.AddRmsNorm(residual.C, delta?.C, weight.C, 1e-5f, o.C);
        AssertClose(o, Tol(dt), "rmsnorm output");
        AssertClose(residual, 1e-6, "residual after add");
    }

    [TestCaseSource(nameof(AllDTypes))]
    public void MaskRows(DType dt)
    {
        var rng = new Random(4);
        int rows = 13, cols = 29;
        var x = Pair(Rand(rng, rows * cols), dt, rows, cols);
        var mask = Pair(Enumerable.Range(0, rows).Select(i => i % 3 == 0 ? 0f : 1f).ToArray(), DType.F32, rows);
        RequireGpu().MaskRows(x.G, mask.G);
        Cpu.MaskRows(x.C, mask.C);
        AssertClose(x, 0, "masked rows");
    }

    [TestCase(DType.F32, 1, 7, 5, true), TestCase(DType.F32, 37, 96, 64, false), TestCase(DType.F32, 131, 200, 48, true),
     TestCase(DType.BF16, 33, 128, 96, true), TestCase(DType.BF16, 1, 50, 13, false), TestCase(DType.F16, 17, 64, 40, true)]
    public void Linear(DType dt, int m, int n, int k, bool withBias)
    {
        var rng = new Random(5);
        var x = Pair(Rand(rng, (long)m * k), dt, m, k);
        var w = Pair(Rand(rng, (long)n * k, -0.2, 0.2), dt, n, k);
        (DeviceTensor G, DeviceTensor C)? b = withBias ? Pair(Rand(rng, n), dt, n) : null;
        var y = Out(dt, m, n);
        RequireGpu().Linear(x.G, w.G, b?.G, y.G);
        Cpu.Linear(x.C, w.C, b?.C, y.C);
        AssertClose(y, Tol(dt), "linear");
        if (dt != DType.F32)
        {
            // 16-bit operands with an F32 output (the lm_head's fp32 logits).
            var y32 = Out(DType.F32, m, n);
            RequireGpu().Linear(x.G, w.G, b?.G, y32.G);
            Cpu.Linear(x.C, w.C, b?.C, y32.C);
            AssertClose(y32, 1e-4, "linear to f32");
        }
    }

    [TestCase(DType.BF16, 3, 300, 64), TestCase(DType.F16, 64, 97, 48)]
    public void LinearF32InputOn16BitWeightsRoundsTheInput(DType dt, int m, int n, int k)
    {
        // The lm_head: F32 norm_f output on 16-bit weights. x is rounded to the weight dtype, then the 16-bit GEMM.
        var rng = new Random(15);
        var xData = Rand(rng, (long)m * k);
        var x = Pair(xData, DType.F32, m, k);
        var w = Pair(Rand(rng, (long)n * k, -0.2, 0.2), dt, n, k);
        var rounded = Pair(xData, dt, m, k);
        var y = Out(DType.F32, m, n);
        RequireGpu().Linear(x.G, w.G, null, y.G);
        Cpu.Linear(rounded.C, w.C, null, y.C);
        AssertClose(y, 1e-4, "linear f32 x on 16-bit w");
        // Bit-identical to an explicit conversion followed by the same-dtype linear (what a captured decode step does).
        var y2 = Out(DType.F32, m, n);
        RequireGpu().Linear(rounded.G, w.G, null, y2.G);
        var a = new float[m * n];
        var b = new float[m * n];
        RequireGpu().Download(y.G, a);
        RequireGpu().Download(y2.G, b);
        Assert.That(a, Is.EqualTo(b));
    }

    public static IEnumerable<TestCaseData> ConvCases()
    {
        foreach (var dt in AllDTypes)
        {
            yield return new TestCaseData(dt, 1, 1, 8, 4, false);     // L = 1
            yield return new TestCaseData(dt, 2, 3, 5, 4, true);      // L < K
            yield return new TestCaseData(dt, 3, 67, 40, 4, true);    // tile tail, prime-ish L
        }
        yield return new TestCaseData(DType.F32, 2, 131, 130, 3, false);  // K = 3, E > one block
        yield return new TestCaseData(DType.F32, 1, 70, 16, 2, true);     // K = 2
        yield return new TestCaseData(DType.F32, 2, 9, 12, 6, true);      // generic width
    }

    [TestCaseSource(nameof(ConvCases))]
    public void CausalConv1d(DType dt, int batch, int length, int inner, int kernel, bool withMask)
    {
        var rng = new Random(6);
        var xz = Pair(Rand(rng, (long)batch * length * 2 * inner, -2, 2), dt, batch, length, 2 * inner);
        var w = Pair(Rand(rng, (long)inner * kernel, -0.6, 0.6), dt, inner, kernel);
        var b = Pair(Rand(rng, inner, -0.3, 0.3), dt, inner);
        (DeviceTensor G, DeviceTensor C)? mask = withMask
            ? Pair(Enumerable.Range(0, batch * length).Select(i => i % 5 == 1 ? 0f : 1f).ToArray(), DType.F32, batch * length) : null;
        var u = Out(dt, batch, length, inner);
        var st = (G: Own(RequireGpu().Upload(Enumerable.Repeat(float.NaN, batch * inner * kernel).ToArray(), dt, batch, inner, kernel)),
                  C: Own(Cpu.Allocate(DType.F32, batch, inner, kernel)));
        RequireGpu().CausalConv1d(xz.G, w.G, b.G, mask?.G, u.G, st.G);
        Cpu.CausalConv1d(xz.C, w.C, b.C, mask?.C, u.C, st.C);
        AssertClose(u, Tol(dt), "conv output");
        AssertClose(st, 0, "conv state");

        // Then two decode steps from that state.
        for (int step = 0; step < 2; step++)
        {
            var x1 = Pair(Rand(rng, (long)batch * 2 * inner, -2, 2), dt, batch, 2 * inner);
            var u1 = Out(dt, batch, inner);
            RequireGpu().CausalConv1dStep(x1.G, w.G, b.G, st.G, u1.G);
            Cpu.CausalConv1dStep(x1.C, w.C, b.C, st.C, u1.C);
            AssertClose(u1, Tol(dt), $"conv step {step}");
            AssertClose(st, 0, $"conv state after step {step}");
        }
    }

    public static IEnumerable<TestCaseData> ScanCases()
    {
        // (dtype, B, L, E, N, R)
        foreach (var dt in AllDTypes)
        {
            yield return new TestCaseData(dt, 1, 1, 8, 16, 4);       // L = 1
            yield return new TestCaseData(dt, 2, 3, 17, 1, 2);       // N = 1, L < K
            yield return new TestCaseData(dt, 3, 67, 40, 16, 5);     // L not a multiple of the time tile (32)
        }
        yield return new TestCaseData(DType.F32, 2, 131, 24, 8, 3);    // prime L, N = 8
        yield return new TestCaseData(DType.F32, 1, 200, 33, 64, 6);   // N = 64
        yield return new TestCaseData(DType.F32, 2, 50, 20, 3, 1);     // odd N, R = 1
        yield return new TestCaseData(DType.F32, 1, 129, 130, 32, 4);  // E over several blocks, N = 32
        yield return new TestCaseData(DType.F32, 3, 300, 48, 17, 7);   // L = 300 (small-long), N = 17
        yield return new TestCaseData(DType.F32, 1, 40, 12, 5, 3);     // N = 5
        yield return new TestCaseData(DType.BF16, 2, 97, 64, 64, 8);
        yield return new TestCaseData(DType.F32, 1, 1000, 64, 16, 4);  // batch 1, long: the time-split scan (15 chunks joined by ex2(A·ΣΔ)·h)
        yield return new TestCaseData(DType.BF16, 1, 1000, 64, 16, 4);
        yield return new TestCaseData(DType.F16, 2, 33, 36, 32, 4);
        yield return new TestCaseData(DType.BF16, 6, 40, 136, 16, 8);  // batch over two 4-row groups of the decode step, E over two 128-channel blocks
        yield return new TestCaseData(DType.F32, 9, 5, 20, 12, 3);     // batch 9, N = 12 in a 16-lane group (inert lanes)
    }

    [TestCaseSource(nameof(ScanCases))]
    public void SelectiveScanAndSteps(DType dt, int batch, int length, int inner, int n, int rank)
    {
        var rng = new Random(7);
        int ld = rank + 2 * n;
        var (u, dbc, xz) = RandomScanInputs(rng, dt, batch, length, inner, ld);
        var (ssmG, ssmC) = RandomSsm(rng, dt, inner, n, rank);
        var y = Out(dt, batch, length, inner);
        var st = Out(DType.F32, batch, inner, n);
        RequireGpu().SelectiveScan(ssmG, u.G, dbc.G, xz.G, y.G, st.G);
        Cpu.SelectiveScan(ssmC, u.C, dbc.C, xz.C, y.C, st.C);
        AssertClose(y, Tol(dt), "scan output");
        AssertClose(st, 2e-5, "final state");

        // Without a state output.
        var y2 = Out(dt, batch, length, inner);
        RequireGpu().SelectiveScan(ssmG, u.G, dbc.G, xz.G, y2.G, null);
        Cpu.SelectiveScan(ssmC, u.C, dbc.C, xz.C, y2.C, null);
        AssertClose(y2, Tol(dt), "scan output without state");

        // The states saved for the backward: checkpoint k is the state after the first 16·k steps, i.e. the final state
        // of the CPU scan over that prefix (k = 0: zeros).
        var gpuB = RequireGpu();
        var ckShape = gpuB.ScanCheckpointShape(batch, length, inner, n)!;
        Assert.That(ckShape, Is.EqualTo(new[] { batch, (length + 15) / 16, inner, n }));
        var ck = Own(gpuB.Allocate(DType.F32, ckShape));
        gpuB.SelectiveScan(ssmG, u.G, dbc.G, xz.G, Out(dt, batch, length, inner).G, null, ck);
        var ckv = Get(gpuB, ck);
        int nck = ckShape[1];
        float[] Prefix(DeviceTensor t, int width, int steps)
        {
            var all = Get(Cpu, t);
            var r = new float[batch * steps * width];
            for (int bi = 0; bi < batch; bi++) Array.Copy(all, (long)bi * length * width, r, (long)bi * steps * width, (long)steps * width);
            return r;
        }
        foreach (int k in new[] { 0, 1, nck / 2, nck - 1 }.Where(k => k < nck).Distinct())
        {
            var expected = new float[batch * inner * n];
            if (k > 0)
            {
                int steps = 16 * k;
                var state = Own(Cpu.Allocate(DType.F32, batch, inner, n));
                Cpu.SelectiveScan(ssmC, Own(Cpu.Upload(Prefix(u.C, inner, steps), DType.F32, batch, steps, inner)),
                    Own(Cpu.Upload(Prefix(dbc.C, ld, steps), DType.F32, batch, steps, ld)),
                    Own(Cpu.Upload(Prefix(xz.C, 2 * inner, steps), DType.F32, batch, steps, 2 * inner)),
                    Own(Cpu.Allocate(DType.F32, batch, steps, inner)), state);
                expected = Get(Cpu, state);
            }
            var got = new float[batch * inner * n];
            for (int bi = 0; bi < batch; bi++)
                Array.Copy(ckv, ((long)bi * nck + k) * inner * n, got, (long)bi * inner * n, (long)inner * n);
            if (k == 0) Assert.That(got, Is.All.EqualTo(0f), "checkpoint 0 is the zero state");
            else AssertClose(got, expected, 2e-5, $"checkpoint {k} (state after {16 * k} steps)");
        }

        // Decode steps continue from the prefill state.
        for (int step = 0; step < 3; step++)
        {
            var u1 = Pair(Rand(rng, (long)batch * inner), dt, batch, inner);
            var dbc1 = Pair(Rand(rng, (long)batch * ld), dt, batch, ld);
            var xz1 = Pair(Rand(rng, (long)batch * 2 * inner, -2, 2), dt, batch, 2 * inner);
            var y1 = Out(dt, batch, inner);
            RequireGpu().SelectiveStateStep(ssmG, u1.G, dbc1.G, xz1.G, st.G, y1.G);
            Cpu.SelectiveStateStep(ssmC, u1.C, dbc1.C, xz1.C, st.C, y1.C);
            AssertClose(y1, Tol(dt), $"step {step} output");
            AssertClose(st, 2e-5, $"state after step {step}");
        }
    }

    [TestCase(DType.F32, 1, 50280), TestCase(DType.F32, 5, 1000), TestCase(DType.BF16, 3, 777), TestCase(DType.F16, 4, 13),
     TestCase(DType.F32, 64, 50280)]
    public void ArgMax(DType dt, int rows, int vocab)
    {
        var rng = new Random(8);
        var data = Rand(rng, (long)rows * vocab, -5, 5);
        data[vocab / 2] = 9f;
        data[vocab / 3] = 9f;  // a tie: the lower index wins
        var l = Pair(data, dt, rows, vocab);
        var g = new int[rows];
        var c = new int[rows];
        RequireGpu().ArgMax(l.G, g);
        Cpu.ArgMax(l.C, c);
        Assert.That(g, Is.EqualTo(c));
        Assert.That(g[0], Is.EqualTo(vocab / 3));
    }

    [TestCase(DType.F32, 7, 512), TestCase(DType.F32, 64, 50280), TestCase(DType.BF16, 9, 300)]
    public void CrossEntropySum(DType dt, int rows, int vocab)
    {
        var rng = new Random(9);
        var l = Pair(Rand(rng, (long)rows * vocab, -8, 8), dt, rows, vocab);
        var targets = Enumerable.Range(0, rows).Select(i => i % 4 == 3 ? -100 : rng.Next(vocab)).ToArray();
        double g = RequireGpu().CrossEntropySum(l.G, targets, -100, out int gc);
        double c = Cpu.CrossEntropySum(l.C, targets, -100, out int cc);
        Assert.That(gc, Is.EqualTo(cc));
        Assert.That(g, Is.EqualTo(c).Within(1e-5 * Math.Max(1, Math.Abs(c))));
    }

    // ---- errors ------------------------------------------------------------------------------------

    [Test]
    public void NativeErrorBecomesExceptionAndBackendSurvives()
    {
        var gpu = RequireGpu();
        var ex = Assert.Throws<MambaInvalidArgumentException>(() => gpu.Upload(new float[4], (DType)7, 4));
        Assert.That(ex!.NativeMessage, Does.Contain("mamba_upload_f32"));
        Assert.That(ex.Status, Is.EqualTo(MambaStatus.InvalidArgument));
        var t = Own(gpu.Upload([1f, 2f, 3f], DType.F32, 3));
        Assert.That(Get(gpu, t), Is.EqualTo(new[] { 1f, 2f, 3f }));
    }

    [Test]
    public void OutOfMemoryIsAnExceptionAndBackendStillWorks()
    {
        var gpu = RequireGpu();
        var (free0, _) = gpu.MemoryInfo();
        var ex = Assert.Throws<MambaOutOfMemoryException>(() => gpu.Allocate(DType.F32, 1 << 20, 1 << 20));  // 4 TiB
        Assert.That(ex!.NativeMessage, Does.Contain("cudaMalloc"));
        var t = Own(gpu.Upload([4f, 5f], DType.BF16, 2));
        Assert.That(Get(gpu, t), Is.EqualTo(new[] { 4f, 5f }));
        var (free1, _) = gpu.MemoryInfo();
        Assert.That(Math.Abs(free1 - free0), Is.LessThan(64L << 20), "free memory after the failed allocation");
    }

    [Test]
    public void TensorsOfAnotherBackendAreRejected()
    {
        var gpu = RequireGpu();
        var c = Own(Cpu.Allocate(DType.F32, 4));
        Assert.Throws<ArgumentException>(() => gpu.Zero(c));
        var g = Own(gpu.Allocate(DType.F32, 2, 3));
        Assert.Throws<ArgumentException>(() => gpu.Linear(g, Own(gpu.Allocate(DType.F32, 4, 5)), null, Own(gpu.Allocate(DType.F32, 2, 4))));
    }

    [Test]
    public void DescribeNamesAbiArchitecturesAndDevice()
    {
        RequireGpu();
        var text = MambaNative.Describe(0);
        Assert.That(text, Does.Contain($"abi: {MambaNative.ExpectedAbiVersion}"));
        Assert.That(text, Does.Contain("compiled architectures"));
        Assert.That(text, Does.Contain("device 0:"));
    }

    [Test]
    public void AllocationsAreReturnedOnDispose()
    {
        var gpu = RequireGpu();
        gpu.Synchronize();
        var (free0, _) = gpu.MemoryInfo();
        for (int i = 0; i < 20; i++)
            using (gpu.Allocate(DType.F32, 64 << 20)) { }
        var (free1, _) = gpu.MemoryInfo();
        Assert.That(free0 - free1, Is.LessThan(8L << 20));
    }
}
