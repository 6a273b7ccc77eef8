using System.Text.Json;

namespace Mamba.Tests.Cli;

/// <summary>The README's main commands on the bundled default model, driven in-process.</summary>
public class GenerateInfoChatCommandTests
{
    [Test]
    public void GenerateJsonBatchEqualsSeparateRuns()
    {
        var (code, output) = CliRunner.Run("generate", "--device", "cpu", "--prompt-ids", "1,2,3", "--prompt-ids", "50,60", "--max-new-tokens", "5", "--json");
        Assert.That(code, Is.EqualTo(0), output);
        var rows = output.Split('\n').Where(l => l.StartsWith('{')).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.That(rows, Has.Length.EqualTo(2), output);
        Assert.That(rows[0].GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()), Is.EqualTo(new[] { 1, 2, 3 }));
        Assert.That(rows[1].GetProperty("output_ids").GetArrayLength(), Is.EqualTo(5));
        var (_, alone) = CliRunner.Run("generate", "--device", "cpu", "--prompt-ids", "50,60", "--max-new-tokens", "5", "--json");
        var single = JsonDocument.Parse(alone.Split('\n').First(l => l.StartsWith('{'))).RootElement;
        Assert.That(single.GetProperty("output_ids").ToString(), Is.EqualTo(rows[1].GetProperty("output_ids").ToString()));
        Assert.That(rows[0].GetProperty("finish_reason").GetString(), Is.AnyOf("length", "endofsequence"));
    }

    [Test]
    public void GenerateTextStreamsFromTheTrainedDefaultModel()
    {
        var (code, output) = CliRunner.Run("generate", "--device", "cpu", "--prompt", "Once upon a time", "--max-new-tokens", "8");
        Assert.That(code, Is.EqualTo(0), output);
        Assert.That(output, Does.Contain("\nOnce upon a time"));
        Assert.That(output, Does.Not.Contain("untrained"), "the bundled model is trained");
    }

    [Test]
    public void GenerateLabelsAnUntrainedModel()
    {
        var (code, output) = CliRunner.Run("generate", "--device", "cpu", "--model", Api.ApiTestModels.DefaultDirectory, "--prompt", "Once upon a time", "--max-new-tokens", "4");
        Assert.That(code, Is.EqualTo(0), output);
        Assert.That(output, Does.Contain("untrained"));
    }

    [Test]
    public void BadArgumentsGiveOneClearErrorLine()
    {
        var (code, output) = CliRunner.Run("generate", "--device", "cpu", "--prompt-ids", "1,x");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(output, Does.Contain("error: --prompt-ids"));
        (code, output) = CliRunner.Run("generate", "--model", "/nonexistent/model", "--prompt", "x");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(output, Does.Contain("error:").And.Not.Contain("   at "));
    }

    [Test]
    public void InfoShowsTheProbeAndTheModel()
    {
        var (code, output) = CliRunner.Run("info");
        Assert.That(code, Is.EqualTo(0), output);
        Assert.That(output, Does.Contain("backend probe").And.Contain("parameters:").And.Contain("vocab=50280"));
        Assert.That(output, Does.Contain("model card").And.Contain("Validation").And.Not.Contain("untrained"), "the bundled model's card");
    }

    [Test]
    public void ChatAnswersEachLineOfRedirectedInput()
    {
        var (code, output) = CliRunner.RunWithInput("Hello\nWhat now?\n/exit\n", "chat", "--device", "cpu", "--max-new-tokens", "6");
        Assert.That(code, Is.EqualTo(0), output);
        Assert.That(output.Split("> ").Length - 1, Is.EqualTo(3), output); // three prompts: two answered lines, then /exit
    }

    [Test]
    public void SoakRunsEveryScenarioAgainstItsReferenceAndCyclesTheModel()
    {
        var (code, output) = CliRunner.Run("soak", "--model", Api.ApiTestModels.DefaultDirectory, "--device", "cpu", "--seconds", "2",
            "--cycles", "3", "--max-new-tokens", "4", "--max-growth-mib", "256");
        Assert.That(code, Is.EqualTo(0), output);
        Assert.That(output, Does.Contain("mismatches: 0").And.Contain("cycles: 3").And.Contain("PASS").And.Contain("oom: skipped"));
        // The CPU's rows do not depend on the batch: left padding, the mask and the test adapter leave each prompt's
        // logits exactly as when it runs alone.
        Assert.That(output, Does.Contain("every row equal to its one-prompt reference; prompt prefill as a batch against alone: largest logit drift 0 of the scale"));
        foreach (var scenario in new[] { "batch", "streaming", "cancelled", "session", "adapter switch" })
            Assert.That(output, Does.Match(scenario + @" [1-9]"), $"the {scenario} scenario ran");
    }
}
