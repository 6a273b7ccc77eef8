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
    public void GradGroupFailsUntilTrainingExists()
    {
        // A tensor the project cannot compute is a FAIL, never a skip.
        using var model = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("tiny"), "model"));
        var rows = ReferenceCheck.Run(model, TestFixtures.Model("tiny"), ["grad"]);
        Assert.That(rows, Is.Not.Empty);
        Assert.That(rows.Any(r => r.Passed), Is.False);
    }
}
