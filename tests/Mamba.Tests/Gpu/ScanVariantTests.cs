using Mamba.Compute;
using Mamba.Compute.Cuda;
using Mamba.Native;

namespace Mamba.Tests.Gpu;

/// <summary>
/// The scan forward's variant 1 (<c>MAMBA_SCAN_VARIANT=1</c>, the pair-broadcast lane map of
/// native/src/selective_scan.cu), switched on for this fixture's context with <see cref="CudaBackend.SetTuning"/>:
/// against the CPU oracle (output, final state, a checkpoint, a continuation from a random state) and bit for bit
/// against variant 0 (the same per-lane arithmetic in the same order, only the lanes differ), over lengths around the
/// 16-step checkpoint interval and the 32-step time tile, a partial channel block (100) and 1536, d_state 1, 16, 64
/// and every dtype. Time splitting is switched off (<c>MAMBA_SCAN_CHUNKS=1</c>) so batch 1 runs variant 1 too; one test
/// keeps the automatic split and checks that it falls back to variant 0. The scan contract has no optional z or
/// Δ bias and the managed D is always given, so "without D" / "without bias" are zero D / zero bias here.
/// </summary>
[Category("Gpu")]
[NonParallelizable]
public class ScanVariantTests : GpuOpTestBase
{
    private const string Variant = "MAMBA_SCAN_VARIANT", Chunks = "MAMBA_SCAN_CHUNKS";

    /// <summary>What the optional operands hold.</summary>
    public enum Extras { None, ZeroD, ZeroBias }

    [TearDown]
    public void ResetTuning()
    {
        var gpu = GpuOrNull;
        if (gpu is null) return;
        gpu.SetTuning(Variant, 0);
        gpu.SetTuning(Chunks, 0);
    }

    public static IEnumerable<TestCaseData> ShapeCases()
    {
        // (dtype, B, L, E, N, extras, with continuation)
        foreach (var dt in AllDTypes)
        foreach (int batch in new[] { 1, 8 })
        foreach (int length in new[] { 1, 15, 16, 17, 127, 128, 129 })
        foreach (var (inner, n) in new[] { (100, 1), (100, 16), (100, 64), (1536, 16) })
        {
            var extras = length == 15 ? Extras.ZeroD : length == 127 ? Extras.ZeroBias : Extras.None;
            yield return new TestCaseData(dt, batch, length, inner, n, extras, true);
        }
    }

    public static IEnumerable<TestCaseData> LongCases()
    {
        yield return new TestCaseData(DType.F32, 8, 2048, 1536, 16, Extras.None, false);  // the shape
        yield return new TestCaseData(DType.BF16, 8, 2048, 1536, 16, Extras.None, false);
        yield return new TestCaseData(DType.F16, 8, 2048, 1536, 16, Extras.None, false);
        yield return new TestCaseData(DType.F32, 1, 2048, 1536, 64, Extras.None, false);
        yield return new TestCaseData(DType.BF16, 1, 2048, 100, 64, Extras.ZeroD, false);
        yield return new TestCaseData(DType.F16, 8, 2048, 100, 64, Extras.None, false);
        yield return new TestCaseData(DType.BF16, 1, 2048, 1536, 1, Extras.ZeroBias, false);
        yield return new TestCaseData(DType.F32, 8, 2048, 100, 1, Extras.None, false);
    }

