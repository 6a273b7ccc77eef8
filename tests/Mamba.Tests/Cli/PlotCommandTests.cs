namespace Mamba.Tests.Cli;

/// <summary>`mamba plot`: a PNG from a run's metrics.jsonl; a damaged file is one error line naming the line.</summary>
public class PlotCommandTests
{
    private static string TempDir()
    {
        var dir = Path.Combine(Path.GetTempPath(), "mamba-plot-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    [Test]
    public void DrawsTheLossCurveOfARunFolder()
    {
        var dir = TempDir();
        try
        {
            File.WriteAllLines(Path.Combine(dir, "metrics.jsonl"),
            [
                """{"step":0,"epoch":0,"eval_loss":5.1}""",
                """{"step":10,"loss":4.9,"learning_rate":0.001}""",
                "",
                """{"step":20,"loss":4.5,"eval_loss":4.7}""",
            ]);
            var (code, output) = CliRunner.Run("plot", dir);
            Assert.That(code, Is.EqualTo(0), output);
            var png = File.ReadAllBytes(Path.Combine(dir, "loss_curve.png"));
            Assert.That(png.Take(8), Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }), "PNG signature");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestCase("""{"step":"ten","loss":1}""")]
    [TestCase("[1, 2]")]
    [TestCase("{not json")]
    public void ADamagedLineIsOneErrorNamingIt(string bad)
    {
        var dir = TempDir();
        try
        {
            var metrics = Path.Combine(dir, "metrics.jsonl");
            File.WriteAllLines(metrics, ["""{"step":1,"loss":2}""", bad]);
            var (code, output) = CliRunner.Run("plot", metrics, "--out", Path.Combine(dir, "x.png"));
            Assert.That(code, Is.EqualTo(2));
            Assert.That(output, Does.StartWith("error: line 2 ").And.Contain(metrics));
            Assert.That(File.Exists(Path.Combine(dir, "x.png")), Is.False);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Test]
    public void AMissingOrEmptyFileIsAnError()
    {
        var dir = TempDir();
        try
        {
            Assert.That(CliRunner.Run("plot", dir), Is.EqualTo((2, $"error: no metrics file: {Path.Combine(dir, "metrics.jsonl")}\n")));
            File.WriteAllText(Path.Combine(dir, "metrics.jsonl"), """{"step":3}""" + "\n");
            var (code, output) = CliRunner.Run("plot", dir);
            Assert.That(code, Is.EqualTo(2));
            Assert.That(output, Does.Contain("holds no loss values"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
