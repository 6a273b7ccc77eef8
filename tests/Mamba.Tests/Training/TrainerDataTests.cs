using Mamba.Tests.Cli;
using Mamba.Tests.Tokenization;
using Mamba.Training;

namespace Mamba.Tests.Training;

/// <summary>The data pipeline: packing with EOS, JSONL, the validation split and the errors for bad data; the train command's argument errors.</summary>
public class TrainerDataTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("mamba-data-").FullName;

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string File(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        System.IO.File.WriteAllText(path, text);
        return path;
    }

    private TokenDataset Build(string[] files, int maxLength = 4, double validation = 0, string field = "text") =>
        TokenDataset.Build(files, field, TokenizerTestData.NeoX, TrainerTests.Tokenizer, eosTokenId: 0, maxLength, validation, Path.Combine(_dir, "cache"));

    [Test]
    public void DocumentsArePackedWithEosBetweenThem()
    {
        var a = File("a.txt", "Hello world.\n\nSecond paragraph here.\n");
        var b = File("b.jsonl", "{\"text\": \"One line\"}\n\n{\"text\": \"two\", \"id\": 3}\n");
        var tok = TokenizerTestData.NeoX;
        var expected = tok.Encode("Hello world.\n\n").Concat(tok.Encode("Second paragraph here.\n")).Append(0)
            .Concat(tok.Encode("One line")).Append(0).Concat(tok.Encode("two")).Append(0).ToArray();
        using var data = Build([a, b], maxLength: 3);
        Assert.That(data.TokenCount, Is.EqualTo(expected.Length));
        Assert.That(data.TrainSequences, Has.Count.EqualTo(expected.Length / 3));
        var batch = data.ReadBatch([0, 1]);
        Assert.That(new[] { batch[0, 0], batch[0, 1], batch[0, 2], batch[1, 0], batch[1, 1], batch[1, 2] }, Is.EqualTo(expected.Take(6)));
    }

    [Test]
    public void EveryKthSequenceIsHeldOut()
    {
        var a = File("a.txt", string.Join(" ", Enumerable.Repeat("word", 200)));
        using var data = Build([a], maxLength: 4, validation: 0.25);
        Assert.That(data.ValidationSequences.All(i => i % 4 == 3));
        Assert.That(data.ValidationSequences.Count + data.TrainSequences.Count, Is.EqualTo(data.TokenCount / 4));
    }

    [Test]
    public void TheCacheIsReusedAndRebuiltWhenADataFileChanges()
    {
        var a = File("a.txt", "some text to tokenize once");
        long first;
        using (var data = Build([a])) first = data.TokenCount;
        var written = System.IO.File.GetLastWriteTimeUtc(Path.Combine(_dir, "cache", "tokens.bin"));
        using (var again = Build([a])) Assert.That(again.TokenCount, Is.EqualTo(first));
        Assert.That(System.IO.File.GetLastWriteTimeUtc(Path.Combine(_dir, "cache", "tokens.bin")), Is.EqualTo(written), "reused");
        System.IO.File.AppendAllText(a, " and more words appended later");
        using var changed = Build([a]);
        Assert.That(changed.TokenCount, Is.GreaterThan(first));
    }

    [Test]
    public void AMissingJsonlFieldNamesTheLine()
    {
        var b = File("b.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n");
        Assert.That(() => Build([b]), Throws.InstanceOf<MambaFormatException>().With.Message.Contains("line 2").And.Message.Contains("'text'").And.Message.Contains("b.jsonl"));
    }

    [Test]
    public void BadJsonNamesTheLine()
    {
        var b = File("b.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": \n");
        Assert.That(() => Build([b]), Throws.InstanceOf<MambaFormatException>().With.Message.Contains("line 3"));
    }

    [Test]
    public void NonUtf8NamesTheByteOffset()
    {
        var path = Path.Combine(_dir, "bad.txt");
        System.IO.File.WriteAllBytes(path, [.. "line one\nab"u8, 0xC3, 0x28, .. " rest\n"u8]);
        Assert.That(() => Build([path]), Throws.InstanceOf<MambaFormatException>().With.Message.Contains("byte offset 11").And.Message.Contains("bad.txt"));
    }

    [Test]
    public void AnEmptyFileIsAnError()
    {
        var empty = File("empty.txt", "");
        Assert.That(() => Build([empty]), Throws.InstanceOf<MambaFormatException>().With.Message.Contains("empty"));
        var blank = File("blank.txt", "\n  \n");
        Assert.That(() => Build([blank]), Throws.InstanceOf<MambaFormatException>().With.Message.Contains("whitespace"));
    }

    [Test]
    public void AMaxLengthTheDataCannotFillIsAnError()
    {
        var a = File("a.txt", "just a few tokens");
        Assert.That(() => Build([a], maxLength: 4096), Throws.InstanceOf<MambaFormatException>().With.Message.Contains("fewer than one sequence of max_length 4096"));
    }

    [Test]
    public void TrainCommandReportsBadArgumentsClearly()
    {
        var data = File("a.txt", "text");
        var (code, output) = CliRunner.Run("train", "--data", data, "--output", Path.Combine(_dir, "o"), "--preset", "130m", "--model", _dir);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(output, Does.Contain("either --model"));
        (code, output) = CliRunner.Run("train", "--data", Path.Combine(_dir, "missing.txt"), "--output", Path.Combine(_dir, "o"), "--preset", "130m");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(output, Does.Contain("missing.txt"));
        (code, output) = CliRunner.Run("train", "--data", data, "--output", Path.Combine(_dir, "o"), "--preset", "130m", "--gradient-accumulation-steps", "0");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(output, Does.Contain("GradientAccumulationSteps"));
    }

    [Test]
    public void TrainCommandLowersTheLossOfATinyModelOnTheCpu()
    {
        var data = TrainerTests.WriteCorpus(_dir, paragraphs: 60);
        var output = Path.Combine(_dir, "run");
        var (code, text) = CliRunner.Run("train", "--preset", "130m", "--hidden-size", "32", "--layers", "2", "--state-size", "4",
            "--tokenizer", TrainerTests.Tokenizer, "--data", data, "--output", output, "--max-length", "16", "--max-steps", "12",
            "--per-device-train-batch-size", "2", "--learning-rate", "3e-3", "--logging-steps", "1", "--eval-steps", "6",
            "--save-steps", "6", "--threads", "2", "--eval-data", TrainerTests.WriteCorpus(Directory.CreateDirectory(Path.Combine(_dir, "held-out")).FullName, paragraphs: 8));
        Assert.That(code, Is.Zero, text);
        var losses = System.IO.File.ReadAllLines(Path.Combine(output, "metrics.jsonl"))
            .Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!["loss"]!.GetValue<double>()).ToArray();
        Assert.That(losses[^1], Is.LessThan(losses[0]));
        var evalLosses = System.IO.File.ReadAllLines(Path.Combine(output, "metrics.jsonl"))
            .Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!["eval_loss"]).Where(n => n is not null).Select(n => n!.GetValue<double>()).ToArray();
        Assert.That(evalLosses, Has.Length.EqualTo(2), "eval on the held-out file at steps 6 and 12");
        Assert.That(evalLosses[1], Is.LessThan(evalLosses[0]));
        Assert.That(System.IO.File.Exists(Path.Combine(output, "loss_curve.png")));
        Assert.That(System.IO.File.Exists(Path.Combine(output, "model.safetensors")));
    }

    [Test]
    public void TheLossCurveIsAPng()
    {
        var metrics = File("metrics.jsonl", "{\"step\":1,\"loss\":3.5}\n{\"step\":2,\"loss\":null,\"skipped\":true}\n{\"step\":3,\"loss\":2.5,\"eval_loss\":2.7}\n");
        var png = Path.Combine(_dir, "curve.png");
        Assert.That(Mamba.Cli.Commands.LossCurvePlot.Write(metrics, png), Is.True);
        Assert.That(System.IO.File.ReadAllBytes(png).Take(4), Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }));
    }
}
