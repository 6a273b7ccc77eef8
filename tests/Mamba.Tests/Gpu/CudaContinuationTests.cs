using Mamba.Compute;
using Mamba.Compute.Cpu;
using Mamba.Compute.Cuda;
using Mamba.Model;
using Mamba.Native;

namespace Mamba.Tests.Gpu;

/// <summary>
/// Continuation on CUDA (chunked prefill): <see cref="CudaBackend.CausalConv1dContinue"/> and
/// <see cref="CudaBackend.SelectiveScanContinue"/> against the CPU continue ops (random states and inputs, poisoned
/// outputs, f32/bf16/f16, L = 1, L &lt; K−1, L = K−1, L not a multiple of the scan tile, several chunks in a row), a
/// zero state continued on the GPU against one GPU forward, and at model level <see cref="MambaForCausalLM.PrefillChunked"/>
/// against one full prefill (next tokens, every cache state) followed by graph-captured decoding.
/// </summary>
[Category("Gpu")]
[NonParallelizable]
public class CudaContinuationTests : GpuOpTestBase
{
    // ---- op level: GPU continue ops against the CPU continue ops ---------------------------------------

    public static IEnumerable<TestCaseData> ConvCases()
    {
        // (dtype, state dtype, B, chunk lengths, E, K)
        foreach (var dt in CudaBackendTests.AllDTypes)
        {
            yield return new TestCaseData(dt, DType.F32, 1, new[] { 1, 1, 1 }, 8, 4);          // L = 1
            yield return new TestCaseData(dt, DType.F32, 3, new[] { 2, 1, 3, 2 }, 5, 4);       // L < K−1, L = K−1
            yield return new TestCaseData(dt, DType.F32, 3, new[] { 67, 33, 5 }, 40, 4);      // conv tile tails
            yield return new TestCaseData(dt, dt, 2, new[] { 2, 40 }, 24, 4);                  // state in the activation dtype
        }
        yield return new TestCaseData(DType.F32, DType.F32, 2, new[] { 131, 1, 64 }, 130, 3);  // K = 3, E over two blocks
        yield return new TestCaseData(DType.F32, DType.F32, 1, new[] { 1, 70, 2 }, 16, 2);      // K = 2
        yield return new TestCaseData(DType.F32, DType.F32, 2, new[] { 3, 9, 4, 1 }, 12, 6);    // generic width, L < K−1
        yield return new TestCaseData(DType.BF16, DType.F32, 1, new[] { 2048 }, 1536, 4);      // a 130m layer chunk
    }

    [TestCaseSource(nameof(ConvCases))]
    public void CausalConv1dContinueMatchesTheCpu(DType dt, DType stateDt, int batch, int[] chunks, int inner, int kernel)
    {
        var rng = new Random(17 + batch * 5 + inner);
        var w = Pair(Rand(rng, (long)inner * kernel, -0.6, 0.6), dt, inner, kernel);
        var b = Pair(Rand(rng, inner, -0.3, 0.3), dt, inner);
        // A random filled state (as after an earlier chunk), the same on both sides.
        var st = Pair(Rand(rng, (long)batch * inner * kernel, -2, 2), stateDt, batch, inner, kernel);
        for (int c = 0; c < chunks.Length; c++)
        {
            int length = chunks[c];
            var xz = Pair(Rand(rng, (long)batch * length * 2 * inner, -2, 2), dt, batch, length, 2 * inner);
            var u = Out(dt, batch, length, inner);
            RequireGpu().CausalConv1dContinue(xz.G, w.G, c % 2 == 0 ? b.G : null, u.G, st.G);
            Cpu.CausalConv1dContinue(xz.C, w.C, c % 2 == 0 ? b.C : null, u.C, st.C);
            AssertClose(u, Tol(dt), $"conv output of chunk {c} (L {length})");
            AssertClose(st, 0, $"conv state after chunk {c} (L {length})");
        }
        // A decode step continues the continued state.
        var x1 = Pair(Rand(rng, (long)batch * 2 * inner, -2, 2), dt, batch, 2 * inner);
        var u1 = Out(dt, batch, inner);
        RequireGpu().CausalConv1dStep(x1.G, w.G, b.G, st.G, u1.G);
        Cpu.CausalConv1dStep(x1.C, w.C, b.C, st.C, u1.C);
        AssertClose(u1, Tol(dt), "conv step after continuation");
        AssertClose(st, 0, "conv state after the step");
    }