    [TestCaseSource(nameof(ShapeCases))]
    [TestCaseSource(nameof(LongCases))]
    public void Variant1MatchesTheCpuAndVariant0(DType dt, int batch, int length, int inner, int n, Extras extras, bool continuation)
    {
        var gpu = RequireGpu();
        var rng = new Random(16 + length + 7 * n + inner);
        int rank = inner >= 1536 ? 48 : 5, ld = rank + 2 * n;
        var (u, dbc, xz) = RandomScanInputs(rng, dt, batch, length, inner, ld);
        var (ssmG, ssmC) = RandomSsm(rng, dt, inner, n, rank, zeroBias: extras == Extras.ZeroBias, zeroD: extras == Extras.ZeroD);
        var ckShape = gpu.ScanCheckpointShape(batch, length, inner, n)!;
        int nck = ckShape[1];
        gpu.SetTuning(Chunks, 1);

        // Variant 1: output, final state and checkpoints in one launch, against the CPU.
        gpu.SetTuning(Variant, 1);
        var y1 = Out(dt, batch, length, inner);
        var st1 = Out(DType.F32, batch, inner, n);
        var ck1 = Own(gpu.Upload(Enumerable.Repeat(float.NaN, (int)((long)batch * nck * inner * n)).ToArray(), DType.F32, ckShape));
        gpu.SelectiveScan(ssmG, u.G, dbc.G, xz.G, y1.G, st1.G, ck1);
        Cpu.SelectiveScan(ssmC, u.C, dbc.C, xz.C, y1.C, st1.C);
        AssertClose(y1, Tol(dt), "variant 1 output");
        AssertClose(st1, 2e-5, "variant 1 final state");
        var ck1v = Get(gpu, ck1);
        Assert.That(Checkpoint(ck1v, batch, nck, 0, inner * n), Is.All.EqualTo(0f), "variant 1 checkpoint 0 is the zero state");
        if (nck > 1)
        {
            // The last checkpoint is the final state of the CPU scan over the first 16·(nck − 1) steps.
            int steps = 16 * (nck - 1);
            var state = Own(Cpu.Allocate(DType.F32, batch, inner, n));
            Cpu.SelectiveScan(ssmC, Own(Cpu.Upload(Prefix(u.C, batch, length, inner, steps), DType.F32, batch, steps, inner)),
                Own(Cpu.Upload(Prefix(dbc.C, batch, length, ld, steps), DType.F32, batch, steps, ld)),
                Own(Cpu.Upload(Prefix(xz.C, batch, length, 2 * inner, steps), DType.F32, batch, steps, 2 * inner)),
                Own(Cpu.Allocate(DType.F32, batch, steps, inner)), state);
            AssertClose(Checkpoint(ck1v, batch, nck, nck - 1, inner * n), Get(Cpu, state), 2e-5, $"variant 1 checkpoint {nck - 1}");
        }

        // Without state or checkpoints: the same output bits.
        var y1b = Out(dt, batch, length, inner);
        gpu.SelectiveScan(ssmG, u.G, dbc.G, xz.G, y1b.G, null);
        AssertSameBits(Get(gpu, y1b.G), Get(gpu, y1.G), "variant 1 output without state vs with state");

        // Variant 0 on the same inputs: the same bits everywhere.
        gpu.SetTuning(Variant, 0);
        var y0 = Out(dt, batch, length, inner);
        var st0 = Out(DType.F32, batch, inner, n);
        var ck0 = Own(gpu.Allocate(DType.F32, ckShape));
        gpu.SelectiveScan(ssmG, u.G, dbc.G, xz.G, y0.G, st0.G, ck0);
        AssertSameBits(Get(gpu, y1.G), Get(gpu, y0.G), "output, variant 1 vs 0");
        AssertSameBits(Get(gpu, st1.G), Get(gpu, st0.G), "final state, variant 1 vs 0");
        AssertSameBits(ck1v, Get(gpu, ck0), "checkpoints, variant 1 vs 0");

        if (!continuation) return;
        // A continuation from a random state (chunked prefill), both variants, against the CPU.
        var init = Rand(rng, (long)batch * inner * n, -2, 2);
        var sc1 = Pair(init, DType.F32, batch, inner, n);
        var sc0 = Own(gpu.Upload(init, DType.F32, batch, inner, n));
        var yc1 = Out(dt, batch, length, inner);
        var yc0 = Out(dt, batch, length, inner);
        gpu.SetTuning(Variant, 1);
        gpu.SelectiveScanContinue(ssmG, u.G, dbc.G, xz.G, yc1.G, sc1.G);
        gpu.SetTuning(Variant, 0);
        gpu.SelectiveScanContinue(ssmG, u.G, dbc.G, xz.G, yc0.G, sc0);
        Cpu.SelectiveScanContinue(ssmC, u.C, dbc.C, xz.C, yc1.C, sc1.C);
        AssertClose(yc1, Tol(dt), "variant 1 continuation output");
        AssertClose(sc1, 2e-5, "variant 1 continuation state");
        AssertSameBits(Get(gpu, yc1.G), Get(gpu, yc0.G), "continuation output, variant 1 vs 0");
        AssertSameBits(Get(gpu, sc1.G), Get(gpu, sc0), "continuation state, variant 1 vs 0");
    }

