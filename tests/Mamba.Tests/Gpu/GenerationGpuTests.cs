using Mamba.Generation;
using Mamba.Model;

namespace Mamba.Tests.Gpu;

/// <summary>
/// Generation on CUDA: the argmax kernel follows the library's one rule (<see cref="ArgMaxRule"/>) on rows with NaN,
/// ties, ±∞ and no value at all; finished rows leave the batch by a gather on the device; keeping finished rows until
/// half the batch is done changes no token and captures fewer decode graphs.
/// </summary>
[Category("Gpu")]
[NonParallelizable]
public class GenerationGpuTests : GpuOpTestBase
{
    private const float NaN = float.NaN, Inf = float.PositiveInfinity, NegInf = float.NegativeInfinity;

    /// <summary>Hand-made patterns; each is written at spread-out positions of a row otherwise NaN.</summary>
    private static readonly float[][] Patterns =
    [
        [NaN, NaN, NaN],          // no value: -1
        [NaN, 1f, 2f],            // NaN first never wins
        [3f, 1f, 3f, 3f],         // ties: the lowest index
        [NegInf, NegInf],         // -inf is a value
        [NaN, NegInf, NaN],
        [1f, Inf, 2f, Inf],       // +inf, twice
        [-0f, 0f, -1f],           // -0 and +0 tie
    ];

    [TestCase(DType.F32, 13), TestCase(DType.F32, 50280), TestCase(DType.BF16, 777), TestCase(DType.F16, 4099)]
    public void TheArgMaxKernelFollowsTheRule(DType dt, int vocab)
    {
        int rows = Patterns.Length;
        var data = new float[(long)rows * vocab];
        Array.Fill(data, NaN);
        for (int r = 0; r < rows; r++)
        {
            var p = Patterns[r];
            // Spread the pattern over the row (the last entry at the very end) so it crosses the kernel's thread and vector boundaries.
            for (int j = 0; j < p.Length; j++)
            {
                long at = p.Length == 1 ? 0 : (long)j * (vocab - 1) / (p.Length - 1);
                data[(long)r * vocab + at] = p[j];
            }
        }
        var l = Pair(data, dt, rows, vocab);
        var host = Get(Cpu, l.C);
        var expected = Enumerable.Range(0, rows).Select(r => ArgMaxRule.Of(host.AsSpan(r * vocab, vocab))).ToArray();
        var got = new int[rows];
        RequireGpu().ArgMax(l.G, got);
        Assert.That(got, Is.EqualTo(expected));
        Assert.That(expected[0], Is.EqualTo(ArgMaxRule.NoValue));
    }

    [Test]
    public void SelectRowsGathersOnTheDevice()
    {
        using var lm = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("tiny"), "model"), RequireGpu(), DType.F32);
        var ids = new int[3, 6];
        var rng = new Random(5);
        for (int b = 0; b < 3; b++)
            for (int t = 0; t < 6; t++) ids[b, t] = rng.Next(lm.Config.VocabSize);
        using var cache = lm.CreateCache(3);
        lm.ForwardArgMax(ids, cache);
        using var picked = cache.SelectRows([2, 0]);
        for (int layer = 0; layer < lm.Config.NumHiddenLayers; layer++)
            foreach (var (whole, part) in new[] { (cache.GetConvState(layer), picked.GetConvState(layer)), (cache.GetSsmState(layer), picked.GetSsmState(layer)) })
            {
                int width = whole.Data.Length / 3;
                Assert.That(part.Data, Is.EqualTo(whole.Data.AsSpan(2 * width, width).ToArray().Concat(whole.Data.AsSpan(0, width).ToArray()).ToArray()), $"layer {layer}");
            }
    }

    [Test]
    public void KeepingFinishedRowsChangesNoTokenAndCapturesLess()
    {
        using var lm = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("small-long"), "model"), RequireGpu(), DType.F32);
        var rng = new Random(41);
        IReadOnlyList<int>[] prompts = [.. new[] { 3, 8, 1, 5, 12 }.Select(n => Enumerable.Range(0, n).Select(_ => rng.Next(1, lm.Config.VocabSize)).ToArray())];
        // max_length 21: the rows end one at a time (18, 13, 20, 16 and 9 new tokens).
        var options = new GenerationOptions { MaxLength = 21, EosTokenIds = [] };
        (IReadOnlyList<GenerationResult> Results, long Captures) Run(bool retain)
        {
            long before = lm.FastDecodeCaptures;
            using var loop = GenerationLoop.ForPrompts(lm, null, prompts, options, []);
            Assert.That(loop.RetainFinishedRows, Is.True, "greedy on a device backend keeps finished rows by default");
            loop.RetainFinishedRows = retain;
            loop.Prefill();
            loop.Decode();
            return (loop.Results(), lm.FastDecodeCaptures - before);
        }
        var compacting = Run(false);
        var retaining = Run(true);
        Assert.That(retaining.Results.Select(r => r.OutputIds), Is.EqualTo(compacting.Results.Select(r => r.OutputIds)));
        Assert.That(retaining.Captures, Is.LessThan(compacting.Captures), $"captures: retaining {retaining.Captures}, compacting {compacting.Captures}");
    }
}
