using System.Text.Json.Nodes;
using Mamba.Generation;

namespace Mamba.Tests.Generation;

public class GenerationOptionsTests
{
    [Test]
    public void DefaultsAreHuggingFaces()
    {
        var o = new GenerationOptions();
        Assert.Multiple(() =>
        {
            Assert.That(o.MaxNewTokens, Is.Null);
            Assert.That(o.MaxLength, Is.Null);
            Assert.That(o.MinNewTokens, Is.Zero);
            Assert.That(o.DoSample, Is.False);
            Assert.That(o.Temperature, Is.EqualTo(1.0));
            Assert.That(o.TopK, Is.EqualTo(50));
            Assert.That(o.TopP, Is.EqualTo(1.0));
            Assert.That(o.MinP, Is.Null);
            Assert.That(o.RepetitionPenalty, Is.EqualTo(1.0));
            Assert.That(o.EosTokenIds, Is.Null);
            Assert.That(o.StopSequences, Is.Empty);
            Assert.That(o.Seed, Is.Null);
            Assert.That(o.ResolveMaxNewTokens(7), Is.EqualTo(20));
            Assert.That(o.ResolveMinNewTokens(7), Is.Zero);
        });
        Assert.DoesNotThrow(o.Validate);
    }

    [Test]
    public void MaxNewTokensWinsOverMaxLength()
    {
        Assert.That(new GenerationOptions { MaxNewTokens = 7, MaxLength = 100 }.ResolveMaxNewTokens(12), Is.EqualTo(7));
        Assert.That(new GenerationOptions { MaxLength = 30 }.ResolveMaxNewTokens(12), Is.EqualTo(18));
        // transformers: a max_length equal to the library default (20) means 20 new tokens.
        Assert.That(new GenerationOptions { MaxLength = 20 }.ResolveMaxNewTokens(12), Is.EqualTo(20));
        Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationOptions { MaxLength = 10 }.ResolveMaxNewTokens(10));
    }

    [Test]
    public void MinNewTokensWinsOverMinLength()
    {
        Assert.That(new GenerationOptions { MinNewTokens = 3, MinLength = 50 }.ResolveMinNewTokens(10), Is.EqualTo(3));
        Assert.That(new GenerationOptions { MinLength = 15 }.ResolveMinNewTokens(10), Is.EqualTo(5));
        Assert.That(new GenerationOptions { MinLength = 5 }.ResolveMinNewTokens(10), Is.Zero);
    }

    private static string? BadProperty(GenerationOptions options) =>
        Assert.Throws<ArgumentOutOfRangeException>(options.Validate)!.ParamName;

    [Test]
    public void ValidateNamesTheOffendingProperty()
    {
        Assert.Multiple(() =>
        {
            Assert.That(BadProperty(new() { DoSample = true, Temperature = 0 }), Is.EqualTo("Temperature"));
            Assert.That(BadProperty(new() { DoSample = true, Temperature = -1 }), Is.EqualTo("Temperature"));
            Assert.That(BadProperty(new() { DoSample = true, Temperature = double.NaN }), Is.EqualTo("Temperature"));
            Assert.That(BadProperty(new() { TopP = 0 }), Is.EqualTo("TopP"));
            Assert.That(BadProperty(new() { TopP = 1.5 }), Is.EqualTo("TopP"));
            Assert.That(BadProperty(new() { MinP = -0.1 }), Is.EqualTo("MinP"));
            Assert.That(BadProperty(new() { MinP = 1.1 }), Is.EqualTo("MinP"));
            Assert.That(BadProperty(new() { TopK = -1 }), Is.EqualTo("TopK"));
            Assert.That(BadProperty(new() { RepetitionPenalty = 0 }), Is.EqualTo("RepetitionPenalty"));
            Assert.That(BadProperty(new() { MinNewTokens = 5, MaxNewTokens = 3 }), Is.EqualTo("MinNewTokens"));
            Assert.That(BadProperty(new() { MinLength = 30, MaxLength = 20 }), Is.EqualTo("MinLength"));
            Assert.That(BadProperty(new() { MaxNewTokens = -1 }), Is.EqualTo("MaxNewTokens"));
            Assert.That(BadProperty(new() { MinNewTokens = -1 }), Is.EqualTo("MinNewTokens"));
            Assert.That(BadProperty(new() { EosTokenIds = [1, -2] }), Is.EqualTo("EosTokenIds"));
            Assert.That(BadProperty(new() { StopSequences = ["ok", ""] }), Is.EqualTo("StopSequences"));
        });
    }

    [Test]
    public void ValidateAcceptsBoundaryValues()
    {
        Assert.DoesNotThrow(new GenerationOptions { DoSample = false, Temperature = 0 }.Validate, "temperature only matters when sampling");
        Assert.DoesNotThrow(new GenerationOptions { DoSample = true, Temperature = 0.01, TopP = 1.0, MinP = 0, TopK = 0 }.Validate);
        Assert.DoesNotThrow(new GenerationOptions { MinP = 1.0, MinNewTokens = 4, MaxNewTokens = 4 }.Validate);
    }

    [Test]
    public void ReadsTheTinyFixtureGenerationConfig()
    {
        var path = Path.Combine(TestFixtures.Model("tiny"), "model", "generation_config.json");
        var o = GenerationOptions.FromGenerationConfig(path);
        // The file: bos 0, eos 0, pad 0, plus keys this library ignores; everything else keeps the HF default.
        Assert.Multiple(() =>
        {
            Assert.That(o.EosTokenIds, Is.EqualTo(new[] { 0 }));
            Assert.That(o.PadTokenId, Is.EqualTo(0));
            Assert.That(o.BosTokenId, Is.EqualTo(0));
            Assert.That(o.DoSample, Is.False);
            Assert.That(o.MaxNewTokens, Is.Null);
            Assert.That(o.TopK, Is.EqualTo(50));
            Assert.That(o.ResolveMaxNewTokens(5), Is.EqualTo(20));
        });
    }

    [Test]
    public void ReadsEveryKnownKey()
    {
        var json = JsonNode.Parse("""
            {
              "max_new_tokens": 32, "max_length": 100, "min_new_tokens": 4, "min_length": 3,
              "do_sample": true, "temperature": 0.7, "top_k": 0, "top_p": 0.9, "min_p": 0.05,
              "repetition_penalty": 1.1, "eos_token_id": [2, 7], "pad_token_id": 1, "bos_token_id": 5,
              "stop_strings": ["\n\n", "###"], "num_beams": 1, "some_future_key": { "x": 1 }
            }
            """)!.AsObject();
        var o = GenerationOptions.FromGenerationConfig(json);
        Assert.Multiple(() =>
        {
            Assert.That(o.MaxNewTokens, Is.EqualTo(32));
            Assert.That(o.MaxLength, Is.EqualTo(100));
            Assert.That(o.MinNewTokens, Is.EqualTo(4));
            Assert.That(o.MinLength, Is.EqualTo(3));
            Assert.That(o.DoSample, Is.True);
            Assert.That(o.Temperature, Is.EqualTo(0.7));
            Assert.That(o.TopK, Is.Zero);
            Assert.That(o.TopP, Is.EqualTo(0.9));
            Assert.That(o.MinP, Is.EqualTo(0.05));
            Assert.That(o.RepetitionPenalty, Is.EqualTo(1.1));
            Assert.That(o.EosTokenIds, Is.EqualTo(new[] { 2, 7 }));
            Assert.That(o.PadTokenId, Is.EqualTo(1));
            Assert.That(o.BosTokenId, Is.EqualTo(5));
            Assert.That(o.StopSequences, Is.EqualTo(new[] { "\n\n", "###" }));
        });
    }

    [Test]
    public void NullValuesMeanDefaults()
    {
        var json = JsonNode.Parse("""{ "max_new_tokens": null, "temperature": null, "eos_token_id": null, "top_k": 5, "max_length": 20.0 }""")!.AsObject();
        var o = GenerationOptions.FromGenerationConfig(json);
        Assert.That(o.MaxNewTokens, Is.Null);
        Assert.That(o.Temperature, Is.EqualTo(1.0));
        Assert.That(o.EosTokenIds, Is.Null);
        Assert.That(o.TopK, Is.EqualTo(5));
        Assert.That(o.MaxLength, Is.EqualTo(20), "an integral float is accepted as an integer");
    }

    [TestCase("""{ "max_new_tokens": "20" }""", "max_new_tokens")]
    [TestCase("""{ "top_k": 2.5 }""", "top_k")]
    [TestCase("""{ "do_sample": 1 }""", "do_sample")]
    [TestCase("""{ "do_sample": "true" }""", "do_sample")]
    [TestCase("""{ "temperature": "hot" }""", "temperature")]
    [TestCase("""{ "top_p": [0.9] }""", "top_p")]
    [TestCase("""{ "eos_token_id": "0" }""", "eos_token_id")]
    [TestCase("""{ "eos_token_id": [1, "x"] }""", "eos_token_id")]
    [TestCase("""{ "eos_token_id": [1, null] }""", "eos_token_id")]
    [TestCase("""{ "pad_token_id": true }""", "pad_token_id")]
    [TestCase("""{ "stop_strings": [1] }""", "stop_strings")]
    [TestCase("""{ "top_p": 1.5 }""", "top_p")]
    [TestCase("""{ "do_sample": true, "temperature": 0 }""", "temperature")]
    [TestCase("""{ "repetition_penalty": -1 }""", "repetition_penalty")]
    [TestCase("""{ "min_new_tokens": 10, "max_new_tokens": 5 }""", "min_new_tokens")]
    public void WrongTypesOrValuesNameTheKey(string jsonText, string key)
    {
        var json = JsonNode.Parse(jsonText)!.AsObject();
        var e = Assert.Throws<MambaConfigException>(() => GenerationOptions.FromGenerationConfig(json, "gen.json"))!;
        Assert.That(e.Key, Is.EqualTo(key));
        Assert.That(e.FilePath, Is.EqualTo("gen.json"));
        Assert.That(e.Message, Does.Contain(key));
    }

    [Test]
    public void FileErrorsCarryThePath()
    {
        var path = Path.Combine(Path.GetTempPath(), $"mamba-genconfig-{Guid.NewGuid():N}.json");
        try
        {
            File.WriteAllText(path, """{ "top_k": "fifty" }""");
            var e = Assert.Throws<MambaConfigException>(() => GenerationOptions.FromGenerationConfig(path))!;
            Assert.That(e.Key, Is.EqualTo("top_k"));
            Assert.That(e.FilePath, Is.EqualTo(path));

            File.WriteAllText(path, "[1, 2]");
            Assert.Throws<MambaFormatException>(() => GenerationOptions.FromGenerationConfig(path));
            File.WriteAllText(path, "{ not json");
            Assert.Throws<MambaFormatException>(() => GenerationOptions.FromGenerationConfig(path));
        }
        finally { File.Delete(path); }
    }
}
