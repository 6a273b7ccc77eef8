using Mamba.Model;

namespace Mamba.Tests.Model;

/// <summary>The CPU model against transformers 5.17's outputs for every fixture model.</summary>
public class ReferenceFixtureTests
{
    public static IEnumerable<string> Models => TestFixtures.ModelNames;

    [TestCaseSource(nameof(Models))]
    public void EveryDefaultGroupPassesOnTheCpu(string name)
    {
        var fixture = TestFixtures.Model(name);
        using var model = MambaForCausalLM.FromPretrained(Path.Combine(fixture, "model"));
        var rows = ReferenceCheck.Run(model, fixture, ReferenceCheck.DefaultGroups);
        Assert.That(rows, Is.Not.Empty);
        Assert.Multiple(() =>
        {
            foreach (var row in rows)
                Assert.That(row.Passed, Is.True, row.Format());
        });
        // Every group produced rows (nothing silently skipped); padded only where the fixture has it.
        foreach (var group in ReferenceCheck.DefaultGroups)
            Assert.That(rows.Any(r => r.Group == group), Is.True, $"no rows for group {group}");
    }

    [Test]
    public void OriginalPickleCheckpointGivesTheLogitsOfTheSafetensorsModel()
    {
        using var original = MambaForCausalLM.FromPretrained(TestFixtures.Model("tiny-original"));
        using var hf = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("tiny"), "model"));
        Assert.That(original.Config.VocabSize, Is.EqualTo(hf.Config.VocabSize));
        var ids = new int[,] { { 1, 5, 200, 511, 0, 7, 7, 3, 9 } };
        var a = original.Forward(ids).Logits.Data;
        var b = hf.Forward(ids).Logits.Data;
        Assert.That(a, Is.EqualTo(b), "identical weights must give bit-identical logits");
        var rows = ReferenceCheck.Run(original, TestFixtures.Model("tiny"), ["forward", "generate"]);
        Assert.That(rows.All(r => r.Passed), Is.True, string.Join("\n", rows.Where(r => !r.Passed).Select(r => r.Format())));
    }

    [Test]
    public void GradientsOfAnotherModelFailTheGradGroup()
    {
        // The grad group can fail: tiny-bf16's weights (same shapes as tiny) against tiny's reference gradients.
        using var model = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("tiny-bf16"), "model"));
        var rows = ReferenceCheck.Run(model, TestFixtures.Model("tiny"), ["grad"]);
        Assert.That(rows, Is.Not.Empty);
        Assert.That(rows.Count(r => !r.Passed), Is.GreaterThan(rows.Count / 2), string.Join("\n", rows.Select(r => r.Format())));
    }

    [TestCase("tiny")]
    [TestCase("tiny-untied-bias")]
    public void RecomputedActivationsGiveTheSameGradientBits(string name)
    {
        using var model = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model(name), "model"));
        var rng = new Random(5);
        int batch = 2, length = 11;
        var ids = new int[batch, length];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < length; t++) ids[b, t] = rng.Next(model.Config.VocabSize);
        float[][] Run(bool recompute)
        {
            model.ZeroGradients();
            var result = model.ForwardBackward(ids, ids, null, 0.1f, recompute);
            Assert.That(result.Count, Is.EqualTo(batch * (length - 1)));
            return model.Gradients.Items.OrderBy(kv => kv.Key.ToString(), StringComparer.Ordinal).Select(kv =>
            {
                var data = new float[kv.Value.ElementCount];
                model.Backend.Download(kv.Value, data);
                return data;
            }).ToArray();
        }
        var stored = Run(false);
        var recomputed = Run(true);
        Assert.That(recomputed, Is.EqualTo(stored));
        Assert.That(stored.Any(g => g.Any(v => v != 0)), Is.True, "gradients must not be all zero");
    }
}
