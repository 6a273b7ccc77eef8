using System.Text.Json;
using System.Text.Json.Nodes;
using Mamba.Tokenization;

namespace Mamba.Tests.Tokenization;

/// <summary>Malformed and unusual tokenizer files, model folders, and the added-token flags on a small synthetic tokenizer.</summary>
public class TokenizerFileTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "mamba-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string Write(string name, string content)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, content);
        return path;
    }

    /// <summary>A byte-level BPE tokenizer.json whose ids are the byte values, plus the given merges and added tokens.</summary>
    private static JsonObject Synthetic(string[]? merges = null, JsonArray? added = null)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevel.ByteToChar[b].ToString()] = b;
        int next = 256;
        foreach (var m in merges ?? [])
            vocab[m.Replace(" ", "")] = next++;
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = added ?? [],
            ["normalizer"] = new JsonObject { ["type"] = "NFC" },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["vocab"] = vocab,
                ["merges"] = new JsonArray([.. (merges ?? []).Select(m => (JsonNode)JsonValue.Create(m))]),
            },
        };
    }

    private static JsonObject Added(int id, string content, bool special = true, bool lstrip = false, bool rstrip = false, bool singleWord = false, bool normalized = false) => new()
    {
        ["id"] = id, ["content"] = content, ["special"] = special, ["single_word"] = singleWord,
        ["lstrip"] = lstrip, ["rstrip"] = rstrip, ["normalized"] = normalized,
    };

    private MambaTokenizer Load(JsonObject json) => MambaTokenizer.FromFile(Write("tokenizer.json", json.ToJsonString()));

    [Test]
    public void TruncatedFileNamesTheFile()
    {
        var text = File.ReadAllText(TestFixtures.Tokenizer("tokenizer.json"));
        var path = Write("tokenizer.json", text[..(text.Length / 2)]);
        var e = Assert.Throws<MambaFormatException>(() => MambaTokenizer.FromFile(path));
        Assert.That(e!.FilePath, Is.EqualTo(path));
        Assert.That(e.Message, Does.Contain("not valid JSON"));
    }

    [Test]
    public void MissingModelIsReported()
    {
        var json = Synthetic();
        json.Remove("model");
        var e = Assert.Throws<MambaFormatException>(() => Load(json));
        Assert.That(e!.EntryName, Is.EqualTo("model"));
    }

    [Test]
    public void MergeOfUnknownTokenIsReported()
    {
        var json = Synthetic(["a b"]);
        json["model"]!["merges"]!.AsArray().Add("zz q");
        var e = Assert.Throws<MambaFormatException>(() => Load(json));
        Assert.That(e!.EntryName, Is.EqualTo("model.merges[1]"));
        Assert.That(e.Message, Does.Contain("'zz'"));
    }

    [Test]
    public void BadVocabularyIdIsReported()
    {
        var json = Synthetic();
        json["model"]!["vocab"]!["a"] = "seven";
        var e = Assert.Throws<MambaFormatException>(() => Load(json));
        Assert.That(e!.EntryName, Is.EqualTo("model.vocab"));
    }

    [Test]
    public void AddedTokenWithoutIdIsReported()
    {
        var token = Added(300, "<x>");
        token.Remove("id");
        var e = Assert.Throws<MambaFormatException>(() => Load(Synthetic(added: [token])));
        Assert.That(e!.EntryName, Is.EqualTo("added_tokens[0]"));
    }

    [TestCase("WordPiece")]
    [TestCase("Unigram")]
    [TestCase("WordLevel")]
    public void OtherModelTypesAreNotSupported(string type)
    {
        var json = Synthetic();
        json["model"]!["type"] = type;
        var e = Assert.Throws<NotSupportedException>(() => Load(json));
        Assert.That(e!.Message, Does.Contain(type));
    }

    [Test]
    public void MissingFileAndFolder()
    {
        Assert.Throws<FileNotFoundException>(() => MambaTokenizer.FromFile(Path.Combine(_dir, "nope.json")));
        Assert.Throws<FileNotFoundException>(() => MambaTokenizer.FromDirectory(_dir));
        Assert.Throws<DirectoryNotFoundException>(() => MambaTokenizer.FromDirectory(Path.Combine(_dir, "nope")));
    }

    [Test]
    public void MergesAsPairsAndAsStringsAgree()
    {
        var strings = Load(Synthetic(["h e", "l l", "he ll", "hell o"]));
        var json = Synthetic(["h e", "l l", "he ll", "hell o"]);
        json["model"]!["merges"] = new JsonArray([.. new[] { ("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o") }.Select(p => (JsonNode)new JsonArray(p.Item1, p.Item2))]);
        var pairs = Load(json);
        Assert.That(strings.Encode("hello"), Is.EqualTo(new[] { 259 }));
        Assert.That(pairs.Encode("hello"), Is.EqualTo(new[] { 259 }));
    }

    [Test]
    public void AddedTokenStripFlags()
    {
        int a = 'a', b = 'b', sp = ' ';
        Assert.That(Load(Synthetic(added: [Added(300, "<m>")])).Encode("a <m> b"), Is.EqualTo(new[] { a, sp, 300, sp, b }));
        Assert.That(Load(Synthetic(added: [Added(300, "<m>", lstrip: true)])).Encode("a  <m> b"), Is.EqualTo(new[] { a, 300, sp, b }));
        Assert.That(Load(Synthetic(added: [Added(300, "<m>", rstrip: true)])).Encode("a <m>  b"), Is.EqualTo(new[] { a, sp, 300, b }));
    }

    [Test]
    public void SingleWordTokensMatchOnlyWholeWords()
    {
        var tok = Load(Synthetic(added: [Added(300, "cat", special: false, singleWord: true)]));
        Assert.That(tok.Encode("a cat!"), Is.EqualTo(new[] { 'a', ' ', 300, '!' }));
        Assert.That(tok.Encode("cats"), Is.EqualTo(new[] { 'c', 'a', 't', 's' }));
    }

    [Test]
    public void NormalizedAddedTokensMatchAfterNormalization()
    {
        // "é" as an added token written decomposed matches composed and decomposed input alike once normalized.
        var tok = Load(Synthetic(added: [Added(300, "e\u0301", special: false, normalized: true)]));
        Assert.That(tok.Encode("é"), Is.EqualTo(new[] { 300 }));
        Assert.That(tok.Encode("e\u0301"), Is.EqualTo(new[] { 300 }));
        // A non-normalized token is matched on the raw text only.
        var raw = Load(Synthetic(added: [Added(300, "e\u0301", special: false, normalized: false)]));
        Assert.That(raw.Encode("e\u0301"), Is.EqualTo(new[] { 300 }));
        Assert.That(raw.Encode("é"), Is.EqualTo(new[] { 0xC3, 0xA9 }));
    }

    [Test]
    public void TemplatePostProcessorAddsSpecialTokens()
    {
        var json = Synthetic(added: [Added(300, "<s>"), Added(301, "</s>")]);
        json["post_processor"] = JsonNode.Parse("""
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
             "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [300], "tokens": ["<s>"]}, "</s>": {"id": "</s>", "ids": [301], "tokens": ["</s>"]}}}
            """);
        var tok = Load(json);
        Assert.That(tok.Encode("a", addSpecialTokens: true), Is.EqualTo(new[] { 300, 'a', 301 }));
        Assert.That(tok.Encode("a"), Is.EqualTo(new[] { (int)'a' }));
        Assert.That(tok.BosTokenId, Is.EqualTo(300));
        Assert.That(tok.EosTokenId, Is.EqualTo(301));
    }

    [Test]
    public void ModelFolderReadsSpecialTokensAndAddBos()
    {
        File.Copy(TestFixtures.Tokenizer("tokenizer.json"), Path.Combine(_dir, "tokenizer.json"));
        Write("config.json", """{"model_type": "mamba", "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}""");
        var plain = MambaTokenizer.FromDirectory(_dir);
        Assert.That((plain.BosTokenId, plain.EosTokenId, plain.PadTokenId), Is.EqualTo(((int?)0, (int?)0, (int?)1)));
        Assert.That(plain.Encode("Hi", addSpecialTokens: true), Is.EqualTo(plain.Encode("Hi")));

        Write("tokenizer_config.json", """{"add_bos_token": true, "add_eos_token": false, "bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"}, "pad_token": "<|padding|>"}""");
        var withBos = MambaTokenizer.FromDirectory(_dir);
        Assert.That(withBos.Encode("Hi", addSpecialTokens: true), Is.EqualTo(new[] { 0 }.Concat(plain.Encode("Hi"))));
        Assert.That(withBos.PadTokenId, Is.EqualTo(1));

        Write("special_tokens_map.json", "{ not json");
        var e = Assert.Throws<MambaFormatException>(() => MambaTokenizer.FromDirectory(_dir));
        Assert.That(e!.FilePath, Does.EndWith("special_tokens_map.json"));
    }
}
