namespace Mamba.Tests.Cli;

public class CheckReferenceCommandTests
{
    [Test]
    public void PassesOnTheTinyFixtureWithExitCodeZero()
    {
        var (code, output) = CliRunner.Run("check-reference", TestFixtures.Model("tiny"));
        Assert.That(code, Is.EqualTo(0), output);
        Assert.That(output, Does.Contain("logits").And.Contain("generate.greedy").And.Contain("PASS:"));
        Assert.That(output, Does.Not.Contain("FAIL"));
    }

    [Test]
    public void OriginalCheckpointAgainstTinyReferences()
    {
        var (code, output) = CliRunner.Run("check-reference", TestFixtures.Model("tiny"), "--model", TestFixtures.Model("tiny-original"));
        Assert.That(code, Is.EqualTo(0), output);
    }

    [Test]
    public void GradientsPassForTheUntiedFixture()
    {
        var (code, output) = CliRunner.Run("check-reference", TestFixtures.Model("tiny-untied-bias"), "--only", "grad");
        Assert.That(code, Is.EqualTo(0), output);
        Assert.That(output, Does.Contain("grad.lm_head.weight"));
        Assert.That(output, Does.Not.Contain("FAIL"));
    }

    [Test]
    public void AModelThatDiffersFromTheReferenceFails()
    {
        // The untied model's weights against the tiny references: shapes differ, every compared tensor fails.
        var (code, output) = CliRunner.Run("check-reference", TestFixtures.Model("small-long"), "--model",
            Path.Combine(TestFixtures.Model("small-long"), "model"), "--only", "loss");
        Assert.That(code, Is.EqualTo(0), output);
        (code, output) = CliRunner.Run("check-reference", TestFixtures.Model("tiny"), "--model",
            Path.Combine(TestFixtures.Model("tiny-bf16"), "model"), "--only", "forward");
        Assert.That(code, Is.EqualTo(1), output);
    }
}