    public static IEnumerable<TestCaseData> ScanCases()
    {
        // (dtype, B, chunk lengths, E, N, R)
        foreach (var dt in CudaBackendTests.AllDTypes)
        {
            yield return new TestCaseData(dt, 1, new[] { 1, 1 }, 8, 16, 4);           // L = 1
            yield return new TestCaseData(dt, 3, new[] { 2, 3, 1 }, 17, 1, 2);        // N = 1, short chunks
            yield return new TestCaseData(dt, 3, new[] { 67, 130, 5 }, 40, 16, 5);    // L not a multiple of the time tile (64)
        }
        yield return new TestCaseData(DType.F32, 2, new[] { 131, 17 }, 24, 8, 3);     // N = 8 (tile 32)
        yield return new TestCaseData(DType.F32, 1, new[] { 200, 3 }, 33, 64, 6);     // N = 64
        yield return new TestCaseData(DType.F32, 2, new[] { 50, 1, 49 }, 20, 3, 1);   // odd N, R = 1
        yield return new TestCaseData(DType.F32, 1, new[] { 129, 2 }, 130, 32, 4);    // E over several blocks, N = 32
        yield return new TestCaseData(DType.F32, 3, new[] { 100, 100, 100 }, 48, 17, 7);  // N = 17
        yield return new TestCaseData(DType.F32, 1, new[] { 40 }, 12, 5, 3);           // N = 5
        yield return new TestCaseData(DType.F32, 1, new[] { 19, 7 }, 16, 128, 4);     // N = 128
        yield return new TestCaseData(DType.BF16, 2, new[] { 97, 31 }, 64, 64, 8);
        yield return new TestCaseData(DType.F16, 2, new[] { 33, 1, 8 }, 36, 32, 4);
    }

    [TestCaseSource(nameof(ScanCases))]
    public void SelectiveScanContinueMatchesTheCpu(DType dt, int batch, int[] chunks, int inner, int n, int rank)
    {
        var rng = new Random(29 + batch * 3 + n);
        int ld = rank + 2 * n;
        var (ssmG, ssmC) = RandomSsm(rng, dt, inner, n, rank);
        var st = Pair(Rand(rng, (long)batch * inner * n, -1, 1), DType.F32, batch, inner, n);
        for (int c = 0; c < chunks.Length; c++)
        {
            int length = chunks[c];
            var (u, dbc, xz) = RandomScanInputs(rng, dt, batch, length, inner, ld);
            var y = Out(dt, batch, length, inner);
            RequireGpu().SelectiveScanContinue(ssmG, u.G, dbc.G, xz.G, y.G, st.G);
            Cpu.SelectiveScanContinue(ssmC, u.C, dbc.C, xz.C, y.C, st.C);
            AssertClose(y, Tol(dt), $"scan output of chunk {c} (L {length})");
            AssertClose(st, 2e-5, $"ssm state after chunk {c} (L {length})");
        }
        // A decode step continues the continued state.
        var u1 = Pair(Rand(rng, (long)batch * inner), dt, batch, inner);
        var dbc1 = Pair(Rand(rng, (long)batch * ld), dt, batch, ld);
        var xz1 = Pair(Rand(rng, (long)batch * 2 * inner, -2, 2), dt, batch, 2 * inner);
        var y1 = Out(dt, batch, inner);
        RequireGpu().SelectiveStateStep(ssmG, u1.G, dbc1.G, xz1.G, st.G, y1.G);
        Cpu.SelectiveStateStep(ssmC, u1.C, dbc1.C, xz1.C, st.C, y1.C);
        AssertClose(y1, Tol(dt), "scan step after continuation");
        AssertClose(st, 2e-5, "ssm state after the step");
    }