    [TestCase(DType.BF16, 1, 2048, 1536, 16)]
    [TestCase(DType.F32, 2, 1000, 100, 16)]
    public void TimeSplitLaunchesFallBackToVariant0(DType dt, int batch, int length, int inner, int n)
    {
        var gpu = RequireGpu();
        var rng = new Random(99);
        int rank = 8, ld = rank + 2 * n;
        var (u, dbc, xz) = RandomScanInputs(rng, dt, batch, length, inner, ld);
        var (ssmG, ssmC) = RandomSsm(rng, dt, inner, n, rank);
        gpu.SetTuning(Chunks, 0);  // the automatic split: these batches leave multiprocessors idle, so time is split
        gpu.SetTuning(Variant, 1);
        var y1 = Out(dt, batch, length, inner);
        var st1 = Out(DType.F32, batch, inner, n);
        gpu.SelectiveScan(ssmG, u.G, dbc.G, xz.G, y1.G, st1.G);
        gpu.SetTuning(Variant, 0);
        var y0 = Out(dt, batch, length, inner);
        var st0 = Out(DType.F32, batch, inner, n);
        gpu.SelectiveScan(ssmG, u.G, dbc.G, xz.G, y0.G, st0.G);
        Cpu.SelectiveScan(ssmC, u.C, dbc.C, xz.C, y1.C, st1.C);
        AssertClose(y1, Tol(dt), "time-split output with variant 1 set");
        AssertClose(st1, 2e-5, "time-split final state with variant 1 set");
        AssertSameBits(Get(gpu, y1.G), Get(gpu, y0.G), "time-split output, variant 1 set vs 0");
        AssertSameBits(Get(gpu, st1.G), Get(gpu, st0.G), "time-split final state, variant 1 set vs 0");
    }

    [Test]
    public void SetTuningRefusesUnknownAndStringSwitches()
    {
        var gpu = RequireGpu();
        Assert.Throws<MambaInvalidArgumentException>(() => gpu.SetTuning("MAMBA_NO_SUCH_SWITCH", 1));
        Assert.Throws<MambaInvalidArgumentException>(() => gpu.SetTuning("MAMBA_DECODE_TRACE", 1));
        Assert.DoesNotThrow(() => gpu.SetTuning(Variant, 7), "out-of-range values are clamped, as from the environment");
    }

    /// <summary>Checkpoint k of every batch row, [B, E·N].</summary>
    private static float[] Checkpoint(float[] all, int batch, int nck, int k, int size)
    {
        var r = new float[batch * size];
        for (int bi = 0; bi < batch; bi++) Array.Copy(all, ((long)bi * nck + k) * size, r, (long)bi * size, size);
        return r;
    }

    /// <summary>The first <paramref name="steps"/> time steps of every batch row of a [B, L, width] CPU tensor.</summary>
    private static float[] Prefix(DeviceTensor t, int batch, int length, int width, int steps)
    {
        var all = Get(Cpu, t);
        var r = new float[batch * steps * width];
        for (int bi = 0; bi < batch; bi++) Array.Copy(all, (long)bi * length * width, r, (long)bi * steps * width, (long)steps * width);
        return r;
    }

    private static void AssertSameBits(float[] got, float[] expected, string what)
    {
        Assert.That(got, Has.Length.EqualTo(expected.Length), what);
        for (int i = 0; i < got.Length; i++)
            if (BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits(expected[i]))
                Assert.Fail($"{what}: first difference at {i} of {got.Length}: {got[i]:R} vs {expected[i]:R}");
    }
}
