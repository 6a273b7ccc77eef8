using System.CommandLine;
using System.Text.Json;
using Mamba.Cli;

namespace Mamba.Tests.Tokenization;

public class TokenizerCliTests
{
    private static (int ExitCode, string Output, string Error) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Program.BuildRootCommand().Parse(args).Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void CheckTokenizerPassesOnTheReferenceCases()
    {
        var (code, output, _) = Run("check-tokenizer", TestFixtures.Tokenizer("tokenizer.json"), TestFixtures.Tokenizer("cases.json"));
        Assert.That(code, Is.Zero, output);
        Assert.That(output, Does.Contain("cases match"));
    }

    [Test]
    public void CheckTokenizerReportsMismatches()
    {
        var path = Path.Combine(Path.GetTempPath(), $"mamba-cases-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, """{"cases": [{"text": "Hey how are you doing?", "ids": [1, 2, 3]}, {"text": "ok", "ids": [536]}]}""");
        try
        {
            var (code, output, _) = Run("check-tokenizer", TestFixtures.Tokenizer("tokenizer.json"), path);
            Assert.That(code, Is.EqualTo(1));
            Assert.That(output, Does.Contain("MISMATCH").And.Contain("8262, 849, 403, 368, 2509, 32").And.Contain("1/2 cases match"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void TokenizePrintsIds()
    {
        var (code, output, _) = Run("tokenize", "--tokenizer", TestFixtures.Tokenizer("tokenizer.json"), "--text", "Hey how are you doing?");
        Assert.That(code, Is.Zero);
        Assert.That(output.Trim(), Is.EqualTo("8262 849 403 368 2509 32"));

        (code, output, _) = Run("tokenize", "-t", TestFixtures.Tokenizer("tokenizer.json"), "--text", "Hey how are you doing?", "--json");
        Assert.That(code, Is.Zero);
        using var doc = JsonDocument.Parse(output);
        Assert.That(doc.RootElement.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()), Is.EqualTo(new[] { 8262, 849, 403, 368, 2509, 32 }));
        Assert.That(doc.RootElement.GetProperty("count").GetInt32(), Is.EqualTo(6));
    }

    [Test]
    public void TokenizeCountsAFileAndAJsonlFilesDocuments()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"mamba-count-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var text = Path.Combine(dir, "a.txt");
            File.WriteAllText(text, "Hey how are you doing?");
            var (code, output, _) = Run("tokenize", "-t", TestFixtures.Tokenizer("tokenizer.json"), "--file", text, "--count");
            Assert.That(code, Is.Zero);
            Assert.That(output.Trim(), Is.EqualTo("6"));

            var jsonl = Path.Combine(dir, "a.jsonl");
            File.WriteAllText(jsonl, "{\"text\": \"Hey how are you doing?\"}\n\n{\"text\": \"ok\", \"source\": \"x\"}\n");
            (code, output, _) = Run("tokenize", "-t", TestFixtures.Tokenizer("tokenizer.json"), "--file", jsonl, "--jsonl-field", "text", "--json");
            Assert.That(code, Is.Zero, output);
            using var doc = JsonDocument.Parse(output);
            Assert.That(doc.RootElement.GetProperty("count").GetInt64(), Is.EqualTo(7));
            Assert.That(doc.RootElement.GetProperty("documents").GetInt64(), Is.EqualTo(2));

            string error;
            (code, _, error) = Run("tokenize", "-t", TestFixtures.Tokenizer("tokenizer.json"), "--file", jsonl, "--jsonl-field", "body");
            Assert.That(code, Is.EqualTo(2));
            Assert.That(error, Does.Contain("a.jsonl:1").And.Contain("body"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Test]
    public void TokenizeNeedsExactlyOneInput()
    {
        var (code, _, error) = Run("tokenize", "--tokenizer", TestFixtures.Tokenizer("tokenizer.json"));
        Assert.That(code, Is.Not.Zero);
        Assert.That(error, Does.Contain("--text"));
    }

    [Test]
    public void TokenizeReportsABadTokenizerFile()
    {
        var (code, _, error) = Run("tokenize", "--tokenizer", TestFixtures.Tokenizer("cases.json"), "--text", "x");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("model"));
    }
}