    /// <summary>On the GPU alone: a zero state continued chunk by chunk gives what one forward over the whole sequence gives.</summary>
    [TestCase(DType.F32, 1, 4, 16, 1)]
    [TestCase(DType.F32, 3, 4, 16, 7)]
    [TestCase(DType.F32, 2, 3, 8, 64)]
    [TestCase(DType.BF16, 2, 4, 16, 2)]
    [TestCase(DType.F16, 1, 4, 32, 100)]
    public void ContinuingAZeroStateEqualsOneForward(DType dt, int batch, int kernel, int n, int chunk)
    {
        var gpu = RequireGpu();
        var rng = new Random(41 + chunk);
        const int total = 203, inner = 72, rank = 5;
        int ld = rank + 2 * n;
        var xz = Rand(rng, (long)batch * total * 2 * inner, -2, 2);
        var dbc = Rand(rng, (long)batch * total * ld);
        var w = Own(gpu.Upload(Rand(rng, (long)inner * kernel, -0.6, 0.6), dt, inner, kernel));
        var bias = Own(gpu.Upload(Rand(rng, inner, -0.3, 0.3), dt, inner));
        var ssm = new SsmParameters(Own(gpu.Upload(Rand(rng, (long)inner * rank, -0.5, 0.5), dt, inner, rank)), Own(gpu.Upload(Rand(rng, inner, -4, -1), dt, inner)),
            Own(gpu.Upload(Rand(rng, (long)inner * n, -8, -0.05), DType.F32, inner, n)), Own(gpu.Upload(Rand(rng, inner, 0.5, 1.5), DType.F32, inner)));

        // One forward over everything.
        var xzAll = Own(gpu.Upload(xz, dt, batch, total, 2 * inner));
        var dbcAll = Own(gpu.Upload(dbc, dt, batch, total, ld));
        var uAll = Own(gpu.Allocate(dt, batch, total, inner));
        var yAll = Own(gpu.Allocate(dt, batch, total, inner));
        var convAll = Own(gpu.Allocate(DType.F32, batch, inner, kernel));
        var ssmAll = Own(gpu.Allocate(DType.F32, batch, inner, n));
        gpu.CausalConv1d(xzAll, w, bias, null, uAll, convAll);
        gpu.SelectiveScan(ssm, uAll, dbcAll, xzAll, yAll, ssmAll);
        var uRef = Get(gpu, uAll);
        var yRef = Get(gpu, yAll);

        // Chunk by chunk from zero states (the first chunk continues a zero state too).
        var conv = Own(gpu.Allocate(DType.F32, batch, inner, kernel));
        var state = Own(gpu.Allocate(DType.F32, batch, inner, n));
        var uGot = new float[uRef.Length];
        var yGot = new float[yRef.Length];
        float[] Slice(float[] data, int width, int start, int count)
        {
            var part = new float[(long)batch * count * width];
            for (int b = 0; b < batch; b++) Array.Copy(data, ((long)b * total + start) * width, part, (long)b * count * width, (long)count * width);
            return part;
        }
        void Scatter(float[] part, float[] into, int width, int start, int count)
        {
            for (int b = 0; b < batch; b++) Array.Copy(part, (long)b * count * width, into, ((long)b * total + start) * width, (long)count * width);
        }
        for (int start = 0; start < total; start += chunk)
        {
            int len = Math.Min(chunk, total - start);
            // The chunk's u comes from the whole-sequence conv (the scan is checked on its own inputs).
            var xzc = Own(gpu.Upload(Slice(xz, 2 * inner, start, len), dt, batch, len, 2 * inner));
            var dbcc = Own(gpu.Upload(Slice(dbc, ld, start, len), dt, batch, len, ld));
            var uc = Own(gpu.Upload(Enumerable.Repeat(float.NaN, batch * len * inner).ToArray(), dt, batch, len, inner));
            gpu.CausalConv1dContinue(xzc, w, bias, uc, conv);
            Scatter(Get(gpu, uc), uGot, inner, start, len);
            var uIn = Own(gpu.Upload(Slice(uRef, inner, start, len), dt, batch, len, inner));
            var yc = Own(gpu.Upload(Enumerable.Repeat(float.NaN, batch * len * inner).ToArray(), dt, batch, len, inner));
            gpu.SelectiveScanContinue(ssm, uIn, dbcc, xzc, yc, state);
            Scatter(Get(gpu, yc), yGot, inner, start, len);
        }
        AssertClose(uGot, uRef, dt == DType.F32 ? 1e-6 : 1e-2, "conv output, chunked vs one forward");
        AssertClose(Get(gpu, conv), Get(gpu, convAll), 0, "conv state, chunked vs one forward");
        AssertClose(yGot, yRef, Tol(dt), "scan output, chunked vs one forward");
        AssertClose(Get(gpu, state), Get(gpu, ssmAll), 2e-5, "ssm state, chunked vs one forward");
    }

