using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Mamba.Lora;
using Mamba.Tests.Cli;
using Mamba.Tests.Training;

namespace Mamba.Tests.Lora;

/// <summary>`mamba finetune` end to end on the CPU: a tiny base model, quotes in JSONL, a PEFT adapter folder out.</summary>
public class FinetuneCommandTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("mamba-finetune-").FullName;

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string WriteQuotes(string name, int count, int offset)
    {
        string[] words = ["time", "river", "light", "friend", "stone", "wind", "song", "road"];
        var path = Path.Combine(_dir, name);
        File.WriteAllLines(path, Enumerable.Range(offset, count).Select(i => new JsonObject
        {
            ["quote"] = $"The {words[i % words.Length]} is a {words[(i * 3 + 1) % words.Length]} of the {words[(i * 5 + 2) % words.Length]}.",
            ["author"] = "Anonymous",
        }.ToJsonString()));
        return path;
    }

    [Test]
    public void FinetuneTrainsAnAdapterAndLeavesTheBaseModelAlone()
    {
        var baseDir = Path.Combine(_dir, "base");
        var (code, text) = CliRunner.Run("init-model", "--out", baseDir, "--hidden-size", "32", "--layers", "2", "--state-size", "4",
            "--tokenizer", TrainerTests.Tokenizer, "--seed", "3");
        Assert.That(code, Is.Zero, text);
        var weightsHash = SHA256.HashData(File.ReadAllBytes(Path.Combine(baseDir, "model.safetensors")));
        var output = Path.Combine(_dir, "adapter");
        (code, text) = CliRunner.Run("finetune", "--model", baseDir, "--data", WriteQuotes("train.jsonl", 48, 0), "--text-field", "quote",
            "--eval-data", WriteQuotes("valid.jsonl", 8, 100), "--output", output, "--max-length", "16", "--max-steps", "16",
            "--per-device-train-batch-size", "2", "--learning-rate", "2e-2", "--logging-steps", "1", "--eval-steps", "8", "--device", "cpu",
            "--threads", "2", "--targets", "x_proj,embeddings,in_proj,out_proj,dt_proj", "--eval-on-start");
        Assert.That(code, Is.Zero, text);
        Assert.That(text, Does.Contain("out_proj: peft 0.21 refuses"), "saving what PEFT cannot load says so");
        Assert.That(text, Does.Contain("dt_proj: transformers 5.17"));

        var adapter = LoraAdapter.Load(output);
        Assert.That(adapter.Config.R, Is.EqualTo(8), "PEFT's default r");
        Assert.That(adapter.Config.LoraAlpha, Is.EqualTo(8), "PEFT's default lora_alpha");
        Assert.That(adapter.Modules.Keys.Select(k => k.Target).Distinct().Count(), Is.EqualTo(5));
        Assert.That(adapter.Modules.Values.Any(m => m.B.Data.Any(x => x != 0)), Is.True, "B starts at zero and must have moved");

        var records = File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToArray();
        Assert.That(records[0]["step"]!.GetValue<int>(), Is.Zero, "--eval-on-start records the untrained adapter's eval loss as step 0");
        Assert.That(records[0]["loss"], Is.Null);
        var losses = records.Skip(1).Select(r => r["loss"]!.GetValue<double>()).ToArray();
        Assert.That(losses[^1], Is.LessThan(losses[0] - 0.1), "the adapter learns the quotes");
        var evalLosses = records.Select(r => r["eval_loss"]).Where(n => n is not null).Select(n => n!.GetValue<double>()).ToArray();
        Assert.That(evalLosses, Has.Length.EqualTo(3), "steps 0, 8 and 16");
        Assert.That(evalLosses[2], Is.LessThan(evalLosses[0]));
        Assert.That(File.Exists(Path.Combine(output, "loss_curve.png")));
        Assert.That(SHA256.HashData(File.ReadAllBytes(Path.Combine(baseDir, "model.safetensors"))), Is.EqualTo(weightsHash), "the base model is frozen");

        // The adapter applies at generation time and changes the output.
        using var model = MambaModel.Load(baseDir, new MambaModelOptions { Backend = BackendPreference.Cpu });
        var prompt = model.Encode("The river is");
        var plain = model.GenerateAsync(prompt, new global::Mamba.Generation.GenerationOptions { MaxNewTokens = 6 }).GetAwaiter().GetResult();
        var loaded = model.LoadAdapter(output, "quotes");
        Assert.That(loaded.Name, Is.EqualTo("quotes"));
        var adapted = model.GenerateAsync(prompt, new global::Mamba.Generation.GenerationOptions { MaxNewTokens = 6, Adapter = "quotes" }).GetAwaiter().GetResult();
        Assert.That(adapted.OutputIds, Is.Not.EqualTo(plain.OutputIds));
        Assert.That(model.UnloadAdapter("quotes"), Is.True);
        Assert.Throws<ArgumentException>(() => model.GenerateAsync(prompt, new global::Mamba.Generation.GenerationOptions { MaxNewTokens = 1, Adapter = "quotes" }).GetAwaiter().GetResult());
    }

    [Test]
    public void LoraDropoutIsRefusedForTraining()
    {
        var baseDir = Path.Combine(_dir, "base");
        var (code, text) = CliRunner.Run("init-model", "--out", baseDir, "--hidden-size", "32", "--layers", "1", "--state-size", "4", "--tokenizer", TrainerTests.Tokenizer);
        Assert.That(code, Is.Zero, text);
        (code, text) = CliRunner.Run("finetune", "--model", baseDir, "--data", WriteQuotes("train.jsonl", 8, 0), "--text-field", "quote",
            "--output", Path.Combine(_dir, "o"), "--lora-dropout", "0.1", "--max-steps", "1", "--max-length", "8", "--device", "cpu");
        Assert.That(code, Is.Not.Zero);
        Assert.That(text, Does.Contain("lora_dropout"));
    }
}
