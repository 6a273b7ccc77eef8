using Mamba.Compute.Cpu;
using Mamba.Generation;

namespace Mamba.Tests.Generation;

/// <summary>
/// The one argmax rule (largest value; NaN never wins; ties to the lowest index; −∞ is a value; no non-NaN value
/// gives −1) on hand-made rows, and the CPU backend and <see cref="TokenSampler"/> following it.
/// </summary>
public class ArgMaxRuleTests
{
    private const float NaN = float.NaN, Inf = float.PositiveInfinity, NegInf = float.NegativeInfinity;

    /// <summary>Rows and the index the rule gives for each.</summary>
    public static readonly object[] Rows =
    [
        new object[] { new[] { 1f, 3f, 3f, 2f }, 1 },              // tie: the lowest index
        new object[] { new[] { 5f, 5f, 5f }, 0 },
        new object[] { new[] { -1f, -0.5f, -3f }, 1 },
        new object[] { new[] { NaN, 1f, 2f }, 2 },                 // NaN first never wins
        new object[] { new[] { NaN, NaN, -7f, NaN }, 2 },
        new object[] { new[] { 2f, NaN, 1f }, 0 },
        new object[] { new[] { NaN, NegInf }, 1 },                 // −∞ is a value, NaN is not
        new object[] { new[] { NegInf, NegInf, NegInf }, 0 },      // all −∞: index 0
        new object[] { new[] { 1f, Inf, 3f, Inf }, 1 },            // +∞ wins, first of equal +∞
        new object[] { new[] { NaN, Inf, NaN }, 1 },
        new object[] { new[] { -0f, 0f }, 0 },                     // −0 and +0 are equal: a tie
        new object[] { new[] { NaN }, -1 },                        // no non-NaN value
        new object[] { new[] { NaN, NaN, NaN }, -1 },
        new object[] { Array.Empty<float>(), -1 },
    ];

    [TestCaseSource(nameof(Rows))]
    public void TheRuleOnHandMadeRows(float[] row, int expected) =>
        Assert.That(ArgMaxRule.Of(row), Is.EqualTo(expected));

    [Test]
    public void TheCpuBackendFollowsTheRule()
    {
        var rows = Rows.Cast<object[]>().Select(r => (float[])r[0]).Where(r => r.Length > 0).ToArray();
        const int width = 4;
        using var backend = new CpuBackend(threads: 1);
        // Each row padded with NaN to one width: NaN never wins, so the rule's answer is unchanged.
        var data = rows.SelectMany(r => r.Concat(Enumerable.Repeat(NaN, width - r.Length))).ToArray();
        using var logits = backend.Upload(data, DType.F32, rows.Length, width);
        var result = new int[rows.Length];
        backend.ArgMax(logits, result);
        Assert.That(result, Is.EqualTo(rows.Select(r => ArgMaxRule.Of(r)).ToArray()));
        Assert.That(result, Does.Contain(-1), "an all-NaN row gives -1 on the backend too");
    }

    [TestCaseSource(nameof(Rows))]
    public void TheGreedySamplerFollowsTheRule(float[] row, int expected)
    {
        var sampler = new TokenSampler(new GenerationOptions());
        if (row.Length == 0) Assert.Throws<ArgumentException>(() => sampler.Next(row));
        else if (expected < 0)
            Assert.That(() => sampler.Next(row), Throws.TypeOf<MambaNumericalException>().With.Message.StartsWith("every logit is NaN: the model produced no usable scores"));
        else Assert.That(sampler.Next(row), Is.EqualTo(expected));
    }
}