    [Test]
    public void ContinueRejectsBadShapesAndKeepsTheStateOnEmptyInput()
    {
        var gpu = RequireGpu();
        var w = Own(gpu.Allocate(DType.F32, 8, 4));
        var st = Own(gpu.Upload(Enumerable.Range(0, 2 * 8 * 4).Select(i => (float)i).ToArray(), DType.F32, 2, 8, 4));
        var xz = Own(gpu.Allocate(DType.F32, 2, 3, 16));
        var u = Own(gpu.Allocate(DType.F32, 2, 3, 8));
        Assert.Throws<ArgumentException>(() => gpu.CausalConv1dContinue(xz, w, null, u, Own(gpu.Allocate(DType.F32, 1, 8, 4))));
        Assert.Throws<ArgumentException>(() => gpu.CausalConv1dContinue(xz, w, null, Own(gpu.Allocate(DType.F32, 2, 2, 8)), st));
        var before = Get(gpu, st);
        gpu.CausalConv1dContinue(Own(gpu.Allocate(DType.F32, 2, 0, 16)), w, null, Own(gpu.Allocate(DType.F32, 2, 0, 8)), st);
        Assert.That(Get(gpu, st), Is.EqualTo(before), "an empty chunk leaves the conv state as it is");
    }

    // ---- model level: chunked prefill against one full prefill ------------------------------------------

    /// <summary>
    /// Chosen tokens equal, except where the full-prefill logits hold a near tie between the two choices (rounding
    /// differences of a different GEMM shape or of the decode-step kernels may flip those).
    /// </summary>
    private static void AssertSameTokens(int[] expected, int[] got, HostTensor lastLogits, double tol, string what)
    {
        Assert.That(got, Has.Length.EqualTo(expected.Length), what);
        for (int b = 0; b < expected.Length; b++)
        {
            if (expected[b] == got[b]) continue;
            var row = lastLogits.Row(b, lastLogits.Shape[1] - 1);
            double scale = 0;
            foreach (var v in row) scale = Math.Max(scale, Math.Abs(v));
            double gap = Math.Abs(row[expected[b]] - row[got[b]]);
            Assert.That(gap, Is.LessThanOrEqualTo(tol * Math.Max(scale, 1e-6)),
                $"{what}: row {b} chose {got[b]} instead of {expected[b]} (logit gap {gap:E3}, scale {scale:E3})");
        }
    }

