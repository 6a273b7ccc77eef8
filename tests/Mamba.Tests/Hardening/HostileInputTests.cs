using System.IO.Compression;
using System.Text;
using Mamba.Generation;
using Mamba.IO;
using Mamba.Model;
using Mamba.Tests.Api;
using Mamba.Tokenization;
using Microsoft.Extensions.AI;

namespace Mamba.Tests.Hardening;

/// <summary>
/// Regression tests of issue 17: each input class that escaped the error contract (a process abort, an allocation
/// before a bound, an exception of System.Text.Json, an endless read, silently damaged weights, a late failure) now
/// fails with a documented type, or succeeds.
/// </summary>
[NonParallelizable]
public class HostileInputTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), $"mamba-hostile-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private static readonly MambaModelOptions Cpu = new() { Backend = BackendPreference.Cpu };

    /// <summary>A copy of the bundled default model (real tokenizer, 50,280 embedding rows) in a fresh folder.</summary>
    private string CopyDefault(string name = "model")
    {
        var dir = Path.Combine(_dir, name);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(ApiTestModels.DefaultDirectory))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private static void EditJson(string path, Func<string, string> change) => File.WriteAllText(path, change(File.ReadAllText(path)));

    private static string SetKey(string json, string key, string rawValue)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
        node[key] = System.Text.Json.Nodes.JsonNode.Parse(rawValue);
        return node.ToJsonString();
    }

    // ---- process abort: the CPU scan sized stack buffers by state_size --------------------------------------------

    [Test]
    public void ALargeStateSizeRunsOnTheCpuInsteadOfOverflowingTheStack()
    {
        // 65,536 states: 2 × 65,536 vectors were stackalloc'ed per channel group (8 MB with AVX-512, 4 MB with AVX2),
        // past a thread's stack; the process aborted with a stack overflow.
        var config = new MambaConfig { VocabSize = 32, HiddenSize = 8, NumHiddenLayers = 1, StateSize = MambaConfig.MaxStateSize, PadTokenId = 0, BosTokenId = 0, EosTokenIds = [0] };
        var weights = MambaInitializer.Create(config, seed: 1);
        using var lm = new MambaForCausalLM(weights);
        var ids = lm.GenerateGreedy(new int[,] { { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17 } }, maxNewTokens: 2, minNewTokens: 2);
        Assert.That(ids.GetLength(1), Is.EqualTo(19));
    }

    // ---- bounds before allocation ---------------------------------------------------------------------------------

    [Test]
    public void MillionsOfLayersFailAtOnceNamingTheKey()
    {
        var dir = CopyDefault();
        EditJson(Path.Combine(dir, "config.json"), j => SetKey(j, "num_hidden_layers", "5000000"));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var e = Assert.Throws<MambaConfigException>(() => MambaModel.Load(dir, Cpu))!;
        Assert.That(e.Key, Is.EqualTo("num_hidden_layers"));
        Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
    }

    [TestCase("num_hidden_layers", "300")]
    [TestCase("hidden_size", "48")]
    [TestCase("vocab_size", "50277")]
    [TestCase("state_size", "8000")]
    [TestCase("conv_kernel", "7")]
    [TestCase("time_step_rank", "3")]
    public void SizesAreCheckedAgainstWhatTheWeightsHold(string key, string value)
    {
        var dir = CopyDefault();
        EditJson(Path.Combine(dir, "config.json"), j =>
        {
            j = SetKey(j, key, value);
            return key == "hidden_size" ? SetKey(j, "intermediate_size", "96") : j;
        });
        var e = Assert.Throws<MambaConfigException>(() => MambaModel.Load(dir, Cpu))!;
        Assert.That(e.Key, Is.EqualTo(key));
        Assert.That(e.Message, Does.Contain("weights"));
    }

    [Test]
    public void OriginalFormatLayerMismatchNamesTheOriginalKey()
    {
        var dir = CopyDefault();
        File.WriteAllText(Path.Combine(dir, "config.json"),
            """{"d_model": 32, "n_layer": 9, "vocab_size": 50277, "ssm_cfg": {"d_state": 16}, "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 8, "tie_embeddings": true}""");
        var e = Assert.Throws<MambaConfigException>(() => MambaModel.Load(dir, Cpu))!;
        Assert.That(e.Key, Is.EqualTo("n_layer"));
    }

    [TestCase(2147483647, 8, "vocab_size")]
    [TestCase(50277, 2000000000, "pad_vocab_size_multiple")]
    [TestCase(2147483000, 1000, "vocab_size")]
    public void OriginalFormatVocabularyPaddingOverflowIsAConfigError(int vocab, int multiple, string key)
    {
        var path = Path.Combine(_dir, "config.json");
        File.WriteAllText(path, $$"""{"d_model": 64, "n_layer": 2, "vocab_size": {{vocab}}, "pad_vocab_size_multiple": {{multiple}}}""");
        var e = Assert.Throws<MambaConfigException>(() => MambaConfig.FromFile(path))!;
        Assert.That(e.Key, Is.EqualTo(key));
    }

    [TestCase("vocab_size", 1 << 25)]
    [TestCase("hidden_size", 1 << 20)]
    [TestCase("state_size", 1 << 20)]
    [TestCase("conv_kernel", 1 << 20)]
    public void SizesAboveTheSaneLimitsAreConfigErrors(string key, int value)
    {
        var path = Path.Combine(_dir, "config.json");
        File.WriteAllText(path, $$"""{"model_type": "mamba", "{{key}}": {{value}}}""");
        Assert.That(Assert.Throws<MambaConfigException>(() => MambaConfig.FromFile(path))!.Key, Is.EqualTo(key));
    }

    // ---- untyped exceptions from the JSON parsers -------------------------------------------------------------------

    [TestCase("""{"model_type": "mamba", "hidden_act": "\ud800"}""", "hidden_act")]
    [TestCase("""{"model_type": "mamba", "some_note": "ok \udc00 then"}""", "some_note")]
    [TestCase("""{"model_type": "mamba", "nested": {"deep": ["\ud800"]}}""", "nested.deep[0]")]
    [TestCase("""{"model_type": "mamba", "hidden_size": 64, "hidden_size": 32}""", "hidden_size")]
    [TestCase("""{"d_model": 64, "n_layer": 2, "ssm_cfg": {"layer": "\ud800"}}""", "ssm_cfg.layer")]
    public void ConfigJsonBadStringsAndDuplicateKeysAreConfigErrors(string json, string key)
    {
        var path = Path.Combine(_dir, "config.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<MambaConfigException>(() => MambaConfig.FromFile(path))!;
        Assert.That(e.Key, Is.EqualTo(key));
        Assert.That(e.FilePath, Is.EqualTo(path));
    }

    [TestCase("""{"stop_strings": ["\ud800"]}""", "stop_strings[0]")]
    [TestCase("""{"do_sample": true, "do_sample": false}""", "do_sample")]
    [TestCase("""{"note": "\udfff"}""", "note")]
    public void GenerationConfigBadStringsAndDuplicateKeysAreConfigErrors(string json, string key)
    {
        var path = Path.Combine(_dir, "generation_config.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<MambaConfigException>(() => GenerationOptions.FromGenerationConfig(path))!;
        Assert.That(e.Key, Is.EqualTo(key));
        Assert.That(e.FilePath, Is.EqualTo(path));
    }

    [Test]
    public void SafeTensorsMetadataWithABadStringIsAFormatError()
    {
        var path = Path.Combine(_dir, "model.safetensors");
        var header = Encoding.UTF8.GetBytes("""{"__metadata__": {"format": "\ud800"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}""");
        var bytes = new byte[8 + header.Length + 4];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<MambaFormatException>(() => SafeTensorsFile.Open(path).Dispose())!;
        Assert.That(e.EntryName, Is.EqualTo("__metadata__.format"));
        // A tensor name that is not valid UTF-16.
        header = Encoding.UTF8.GetBytes("""{"w\udc00": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}""");
        bytes = new byte[8 + header.Length + 4];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        Assert.Throws<MambaFormatException>(() => SafeTensorsFile.Open(path).Dispose());
    }

    private string TokenizerWith(Func<string, string> change)
    {
        var path = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(path, change(File.ReadAllText(Path.Combine(ApiTestModels.DefaultDirectory, "tokenizer.json"))));
        return path;
    }

    [Test]
    public void TokenizerJsonBadStringsDuplicatesAndWrongTypesAreFormatErrors()
    {
        // An unpaired surrogate in a vocabulary key, in an added token and in a merge.
        var path = TokenizerWith(j => j.Replace("\"vocab\": {", "\"vocab\": {\"\\ud800x\": 50300, ", StringComparison.Ordinal));
        Assert.That(Assert.Throws<MambaFormatException>(() => MambaTokenizer.FromFile(path))!.EntryName, Does.StartWith("model.vocab"));
        path = TokenizerWith(j => j.Replace("\"content\": \"<|endoftext|>\"", "\"content\": \"<|end\\udc00|>\"", StringComparison.Ordinal));
        Assert.That(Assert.Throws<MambaFormatException>(() => MambaTokenizer.FromFile(path))!.EntryName, Does.StartWith("added_tokens[0]"));
        // A key twice in the vocabulary.
        path = TokenizerWith(j => j.Replace("\"vocab\": {", "\"vocab\": {\"!\": 7, ", StringComparison.Ordinal));
        Assert.That(Assert.Throws<MambaFormatException>(() => MambaTokenizer.FromFile(path))!.EntryName, Is.EqualTo("model.vocab.!"));
        // A string where a number is expected (a template's special token ids, a Roberta [token, id] pair).
        path = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(path, MinimalTokenizer("""{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A"}}], "special_tokens": {"a": {"id": "a", "ids": ["7"]}}}"""));
        Assert.That(Assert.Throws<MambaFormatException>(() => MambaTokenizer.FromFile(path))!.EntryName, Does.Contain("special_tokens"));
        File.WriteAllText(path, MinimalTokenizer("""{"type": "RobertaProcessing", "cls": ["a", "0"], "sep": ["b", 1]}"""));
        Assert.That(Assert.Throws<MambaFormatException>(() => MambaTokenizer.FromFile(path))!.EntryName, Is.EqualTo("post_processor.cls"));
    }

    private static string MinimalTokenizer(string postProcessor = "null", string vocab = """{"a": 0, "b": 1}""", string added = "[]") =>
        "{\"added_tokens\": " + added + ", \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}, "
        + "\"post_processor\": " + postProcessor + ", \"decoder\": {\"type\": \"ByteLevel\"}, "
        + "\"model\": {\"type\": \"BPE\", \"vocab\": " + vocab + ", \"merges\": []}}";

    [TestCase("""{"a": 0, "b": 2147483647}""", "[]", "model.vocab")]
    [TestCase("""{"a": 0, "b": 2147483646}""", "[]", "model.vocab")]
    [TestCase("""{"a": 0, "b": 1}""", """[{"id": 2147483647, "content": "<x>", "special": true}]""", "added_tokens[0]")]
    [TestCase("""{"a": 0, "b": 1}""", """[{"id": 2000000000, "content": "<x>", "special": true}]""", "added_tokens[0]")]
    public void TokenIdsNearIntMaxValueAreFormatErrors(string vocab, string added, string entry)
    {
        var path = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(path, MinimalTokenizer(vocab: vocab, added: added));
        Assert.That(Assert.Throws<MambaFormatException>(() => MambaTokenizer.FromFile(path))!.EntryName, Is.EqualTo(entry));
    }

    // ---- endless or huge files ----------------------------------------------------------------------------------

    private static void CompletesQuickly(Action action)
    {
        var task = Task.Run(action);
        Assert.That(task.Wait(TimeSpan.FromSeconds(20)), Is.True, "the read did not finish within 20 s");
    }

    /// <summary>Loading <paramref name="dir"/> fails within 20 s with a <see cref="MambaFormatException"/> naming <paramref name="file"/>.</summary>
    private static void LoadFailsQuicklyNaming(string dir, string file) => CompletesQuickly(() =>
    {
        var e = Assert.Throws<MambaFormatException>(() => MambaModel.Load(dir, Cpu))!;
        Assert.That(e.FilePath, Does.EndWith(file));
    });

    [TestCase("config.json")]
    [TestCase("tokenizer.json")]
    [TestCase("generation_config.json")]
    public void ASymlinkToDevZeroFailsFast(string file)
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("needs /dev/zero");
        var dir = CopyDefault();
        File.Delete(Path.Combine(dir, file));
        File.CreateSymbolicLink(Path.Combine(dir, file), "/dev/zero");
        LoadFailsQuicklyNaming(dir, file);
    }

    [TestCase("config.json")]
    [TestCase("tokenizer.json")]
    [TestCase("generation_config.json")]
    [TestCase("model.safetensors")]
    public void AFifoFailsFast(string file)
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("needs mkfifo");
        var dir = CopyDefault();
        File.Delete(Path.Combine(dir, file));
        using (var mkfifo = System.Diagnostics.Process.Start("mkfifo", Path.Combine(dir, file))) mkfifo.WaitForExit();
        LoadFailsQuicklyNaming(dir, file);
    }

    [TestCase("config.json")]
    [TestCase("tokenizer.json")]
    [TestCase("generation_config.json")]
    public void AHugeFileIsRefusedByItsSize(string file)
    {
        var dir = CopyDefault();
        using (var f = File.Create(Path.Combine(dir, file))) f.SetLength(300L << 20); // sparse: costs no disk
        CompletesQuickly(() =>
        {
            var e = Assert.Throws<MambaFormatException>(() => MambaModel.Load(dir, Cpu))!;
            Assert.That(e.Message, Does.Contain("limit"));
        });
    }

    // ---- zip CRC-32 of pytorch_model.bin --------------------------------------------------------------------------

    [Test]
    public void ADamagedStorageInPytorchModelBinFailsItsCrc()
    {
        var original = Path.Combine(TestFixtures.Model("tiny-original"), "pytorch_model.bin");
        var dir = Path.Combine(_dir, "orig");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TestFixtures.Model("tiny-original")))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var path = Path.Combine(dir, "pytorch_model.bin");
        // Flip one byte inside the largest storage entry (torch.save stores entries uncompressed).
        byte[] content;
        using (var zip = ZipFile.OpenRead(original))
        {
            var entry = zip.Entries.Where(e => e.FullName.Contains("/data/", StringComparison.Ordinal)).OrderByDescending(e => e.Length).First();
            Assert.That(entry.CompressedLength, Is.EqualTo(entry.Length), "stored, not deflated");
            using var s = entry.Open();
            content = new byte[entry.Length];
            s.ReadExactly(content);
        }
        var file = File.ReadAllBytes(path);
        int at = file.AsSpan().IndexOf(content.AsSpan(0, 64));
        Assert.That(at, Is.GreaterThan(0));
        file[at + content.Length / 2] ^= 0x40;
        File.WriteAllBytes(path, file);

        var e = Assert.Throws<MambaFormatException>(() => MambaModel.Load(dir, Cpu).Dispose())!;
        Assert.That(e.Message, Does.Contain("CRC-32"));
        Assert.That(e.FilePath, Is.EqualTo(path));
        using var checkpoint = TorchCheckpoint.Open(path);
        Assert.That(() => { foreach (var name in checkpoint.TensorNames) checkpoint.ReadFloat32(name); },
            Throws.InstanceOf<MambaFormatException>().With.Message.Contains("CRC-32"));
    }

    // ---- contract leaks in the API ------------------------------------------------------------------------------

    [Test]
    public void TheChatClientRejectsANullMessageList()
    {
        using var chat = ApiTestModels.Default.AsChatClient();
        Assert.ThrowsAsync<ArgumentNullException>(() => chat.GetResponseAsync((IEnumerable<ChatMessage>)null!));
        Assert.ThrowsAsync<ArgumentNullException>(async () =>
        {
            await foreach (var _ in chat.GetStreamingResponseAsync((IEnumerable<ChatMessage>)null!)) { }
        });
        Assert.ThrowsAsync<ArgumentException>(() => chat.GetResponseAsync([new ChatMessage(ChatRole.User, "hi"), null!]));
        Assert.Throws<ArgumentNullException>(() => MambaChatClient.FormatPrompt(null!));
    }

    [Test]
    public void OutOfRangeOptionsAreRejectedAtLoad()
    {
        var dir = ApiTestModels.DefaultDirectory;
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => MambaModel.Load(dir, new MambaModelOptions { Backend = (BackendPreference)42 }))!.ParamName,
            Is.EqualTo("Backend"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => MambaModel.Load(dir, new MambaModelOptions { DType = (DType)7 }))!.ParamName,
            Is.EqualTo("DType"));
        Assert.Throws<ArgumentOutOfRangeException>(() => MambaModel.Load(dir, new MambaModelOptions { Backend = BackendPreference.Cpu, CpuThreads = -3 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => MambaModel.Load(dir, new MambaModelOptions { DeviceId = -1 }));
        Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => MambaModel.LoadAsync(dir, new MambaModelOptions { Backend = (BackendPreference)(-1) }));
    }

    // ---- late failures --------------------------------------------------------------------------------------------

    [Test]
    public void AModelThatPicksAPaddedVocabularyRowGeneratesInsteadOfThrowing()
    {
        // The default model's tokenizer knows ids 0..50276; the embedding has 50,280 rows. This untied copy's lm_head
        // scores row 50,279 highest for every input, so greedy decoding picks it every step.
        var dir = CopyDefault();
        var config = MambaConfig.FromFile(Path.Combine(dir, "config.json")) with { TieWordEmbeddings = false };
        var weights = new Dictionary<string, (float[] data, long[] shape)>();
        using (var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors")))
            foreach (var (name, info) in file.Tensors)
                weights[name] = (file.ReadFloat32(name), info.Shape);
        foreach (var (name, (data, _)) in weights)
            if (name.EndsWith("out_proj.weight", StringComparison.Ordinal)) Array.Clear(data); // blocks add nothing
        Array.Fill(weights["backbone.embeddings.weight"].data, 1f);                           // every token embeds to ones
        var head = new float[config.VocabSize * config.HiddenSize];
        head.AsSpan(50279 * config.HiddenSize, config.HiddenSize).Fill(1f);
        weights["lm_head.weight"] = (head, [config.VocabSize, config.HiddenSize]);
        File.Delete(Path.Combine(dir, "model.safetensors"));
        SafeTensorsWriter.WriteFloat32(Path.Combine(dir, "model.safetensors"), weights);
        config.Save(Path.Combine(dir, "config.json"));

        using var model = MambaModel.Load(dir, Cpu);
        Assert.That(model.Tokenizer!.VocabSize, Is.LessThan(model.Config.VocabSize));
        var result = model.GenerateAsync("Hello", new GenerationOptions { MaxNewTokens = 3, MinNewTokens = 3 }).GetAwaiter().GetResult();
        Assert.That(result.OutputIds, Is.EqualTo(new[] { 50279, 50279, 50279 }));
        Assert.That(result.Text, Is.EqualTo(""), "ids beyond the tokenizer decode to nothing, as in Hugging Face tokenizers");
        var streamed = new StringBuilder();
        foreach (var piece in model.GenerateStreamingAsync("Hello", new GenerationOptions { MaxNewTokens = 3 }).ToBlockingEnumerable()) streamed.Append(piece);
        Assert.That(streamed.ToString(), Is.EqualTo(""));
    }

    [Test]
    public void WeightsHoldingNaNAreRefusedAtLoadNamingTheTensor()
    {
        var dir = CopyDefault();
        var path = Path.Combine(dir, "model.safetensors");
        var tensors = new Dictionary<string, (float[] data, long[] shape)>();
        using (var file = SafeTensorsFile.Open(path))
            foreach (var (name, info) in file.Tensors)
                tensors[name] = (file.ReadFloat32(name), info.Shape);
        tensors["backbone.norm_f.weight"].data[3] = float.NaN;
        File.Delete(path);
        SafeTensorsWriter.WriteFloat32(path, tensors);
        var e = Assert.Throws<MambaFormatException>(() => MambaModel.Load(dir, Cpu))!;
        Assert.That(e.EntryName, Is.EqualTo("backbone.norm_f.weight"));
        Assert.That(e.Message, Does.Contain("non-finite"));
    }

    [Test]
    public void NaNLogitsAreATypedNumericalError()
    {
        var config = new MambaConfig { VocabSize = 64, HiddenSize = 16, NumHiddenLayers = 1, StateSize = 4 };
        var weights = MambaInitializer.Create(config, seed: 2);
        Array.Fill(weights[ParameterId.NormF], float.NaN);
        using var lm = new MambaForCausalLM(weights);
        foreach (var options in new[] { new GenerationOptions { MaxNewTokens = 2 }, new GenerationOptions { MaxNewTokens = 2, DoSample = true, Seed = 1 } })
        {
            using var loop = GenerationLoop.ForPrompts(lm, null, [[1, 2, 3]], options, []);
            var e = Assert.Throws<MambaNumericalException>(() => { loop.Prefill(); loop.Decode(); })!;
            Assert.That(e, Is.InstanceOf<MambaException>());
            Assert.That(e.Message, Does.Contain("NaN"));
        }
    }
}
