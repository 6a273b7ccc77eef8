using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Mamba.IO;
using Mamba.Lora;

namespace Mamba.Tests.Lora;

public class LoraAdapterTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "mamba-lora-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private static string FixtureAdapter => Path.Combine(TestFixtures.Model("lora-tiny"), "adapter");

    private static MambaConfig FixtureModel => MambaConfig.FromFile(Path.Combine(TestFixtures.Model("lora-tiny"), "model", "config.json"));

    /// <summary>A writable copy of the fixture adapter, for corrupting one file.</summary>
    private string CopyFixture()
    {
        string dir = Path.Combine(_dir, "copy");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(FixtureAdapter))
        {
            string dest = Path.Combine(dir, Path.GetFileName(f));
            File.Copy(f, dest);
            File.SetAttributes(dest, FileAttributes.Normal);
        }
        return dir;
    }

    /// <summary>The fixture's tensors as raw (name, dtype, shape, bytes), read independently of LoraAdapter.</summary>
    private static List<(string name, string dtype, long[] shape, byte[] data)> FixtureTensors()
    {
        using var file = SafeTensorsFile.Open(Path.Combine(FixtureAdapter, LoraAdapter.WeightsFileName));
        return file.Tensors.Values.Select(t => (t.Name, t.DType, t.Shape, file.ReadBytes(t.Name))).ToList();
    }

    [Test]
    public void HostileAdapterConfigsGiveTypedErrorsNamingTheKey()
    {
        string dir = CopyFixture();
        string path = Path.Combine(dir, LoraConfig.FileName);
        string good = File.ReadAllText(path);
        // A duplicate key: PEFT (json.load) would silently keep the last one.
        File.WriteAllText(path, good.Replace("\"r\": 4,", "\"r\": 4, \"r\": 16,"));
        var e = Assert.Throws<MambaConfigException>(() => LoraAdapter.Load(dir))!;
        Assert.That(e.Key, Is.EqualTo("r"));
        // An escaped unpaired surrogate in a string.
        File.WriteAllText(path, good.Replace("\"peft_type\": \"LORA\"", "\"peft_type\": \"\\ud800\""));
        Assert.Throws<MambaConfigException>(() => LoraAdapter.Load(dir));
        // Not an object, and not a regular file.
        File.WriteAllText(path, "[1, 2]");
        Assert.Throws<MambaFormatException>(() => LoraAdapter.Load(dir));
        File.Delete(path);
        File.CreateSymbolicLink(path, "/dev/zero");
        Assert.Throws<MambaFormatException>(() => LoraAdapter.Load(dir));
    }

    // ---------------------------------------------------------------- fixture

    [Test]
    public void LoadsFixtureConfig()
    {
        var adapter = LoraAdapter.Load(FixtureAdapter);
        var c = adapter.Config;
        Assert.Multiple(() =>
        {
            Assert.That(c.R, Is.EqualTo(4));
            Assert.That(c.LoraAlpha, Is.EqualTo(8.0));
            Assert.That(c.LoraDropout, Is.EqualTo(0.0));
            Assert.That(c.Bias, Is.EqualTo("none"));
            Assert.That(c.TargetModules, Is.EquivalentTo(new[] { "x_proj", "embeddings", "in_proj" }));
            Assert.That(c.UseRslora, Is.False);
            Assert.That(c.FanInFanOut, Is.False);
            Assert.That(c.ModulesToSave, Is.Null);
            Assert.That(c.RankPattern, Is.Empty);
            Assert.That(c.AlphaPattern, Is.Empty);
            Assert.That(c.TaskType, Is.EqualTo("CAUSAL_LM"));
            Assert.That(c.BaseModelNameOrPath, Is.EqualTo("../model"));
            Assert.That(c.InitLoraWeights, Is.EqualTo("true"));
            Assert.That(adapter.Scale(LoraModuleId.Embeddings), Is.EqualTo(2.0));
        });
    }

    [Test]
    public void LoadsFixtureModulesWithShapesOfTheBaseModel()
    {
        var adapter = LoraAdapter.Load(FixtureAdapter);
        var m = FixtureModel;
        var expected = new HashSet<LoraModuleId> { LoraModuleId.Embeddings };
        for (int i = 0; i < m.NumHiddenLayers; i++)
        {
            expected.Add(LoraModuleId.ForLayer(LoraTarget.InProj, i));
            expected.Add(LoraModuleId.ForLayer(LoraTarget.XProj, i));
        }
        Assert.That(adapter.Modules.Keys, Is.EquivalentTo(expected));

        Assert.Multiple(() =>
        {
            foreach (var (id, w) in adapter.Modules)
            {
                int[] a = id.Target switch
                {
                    LoraTarget.Embeddings => [4, m.VocabSize],
                    LoraTarget.InProj => [4, m.HiddenSize],
                    _ => [4, m.IntermediateSize],
                };
                int[] b = id.Target switch
                {
                    LoraTarget.Embeddings => [m.HiddenSize, 4],
                    LoraTarget.InProj => [2 * m.IntermediateSize, 4],
                    _ => [m.TimeStepRank + 2 * m.StateSize, 4],
                };
                Assert.That(w.A.Shape, Is.EqualTo(a), id.PeftKeyA);
                Assert.That(w.B.Shape, Is.EqualTo(b), id.PeftKeyB);
            }
        });
        Assert.DoesNotThrow(() => adapter.ValidateAgainst(m));
    }

    [Test]
    public void LoadedValuesEqualTheFileBytes()
    {
        var adapter = LoraAdapter.Load(FixtureAdapter);
        var byKey = adapter.Modules.SelectMany(kv => new[] { (kv.Key.PeftKeyA, kv.Value.A), (kv.Key.PeftKeyB, kv.Value.B) })
            .ToDictionary(t => t.Item1, t => t.Item2);
        foreach (var (name, dtype, shape, data) in FixtureTensors())
        {
            Assert.That(dtype, Is.EqualTo("F32"));
            var floats = new float[data.Length / 4];
            for (int i = 0; i < floats.Length; i++)
                floats[i] = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(4 * i));
            Assert.That(byKey[name].Data, Is.EqualTo(floats), name);
        }
    }

    [Test]
    public void ValidateAgainstRejectsAnotherModelShape()
    {
        var adapter = LoraAdapter.Load(FixtureAdapter);
        var m = FixtureModel;
        var e = Assert.Throws<MambaFormatException>(() =>
            adapter.ValidateAgainst(m.HiddenSize * 2, m.IntermediateSize * 2, m.TimeStepRank, m.StateSize, m.VocabSize, m.NumHiddenLayers));
        Assert.That(e!.EntryName, Does.StartWith("base_model.model.backbone."));
        Assert.Throws<MambaFormatException>(() =>
            adapter.ValidateAgainst(m.HiddenSize, m.IntermediateSize, m.TimeStepRank, m.StateSize, m.VocabSize + 1, m.NumHiddenLayers));
        e = Assert.Throws<MambaFormatException>(() =>
            adapter.ValidateAgainst(m.HiddenSize, m.IntermediateSize, m.TimeStepRank, m.StateSize, m.VocabSize, 1));
        Assert.That(e!.Message, Does.Contain("layer 1"));
    }

    // ---------------------------------------------------------------- round trip

    [Test]
    public void SaveThenLoadIsBitIdentical()
    {
        var original = LoraAdapter.Load(FixtureAdapter);
        string outDir = Path.Combine(_dir, "saved");
        original.Save(outDir);
        var reloaded = LoraAdapter.Load(outDir);

        Assert.That(reloaded.Modules.Keys, Is.EqualTo(original.Modules.Keys));
        foreach (var (id, w) in original.Modules)
        {
            var r = reloaded.Modules[id];
            Assert.That(r.A.Shape, Is.EqualTo(w.A.Shape), id.PeftKeyA);
            Assert.That(r.B.Shape, Is.EqualTo(w.B.Shape), id.PeftKeyB);
            Assert.That(r.A.Data.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(w.A.Data.Select(BitConverter.SingleToInt32Bits)), id.PeftKeyA);
            Assert.That(r.B.Data.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(w.B.Data.Select(BitConverter.SingleToInt32Bits)), id.PeftKeyB);
        }
        var a = original.Config;
        var b = reloaded.Config;
        Assert.Multiple(() =>
        {
            Assert.That(b.R, Is.EqualTo(a.R));
            Assert.That(b.LoraAlpha, Is.EqualTo(a.LoraAlpha));
            Assert.That(b.LoraDropout, Is.EqualTo(a.LoraDropout));
            Assert.That(b.Bias, Is.EqualTo(a.Bias));
            Assert.That(b.TargetModules, Is.EqualTo(a.TargetModules));
            Assert.That(b.UseRslora, Is.EqualTo(a.UseRslora));
            Assert.That(b.FanInFanOut, Is.EqualTo(a.FanInFanOut));
            Assert.That(b.ModulesToSave, Is.EqualTo(a.ModulesToSave));
            Assert.That(b.RankPattern, Is.EqualTo(a.RankPattern));
            Assert.That(b.AlphaPattern, Is.EqualTo(a.AlphaPattern));
            Assert.That(b.TaskType, Is.EqualTo(a.TaskType));
            Assert.That(b.InferenceMode, Is.EqualTo(a.InferenceMode));
            Assert.That(b.BaseModelNameOrPath, Is.EqualTo(a.BaseModelNameOrPath));
            Assert.That(b.InitLoraWeights, Is.EqualTo(a.InitLoraWeights));
        });
    }

    [Test]
    public void SavedSafetensorsHasTheFixtureKeysShapesAndBytes()
    {
        string outDir = Path.Combine(_dir, "saved");
        LoraAdapter.Load(FixtureAdapter).Save(outDir);
        using var saved = SafeTensorsFile.Open(Path.Combine(outDir, LoraAdapter.WeightsFileName));
        var reference = FixtureTensors();
        Assert.That(saved.Tensors.Keys, Is.EquivalentTo(reference.Select(t => t.name)));
        foreach (var (name, dtype, shape, data) in reference)
        {
            Assert.That(saved.Tensors[name].DType, Is.EqualTo(dtype), name);
            Assert.That(saved.Tensors[name].Shape, Is.EqualTo(shape), name);
            Assert.That(saved.ReadBytes(name), Is.EqualTo(data), name);
        }
        Assert.That(saved.Metadata["format"], Is.EqualTo("pt"));
    }

    [Test]
    public void SavedConfigHasPeftShape()
    {
        string outDir = Path.Combine(_dir, "saved");
        LoraAdapter.Load(FixtureAdapter).Save(outDir);
        string text = File.ReadAllText(Path.Combine(outDir, LoraConfig.FileName));
        var saved = JsonNode.Parse(text)!.AsObject();
        var reference = JsonNode.Parse(File.ReadAllText(Path.Combine(FixtureAdapter, LoraConfig.FileName)))!.AsObject();
        // Every key we write exists in PEFT's file with the same JSON value (same types: ints stay ints, floats keep a decimal point).
        foreach (var (key, value) in saved)
        {
            Assert.That(reference.ContainsKey(key), Is.True, key);
            if (key == "target_modules")
                Assert.That(value!.AsArray().Select(n => n!.GetValue<string>()), Is.EquivalentTo(reference[key]!.AsArray().Select(n => n!.GetValue<string>())));
            else
                Assert.That(value?.ToJsonString(), Is.EqualTo(reference[key]?.ToJsonString()), key);
        }
        foreach (var key in new[] { "peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "bias", "target_modules", "use_rslora",
                     "fan_in_fan_out", "inference_mode", "base_model_name_or_path", "init_lora_weights", "modules_to_save",
                     "rank_pattern", "alpha_pattern", "peft_version" })
            Assert.That(saved.ContainsKey(key), Is.True, key);
        Assert.That(text, Does.Contain("\"lora_dropout\": 0.0"));
    }

    // ---------------------------------------------------------------- merge math

    [Test]
    public void LinearDeltaMatchesFloat64Reference()
    {
        var adapter = LoraAdapter.Load(FixtureAdapter);
        var id = LoraModuleId.ForLayer(LoraTarget.InProj, 1);
        var w = adapter.Modules[id];
        int r = w.A.Shape[0], inF = w.A.Shape[1], outF = w.B.Shape[0];
        double scale = 8.0 / 4.0;
        var delta = adapter.LinearDelta(id);
        Assert.That(delta, Has.Length.EqualTo(outF * inF));
        double maxRef = 0, maxErr = 0;
        for (int o = 0; o < outF; o++)
            for (int i = 0; i < inF; i++)
            {
                double s = 0;
                for (int k = 0; k < r; k++)
                    s += (double)w.B.Data[o * r + k] * w.A.Data[k * inF + i];
                s *= scale;
                maxRef = Math.Max(maxRef, Math.Abs(s));
                maxErr = Math.Max(maxErr, Math.Abs(s - delta[o * inF + i]));
            }
        Assert.That(maxRef, Is.GreaterThan(0));
        Assert.That(maxErr / maxRef, Is.LessThan(1e-6));
    }

    [Test]
    public void EmbeddingDeltaMatchesPeftEmbeddingForward()
    {
        // PEFT: after_A = F.embedding(x, A.T) (row x of A.T = column x of A), out += after_A @ B.T * scale.
        // Reproduce that for every token in float64 and compare with row x of the merged delta [vocab, hidden].
        // The fixture's lora_embedding_A is all zeros (PEFT initialises the embedding's A to zero; the fixture only
        // randomised B), so A is replaced with random values here to make the orientation observable.
        var fixture = LoraAdapter.Load(FixtureAdapter);
        var fixtureEmbedding = fixture.Modules[LoraModuleId.Embeddings];
        Assert.That(fixtureEmbedding.A.Data, Is.All.EqualTo(0f));
        var rng = new Random(7);
        var randomA = fixtureEmbedding.A.Data.Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var modules = fixture.Modules.ToDictionary(kv => kv.Key, kv => kv.Value);
        modules[LoraModuleId.Embeddings] = fixtureEmbedding with { A = new HostTensor(randomA, fixtureEmbedding.A.Shape) };
        var adapter = new LoraAdapter(fixture.Config, modules);
        var w = adapter.Modules[LoraModuleId.Embeddings];
        Assert.That(w.A.Shape[1], Is.Not.EqualTo(w.B.Shape[0]), "vocab != hidden, so a transposed delta would have the wrong layout");
        int r = w.A.Shape[0], vocab = w.A.Shape[1], hidden = w.B.Shape[0];
        double scale = 2.0;
        var delta = adapter.EmbeddingDelta();
        Assert.That(delta, Has.Length.EqualTo(vocab * hidden));
        double maxRef = 0, maxErr = 0;
        for (int x = 0; x < vocab; x++)
        {
            var afterA = new double[r];
            for (int k = 0; k < r; k++)
                afterA[k] = w.A.Data[k * vocab + x];
            for (int h = 0; h < hidden; h++)
            {
                double s = 0;
                for (int k = 0; k < r; k++)
                    s += afterA[k] * w.B.Data[h * r + k];
                s *= scale;
                maxRef = Math.Max(maxRef, Math.Abs(s));
                maxErr = Math.Max(maxErr, Math.Abs(s - delta[x * hidden + h]));
            }
        }
        Assert.That(maxRef, Is.GreaterThan(0));
        Assert.That(maxErr / maxRef, Is.LessThan(1e-6));
        Assert.That(adapter.WeightDelta(LoraModuleId.Embeddings), Is.EqualTo(delta));
        Assert.Throws<ArgumentException>(() => adapter.LinearDelta(LoraModuleId.Embeddings));
        Assert.Throws<KeyNotFoundException>(() => adapter.LinearDelta(LoraModuleId.ForLayer(LoraTarget.OutProj, 0)));
    }

    // ---------------------------------------------------------------- config rules

    [Test]
    public void ScaleUsesRsloraAndPatterns()
    {
        var config = new LoraConfig
        {
            R = 4,
            LoraAlpha = 8,
            TargetModules = ["in_proj", "x_proj"],
            RankPattern = new Dictionary<string, int> { ["layers.1.mixer.in_proj"] = 16 },
            AlphaPattern = new Dictionary<string, double> { ["x_proj"] = 2 },
        };
        Assert.Multiple(() =>
        {
            Assert.That(config.ScaleFor("backbone.layers.0.mixer.in_proj"), Is.EqualTo(2.0));
            Assert.That(config.RankFor("backbone.layers.1.mixer.in_proj"), Is.EqualTo(16));
            Assert.That(config.ScaleFor("backbone.layers.1.mixer.in_proj"), Is.EqualTo(0.5));
            // "in_proj" must not match "layers.11.mixer.in_proj" via the "layers.1.mixer.in_proj" pattern ('.' is a regex dot).
            Assert.That(config.RankFor("backbone.layers.11.mixer.in_proj"), Is.EqualTo(4));
            Assert.That(config.ScaleFor("backbone.layers.3.mixer.x_proj"), Is.EqualTo(0.5));
            Assert.That((config with { UseRslora = true }).ScaleFor("backbone.layers.0.mixer.in_proj"), Is.EqualTo(4.0));
            Assert.That(config.IsTargeted("backbone.layers.0.mixer.in_proj"), Is.True);
            Assert.That(config.IsTargeted("backbone.layers.0.mixer.dt_proj"), Is.False);
        });
    }

    [Test]
    public void RankPatternIsAppliedWhenLoading()
    {
        string dir = CopyFixture();
        string configPath = Path.Combine(dir, LoraConfig.FileName);
        var obj = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        obj["r"] = 2;
        obj["rank_pattern"] = new JsonObject { ["in_proj"] = 4, ["x_proj"] = 4, ["embeddings"] = 4 };
        File.WriteAllText(configPath, obj.ToJsonString());
        var adapter = LoraAdapter.Load(dir);
        Assert.That(adapter.Scale(LoraModuleId.ForLayer(LoraTarget.InProj, 0)), Is.EqualTo(2.0));
    }

    [Test]
    public void IncompatibleModulesAreListed()
    {
        var config = new LoraConfig { TargetModules = ["in_proj", "out_proj", "backbone.layers.0.mixer.conv1d", "dt_proj", "embeddings"] };
        Assert.That(LoraCompatibility.PeftIncompatibleModules(config), Is.EqualTo(new[] { "out_proj", "backbone.layers.0.mixer.conv1d", "dt_proj" }));
        Assert.That(LoraCompatibility.Reason("dt_proj"), Does.Contain("dt_proj.weight"));
        Assert.That(LoraCompatibility.Reason("in_proj"), Is.Null);
        Assert.That(LoraCompatibility.PeftIncompatibleModules(LoraAdapter.Load(FixtureAdapter).Config), Is.Empty);
    }

    [Test]
    public void PeftKeysRoundTrip()
    {
        foreach (var id in new[] { LoraModuleId.Embeddings, LoraModuleId.ForLayer(LoraTarget.DtProj, 12), LoraModuleId.ForLayer(LoraTarget.OutProj, 0) })
        {
            Assert.That(LoraModuleId.TryParsePeftKey(id.PeftKeyA, out var a, out bool isA) && isA && a == id, Is.True, id.PeftKeyA);
            Assert.That(LoraModuleId.TryParsePeftKey(id.PeftKeyB, out var b, out bool isB2) && !isB2 && b == id, Is.True, id.PeftKeyB);
        }
        Assert.That(default(LoraModuleId), Is.EqualTo(LoraModuleId.Embeddings));
        Assert.That(LoraModuleId.Embeddings.Layer, Is.EqualTo(-1));
        Assert.That(LoraModuleId.TryParsePeftKey("base_model.model.backbone.layers.01.mixer.in_proj.lora_A.weight", out _, out _), Is.False);
        Assert.That(LoraModuleId.TryParsePeftKey("base_model.model.backbone.layers.0.mixer.in_proj.lora_A.default.weight", out _, out _), Is.False);
        Assert.That(LoraModuleId.TryParsePeftKey("base_model.model.backbone.layers.0.mixer.conv1d.lora_A.weight", out _, out _), Is.False);
    }

    // ---------------------------------------------------------------- bad inputs

    [Test]
    public void MissingConfigIsAFormatError()
    {
        string dir = CopyFixture();
        File.Delete(Path.Combine(dir, LoraConfig.FileName));
        var e = Assert.Throws<MambaFormatException>(() => LoraAdapter.Load(dir));
        Assert.That(e!.FilePath, Does.EndWith(LoraConfig.FileName));
    }

    [TestCase("peft_type", "\"IA3\"", "peft_type")]
    [TestCase("use_dora", "true", "use_dora")]
    [TestCase("bias", "\"all\"", "bias")]
    [TestCase("r", "\"four\"", "r")]
    [TestCase("lora_alpha", "[8]", "lora_alpha")]
    [TestCase("target_modules", "\"all-linear\"", "target_modules")]
    [TestCase("target_modules", "[1, 2]", "target_modules")]
    [TestCase("modules_to_save", "[\"lm_head\"]", "modules_to_save")]
    [TestCase("rank_pattern", "{\"in_proj\": \"x\"}", "rank_pattern")]
    public void BadConfigValueIsAConfigErrorNamingTheKey(string key, string json, string expectedKey)
    {
        string dir = CopyFixture();
        string path = Path.Combine(dir, LoraConfig.FileName);
        var obj = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        obj[key] = JsonNode.Parse(json);
        File.WriteAllText(path, obj.ToJsonString());
        var e = Assert.Throws<MambaConfigException>(() => LoraAdapter.Load(dir));
        Assert.That(e!.Key, Is.EqualTo(expectedKey));
        Assert.That(e.FilePath, Is.EqualTo(path));
    }

    [TestCase("peft_type")]
    [TestCase("target_modules")]
    public void MissingRequiredConfigKeyIsAConfigError(string key)
    {
        string dir = CopyFixture();
        string path = Path.Combine(dir, LoraConfig.FileName);
        var obj = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        obj.Remove(key);
        File.WriteAllText(path, obj.ToJsonString());
        var e = Assert.Throws<MambaConfigException>(() => LoraAdapter.Load(dir));
        Assert.That(e!.Key, Is.EqualTo(key));
    }

    [Test]
    public void Ia3MessageSaysNotSupported()
    {
        var obj = new JsonObject { ["peft_type"] = "IA3", ["target_modules"] = new JsonArray("in_proj") };
        var e = Assert.Throws<MambaConfigException>(() => LoraConfig.FromJson(obj));
        Assert.That(e!.Message, Does.Contain("IA3").And.Contain("supported"));
    }

    [Test]
    public void TruncatedSafetensorsIsAFormatError()
    {
        string dir = CopyFixture();
        string path = Path.Combine(dir, LoraAdapter.WeightsFileName);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 100)]);
        var e = Assert.Throws<MambaFormatException>(() => LoraAdapter.Load(dir));
        Assert.That(e!.FilePath, Is.EqualTo(path));
    }

    [Test]
    public void MissingSafetensorsIsAFormatError()
    {
        string dir = CopyFixture();
        File.Delete(Path.Combine(dir, LoraAdapter.WeightsFileName));
        var e = Assert.Throws<MambaFormatException>(() => LoraAdapter.Load(dir));
        Assert.That(e!.FilePath, Does.EndWith(LoraAdapter.WeightsFileName));
    }

    /// <summary>Rewrites the fixture's safetensors file after <paramref name="edit"/> changes the tensor list.</summary>
    private string WithTensors(Action<List<(string name, string dtype, long[] shape, byte[] data)>> edit)
    {
        string dir = CopyFixture();
        var tensors = FixtureTensors();
        edit(tensors);
        SafeTensorsWriter.Write(Path.Combine(dir, LoraAdapter.WeightsFileName), tensors);
        return dir;
    }

    [Test]
    public void UnknownKeyIsAFormatErrorNamingFileAndKey()
    {
        const string key = "base_model.model.backbone.layers.0.mixer.conv1d.lora_A.weight";
        string dir = WithTensors(t => t.Add((key, "F32", [4, 4], new byte[64])));
        var e = Assert.Throws<MambaFormatException>(() => LoraAdapter.Load(dir));
        Assert.That(e!.EntryName, Is.EqualTo(key));
        Assert.That(e.FilePath, Is.EqualTo(Path.Combine(dir, LoraAdapter.WeightsFileName)));
    }

    [Test]
    public void AWithoutBIsAFormatError()
    {
        const string b = "base_model.model.backbone.layers.1.mixer.x_proj.lora_B.weight";
        string dir = WithTensors(t => t.RemoveAll(x => x.name == b));
        var e = Assert.Throws<MambaFormatException>(() => LoraAdapter.Load(dir));
        Assert.That(e!.EntryName, Is.EqualTo(b));
        Assert.That(e.Message, Does.Contain("no matching B"));
    }

    [Test]
    public void MismatchedRankIsAFormatError()
    {
        // Layer 0 in_proj with rank 3 instead of the configured 4 (A [3, 32], B [128, 3]).
        const string a = "base_model.model.backbone.layers.0.mixer.in_proj.lora_A.weight";
        const string b = "base_model.model.backbone.layers.0.mixer.in_proj.lora_B.weight";
        string dir = WithTensors(t =>
        {
            int ia = t.FindIndex(x => x.name == a), ib = t.FindIndex(x => x.name == b);
            t[ia] = (a, "F32", [3, t[ia].shape[1]], new byte[3 * t[ia].shape[1] * 4]);
            t[ib] = (b, "F32", [t[ib].shape[0], 3], new byte[t[ib].shape[0] * 3 * 4]);
        });
        var e = Assert.Throws<MambaFormatException>(() => LoraAdapter.Load(dir));
        Assert.That(e!.EntryName, Is.EqualTo(a));
        Assert.That(e.Message, Does.Contain("rank 4"));
    }

    [Test]
    public void InconsistentShapesAcrossLayersIsAFormatError()
    {
        const string a = "base_model.model.backbone.layers.1.mixer.x_proj.lora_A.weight";
        string dir = WithTensors(t =>
        {
            int ia = t.FindIndex(x => x.name == a);
            t[ia] = (a, "F32", [4, 60], new byte[4 * 60 * 4]);
        });
        var e = Assert.Throws<MambaFormatException>(() => LoraAdapter.Load(dir));
        Assert.That(e!.EntryName, Is.EqualTo(a));
    }

    [Test]
    public void SixteenBitTensorsAreReadAsFloat32()
    {
        string dir = CopyFixture();
        var original = LoraAdapter.Load(dir);
        var tensors = new Dictionary<string, (float[] data, long[] shape)>();
        foreach (var (id, w) in original.Modules)
        {
            tensors[id.PeftKeyA] = (w.A.Data, [w.A.Shape[0], w.A.Shape[1]]);
            tensors[id.PeftKeyB] = (w.B.Data, [w.B.Shape[0], w.B.Shape[1]]);
        }
        SafeTensorsWriter.WriteFloat32(Path.Combine(dir, LoraAdapter.WeightsFileName), tensors, "BF16");
        var bf16 = LoraAdapter.Load(dir);
        var id0 = LoraModuleId.ForLayer(LoraTarget.XProj, 0);
        var expected = original.Modules[id0].A.Data
            .Select(f => BitConverter.UInt32BitsToSingle((uint)SafeTensorsWriter.FloatToBf16(f) << 16)).ToArray();
        Assert.That(bf16.Modules[id0].A.Data, Is.EqualTo(expected));
    }
}