    private static void AssertSameStates(MambaCache expected, MambaCache got, int layers, DType dt, string what, double? f32Tolerance = null)
    {
        double tol = dt == DType.F32 ? f32Tolerance ?? 2e-4 : 6e-2;
        for (int l = 0; l < layers; l++)
        {
            AssertClose(got.GetConvState(l).Data, expected.GetConvState(l).Data, tol, $"{what}: conv state of layer {l}");
            AssertClose(got.GetSsmState(l).Data, expected.GetSsmState(l).Data, tol, $"{what}: ssm state of layer {l}");
        }
    }

    public static IEnumerable<TestCaseData> ChunkCases()
    {
        foreach (var model in TestFixtures.ModelNames)
            foreach (var dt in new[] { DType.F32, DType.BF16 })
                foreach (var chunk in new[] { 1, 7, 64 })
                    yield return new TestCaseData(model, dt, chunk);
    }

    [TestCaseSource(nameof(ChunkCases))]
    public void PrefillChunkedMatchesOneFullPrefill(string model, DType dt, int chunk)
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        using var lm = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model(model), "model"), backend, dt);
        int batch = chunk == 7 ? 1 : 3;
        const int length = 150;
        var prompt = GpuTestSupport.RandomPrompt(batch, length, lm.Config.VocabSize, 7 * chunk + (int)dt);
        var logits = lm.Forward(prompt, new ForwardOptions { LogitsToKeep = 1 }).Logits;
        using var full = lm.CreateCache(batch);
        var expected = lm.ForwardArgMax(prompt, full);
        using var chunked = lm.CreateCache(batch);
        long graphSteps = lm.FastDecodeSteps;
        var got = lm.PrefillChunked(prompt, chunked, chunk);
        Assert.That(chunked.SeenTokens, Is.EqualTo(length));
        if (chunk == 1 && lm.UseFastDecode)
            Assert.That(lm.FastDecodeSteps - graphSteps, Is.GreaterThan(0), "one-token chunks on a filled cache replay the decode graph");
        double tol = dt == DType.F32 ? 1e-4 : 3e-2;
        AssertSameTokens(expected, got, logits, tol, "next token after the chunked prefill");
        AssertSameStates(full, chunked, lm.Config.NumHiddenLayers, dt, $"chunk {chunk}");

        // Several tokens on the filled cache (Forward, not argmax) continue it like the op-by-op steps would.
        var more = GpuTestSupport.RandomPrompt(batch, 5, lm.Config.VocabSize, 99);
        var moreFull = lm.Forward(more, new ForwardOptions { Cache = full }).Logits;
        var moreChunked = lm.Forward(more, new ForwardOptions { Cache = chunked }).Logits;
        AssertClose(moreChunked.Data, moreFull.Data, dt == DType.F32 ? 2e-4 : 6e-2, "logits of 5 more tokens");
    }

    /// <summary>Greedy graph-captured decoding after a chunked prefill gives what it gives after one full prefill (f32).</summary>
    [TestCaseSource(typeof(TestFixtures), nameof(TestFixtures.ModelNames))]
    public void GraphDecodeAfterChunkedPrefillEqualsAfterFullPrefill(string model)
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        using var lm = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model(model), "model"), backend, DType.F32);
        lm.UseFastDecode = true;
        const int batch = 3;
        var prompt = GpuTestSupport.RandomPrompt(batch, 97, lm.Config.VocabSize, 123);
        using var full = lm.CreateCache(batch);
        var expected = Decode(lm, full, lm.ForwardArgMax(prompt, full), 16);
        foreach (var chunk in new[] { 1, 7, 64 })
        {
            using var chunked = lm.CreateCache(batch);
            long steps = lm.FastDecodeSteps;
            var got = Decode(lm, chunked, lm.PrefillChunked(prompt, chunked, chunk), 16);
            Assert.That(lm.FastDecodeSteps - steps, Is.GreaterThanOrEqualTo(15), $"chunk {chunk}: the decode steps should replay the graph");
            Assert.That(got, Is.EqualTo(expected), $"chunk {chunk}: tokens of greedy decoding after the chunked prefill");
        }
    }

    /// <summary>After a chunked prefill the graph-captured decode and the op-by-op decode give the same tokens and the same cache bits.</summary>
    [TestCase(DType.F32), TestCase(DType.BF16)]
    public void GraphAndOpByOpDecodeAgreeAfterAChunkedPrefill(DType dt)
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        using var lm = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("small-long"), "model"), backend, dt);
        const int batch = 2;
        var prompt = GpuTestSupport.RandomPrompt(batch, 131, lm.Config.VocabSize, 5);
        lm.UseFastDecode = true;
        using var fast = lm.CreateCache(batch);
        var fastTokens = Decode(lm, fast, lm.PrefillChunked(prompt, fast, 32), 12);
        lm.UseFastDecode = false;
        using var slow = lm.CreateCache(batch);
        var slowTokens = Decode(lm, slow, lm.PrefillChunked(prompt, slow, 32), 12);
        lm.UseFastDecode = true;
        Assert.That(fastTokens, Is.EqualTo(slowTokens));
        for (int l = 0; l < lm.Config.NumHiddenLayers; l++)
        {
            Assert.That(fast.GetSsmState(l).Data, Is.EqualTo(slow.GetSsmState(l).Data), $"ssm state of layer {l}");
            Assert.That(fast.GetConvState(l).Data, Is.EqualTo(slow.GetConvState(l).Data), $"conv state of layer {l}");
        }
    }

    /// <summary>A 130m-shaped model (E 1536, 24 layers): chunked prefill of 700 tokens in 256-token chunks against one prefill.</summary>
    [TestCase(DType.F32), TestCase(DType.BF16)]
    public void PrefillChunkedOnA130mShapedModel(DType dt)
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        var weights = MambaInitializer.Create(MambaConfig.Preset("130m"), seed: 3);
        using var lm = new MambaForCausalLM(weights, backend, dt);
        const int batch = 2, length = 700;
        var prompt = GpuTestSupport.RandomPrompt(batch, length, lm.Config.VocabSize, 8);
        var logits = lm.Forward(prompt, new ForwardOptions { LogitsToKeep = 1 }).Logits;
        using var full = lm.CreateCache(batch);
        var expected = lm.ForwardArgMax(prompt, full);
        using var chunked = lm.CreateCache(batch);
        var got = lm.PrefillChunked(prompt, chunked, 256);
        AssertSameTokens(expected, got, logits, dt == DType.F32 ? 1e-4 : 3e-2, "next token");
        // 24 random-init layers amplify the fp32 rounding differences of differently shaped GEMMs and of the scan's time
        // split (the full 700-token prefill runs in 4 time chunks joined by ex2(A·ΣΔ)·h, the 256-token pieces differently):
        // measured 2.6e-4 in f32 over all layers, which pins the arithmetic. In bf16 those differences flip activation
        // roundings that the random layers amplify (0.25 of the largest state by layer 12, chaotic), so bf16 states are
        // compared on the first 3 layers only; the next token is asserted above for both.
        AssertSameStates(full, chunked, dt == DType.F32 ? lm.Config.NumHiddenLayers : 3, dt, "130m, chunk 256", f32Tolerance: 2e-3);
    }

    private static int[][] Decode(MambaForCausalLM lm, MambaCache cache, int[] first, int steps)
    {
        int batch = first.Length;
        var tokens = new List<int[]> { first };
        var next = first;
        for (int s = 0; s < steps; s++)
        {
            var ids = new int[batch, 1];
            for (int b = 0; b < batch; b++) ids[b, 0] = next[b];
            next = lm.ForwardArgMax(ids, cache);
            tokens.Add(next);
        }
        return tokens.ToArray();
    }
}
