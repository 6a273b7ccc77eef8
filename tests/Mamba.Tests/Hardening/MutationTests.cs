using System.Text;
using Mamba.Generation;
using Mamba.IO;
using Mamba.Tokenization;

namespace Mamba.Tests.Hardening;

/// <summary>
/// A cheap, deterministic stand-in for the coverage-guided fuzzers of fuzz/: seeded mutations (bit flips, interesting
/// bytes, JSON-aware substitutions, cuts, splices) of each file type go through the public readers, and the only
/// acceptable outcomes are success or the documented exceptions. The seeds are fixed, so a failure reproduces; the
/// inputs the fuzzers found are under fuzz/findings and are replayed by <see cref="FuzzFindingsStayFixed"/>.
/// </summary>
[NonParallelizable]
public class MutationTests
{
    private const int Mutations = 2000;
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), $"mamba-mutate-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    /// <summary>The documented outcomes of reading a file: success, or one of these.</summary>
    internal static bool Documented(Exception e, bool tokenizer) =>
        e is MambaFormatException || (tokenizer && e is NotSupportedException);

    internal static readonly string[] JsonReplacements =
    [
        "\"\\ud800\"", "\"\\udc00x\"", "2147483647", "-2147483648", "2147483648", "1e400", "-1", "0", "null", "true", "[]", "{}",
        "\"\"", "\"a\"", "1.5", "[1,2]", "99999999999999999999", "\"auto\"", "[\"\\ud800\"]", "{\"a\":1,\"a\":2}",
    ];

    /// <summary>One mutation of <paramref name="seed"/>; JSON files also get token-level substitutions.</summary>
    internal static byte[] Mutate(byte[] seed, Random random, bool json)
    {
        var data = new List<byte>(seed);
        int rounds = 1 + random.Next(4);
        for (int r = 0; r < rounds && data.Count > 0; r++)
        {
            int at = random.Next(data.Count);
            switch (random.Next(json ? 8 : 6))
            {
                case 0: data[at] ^= (byte)(1 << random.Next(8)); break;
                case 1: data[at] = (byte)new[] { 0, 0xFF, 0x7F, 0x80, (byte)'"', (byte)'\\', (byte)'{', (byte)'[', (byte)',' }[random.Next(9)]; break;
                case 2: data.RemoveRange(at, Math.Min(data.Count - at, 1 + random.Next(16))); break;
                case 3:
                {
                    int from = random.Next(data.Count), length = Math.Min(data.Count - from, 1 + random.Next(64));
                    data.InsertRange(at, data.GetRange(from, length));
                    break;
                }
                case 4: data.RemoveRange(at, data.Count - at); break;
                case 5:
                {
                    // little-endian 64-bit "interesting" value (lengths, offsets, sizes)
                    var value = new[] { 0UL, 1UL, 0x7FFFFFFFUL, 0xFFFFFFFFUL, 0x7FFFFFFFFFFFFFFFUL, ulong.MaxValue, 1UL << 40 }[random.Next(7)];
                    for (int k = 0; k < 8 && at + k < data.Count; k++) data[at + k] = (byte)(value >> (8 * k));
                    break;
                }
                default:
                {
                    // Replace the JSON value that starts after a ':' or '[' near `at`.
                    var text = Encoding.UTF8.GetString(data.ToArray());
                    int colon = text.IndexOfAny([':', '['], Math.Min(at, Math.Max(0, text.Length - 1)));
                    if (colon < 0) break;
                    int end = colon + 1;
                    while (end < text.Length && text[end] is not (',' or '}' or ']')) end++;
                    var replaced = text[..(colon + 1)] + JsonReplacements[random.Next(JsonReplacements.Length)] + text[end..];
                    data = [.. Encoding.UTF8.GetBytes(replaced)];
                    break;
                }
            }
        }
        return [.. data];
    }

    /// <summary>Runs <paramref name="read"/> on <paramref name="count"/> mutations; returns the failures outside the contract.</summary>
    private List<string> Run(string fileName, byte[] seed, bool json, int seedValue, Action<string> read, bool tokenizer = false, int count = Mutations)
    {
        var random = new Random(seedValue);
        var path = Path.Combine(_dir, fileName);
        var failures = new List<string>();
        int succeeded = 0;
        for (int i = 0; i < count && failures.Count < 5; i++)
        {
            var input = Mutate(seed, random, json);
            File.WriteAllBytes(path, input);
            try
            {
                read(path);
                succeeded++;
            }
            catch (Exception e) when (Documented(e, tokenizer))
            {
            }
            catch (Exception e)
            {
                var keep = Path.Combine(Path.GetTempPath(), $"mamba-mutation-{fileName}-{seedValue}-{i}");
                File.WriteAllBytes(keep, input);
                failures.Add($"mutation {i}: {e.GetType().Name}: {e.Message.Split('\n')[0]} (input kept at {keep})");
            }
        }
        TestContext.Out.WriteLine($"{fileName}: {count} mutations, {succeeded} read successfully, the rest with documented errors");
        return failures;
    }

    internal static string SmallTokenizerJson => """
        {"version": "1.0", "truncation": null, "padding": null,
         "added_tokens": [{"id": 9, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                          {"id": 10, "content": " hello", "single_word": true, "lstrip": true, "rstrip": false, "normalized": true, "special": false}],
         "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}]},
         "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
         "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                            "pair": [], "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [9], "tokens": ["<|endoftext|>"]}}},
         "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
         "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                   "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                   "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "Ġa": 5, "abc": 6, "Ġab": 7, "é": 8},
                   "merges": ["a b", "Ġ a", "ab c", ["Ġa", "b"]]}}
        """;

    internal static byte[] SmallSafeTensors(string dir)
    {
        var path = Path.Combine(dir, "seed.safetensors");
        SafeTensorsWriter.WriteFloat32(path, new Dictionary<string, (float[] data, long[] shape)>
        {
            ["a"] = ([1f, 2f, 3f, 4f, 5f, 6f], [2, 3]),
            ["b.weight"] = ([0.5f], [1]),
            ["c"] = (new float[8], [2, 2, 2]),
        });
        return File.ReadAllBytes(path);
    }

    [Test]
    public void MutatedConfigJsonGivesOnlyDocumentedErrors()
    {
        var hf = File.ReadAllBytes(Path.Combine(Api.ApiTestModels.DefaultDirectory, "config.json"));
        var original = Encoding.UTF8.GetBytes("""{"d_model": 64, "n_layer": 2, "vocab_size": 512, "ssm_cfg": {"d_state": 16, "layer": "Mamba1"}, "rms_norm": true, "pad_vocab_size_multiple": 8}""");
        var failures = Run("config.json", hf, json: true, 1, p => MambaConfig.FromFile(p));
        failures.AddRange(Run("config.json", original, json: true, 2, p => MambaConfig.FromFile(p)));
        Assert.That(failures, Is.Empty);
    }

    [Test]
    public void MutatedGenerationConfigGivesOnlyDocumentedErrors()
    {
        var seed = Encoding.UTF8.GetBytes("""{"bos_token_id": 0, "eos_token_id": [0, 2], "pad_token_id": 0, "do_sample": true, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.1, "max_new_tokens": 30, "min_new_tokens": 1, "stop_strings": ["\n\n", "User:"]}""");
        Assert.That(Run("generation_config.json", seed, json: true, 3, p => GenerationOptions.FromGenerationConfig(p)), Is.Empty);
    }

    [Test]
    public void MutatedTokenizerJsonGivesOnlyDocumentedErrors()
    {
        var seed = Encoding.UTF8.GetBytes(SmallTokenizerJson);
        Assert.That(MambaTokenizer.FromFile(WriteSeed("seed-tokenizer.json", seed)).Encode("abc hello"), Is.Not.Empty, "the seed itself loads");
        Assert.That(Run("tokenizer.json", seed, json: true, 4, p =>
        {
            var tokenizer = MambaTokenizer.FromFile(p);
            var ids = tokenizer.Encode("abc ab\u00e9 hello<|endoftext|>", addSpecialTokens: false);
            _ = tokenizer.Decode(ids);
            _ = tokenizer.Decode([0, 1, 2, 9, 10, 11, 1000], skipSpecialTokens: true);
        }, tokenizer: true), Is.Empty);
    }

    private string WriteSeed(string name, byte[] bytes)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Test]
    public void MutatedSafeTensorsGivesOnlyDocumentedErrors()
    {
        var seed = SmallSafeTensors(_dir);
        Assert.That(Run("model.safetensors", seed, json: false, 5, p =>
        {
            using var file = SafeTensorsFile.Open(p);
            foreach (var (name, _) in file.Tensors) _ = file.ReadFloat32(name);
        }), Is.Empty);
        // The header alone, with JSON-aware mutations (the length prefix rewritten to match).
        int headerLength = (int)BitConverter.ToUInt64(seed, 0);
        var header = seed.AsSpan(8, headerLength).ToArray();
        var data = seed.AsSpan(8 + headerLength).ToArray();
        var random = new Random(6);
        var path = Path.Combine(_dir, "model.safetensors");
        var failures = new List<string>();
        for (int i = 0; i < Mutations; i++)
        {
            var mutated = Mutate(header, random, json: true);
            File.WriteAllBytes(path, [.. BitConverter.GetBytes((ulong)mutated.Length), .. mutated, .. data]);
            try
            {
                using var file = SafeTensorsFile.Open(path);
                foreach (var (name, _) in file.Tensors) _ = file.ReadFloat32(name);
            }
            catch (MambaFormatException) { }
            catch (Exception e) { failures.Add($"header mutation {i}: {e.GetType().Name}: {e.Message}"); }
        }
        Assert.That(failures, Is.Empty);
    }

    [Test]
    public void MutatedPytorchModelBinGivesOnlyDocumentedErrors()
    {
        var seed = File.ReadAllBytes(Path.Combine(TestFixtures.Model("tiny-original"), "pytorch_model.bin"));
        // Whole-file mutations (most land in tensor bytes and must fail the CRC-32 check; the rest hit zip headers).
        Assert.That(Run("pytorch_model.bin", seed, json: false, 7, p =>
        {
            using var checkpoint = TorchCheckpoint.Open(p);
            foreach (var name in checkpoint.TensorNames) _ = checkpoint.ReadFloat32(name);
        }, count: 1000), Is.Empty);
        // The pickle alone, through a zip rebuilt around each mutation.
        using var zip = new System.IO.Compression.ZipArchive(new MemoryStream(seed));
        var entries = zip.Entries.Select(e => (e.FullName, Bytes: ReadAll(e))).ToList();
        int pkl = entries.FindIndex(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal));
        var random = new Random(8);
        var path = Path.Combine(_dir, "pytorch_model.bin");
        var failures = new List<string>();
        for (int i = 0; i < Mutations; i++)
        {
            var mutated = Mutate(entries[pkl].Bytes, random, json: false);
            using (var output = File.Create(path))
            using (var rebuilt = new System.IO.Compression.ZipArchive(output, System.IO.Compression.ZipArchiveMode.Create))
                for (int k = 0; k < entries.Count; k++)
                {
                    var entry = rebuilt.CreateEntry(entries[k].FullName, System.IO.Compression.CompressionLevel.NoCompression);
                    using var s = entry.Open();
                    s.Write(k == pkl ? mutated : entries[k].Bytes);
                }
            try
            {
                using var checkpoint = TorchCheckpoint.Open(path);
                foreach (var name in checkpoint.TensorNames) _ = checkpoint.ReadFloat32(name);
            }
            catch (MambaFormatException) { }
            catch (Exception e) { failures.Add($"pickle mutation {i}: {e.GetType().Name}: {e.Message}"); }
        }
        Assert.That(failures, Is.Empty);
    }

    private static byte[] ReadAll(System.IO.Compression.ZipArchiveEntry e)
    {
        using var s = e.Open();
        var buffer = new byte[e.Length];
        s.ReadExactly(buffer);
        return buffer;
    }

    /// <summary>Every input a fuzzer found (fuzz/findings/&lt;target&gt;/*) still gives success or a documented error.</summary>
    [Test]
    public void FuzzFindingsStayFixed()
    {
        var root = FindRepoDirectory("fuzz/findings");
        if (root is null) Assert.Ignore("fuzz/findings not found beside the build");
        int replayed = 0;
        foreach (var file in Directory.GetFiles(root, "*", SearchOption.AllDirectories))
        {
            var target = Path.GetFileName(Path.GetDirectoryName(file))!;
            if (file.EndsWith(".md", StringComparison.Ordinal) || Path.GetFileName(file).StartsWith('.') || Array.IndexOf(Fuzzing.Targets.Names, target) < 0) continue;
            var bytes = File.ReadAllBytes(file);
            var exception = Fuzzing.Targets.Run(target, bytes, _dir);
            Assert.That(exception is null || Documented(exception, target == "tokenizer"), Is.True, $"{file}: {exception}");
            replayed++;
        }
        TestContext.Out.WriteLine($"replayed {replayed} findings");
    }

    internal static string? FindRepoDirectory(string relative)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, relative);
            if (Directory.Exists(candidate)) return candidate;
        }
        return null;
    }
}
