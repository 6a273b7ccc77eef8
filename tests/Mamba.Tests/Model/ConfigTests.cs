using System.Text.Json.Nodes;
using Mamba.IO;
using Mamba.Model;

namespace Mamba.Tests.Model;

public class ConfigTests
{
    private static JsonObject FixtureJson(string name) =>
        (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(TestFixtures.Model(name), "model", "config.json")))!;

    [TestCaseSource(typeof(TestFixtures), nameof(TestFixtures.ModelNames))]
    public void FixtureConfigsRoundTrip(string name)
    {
        var path = Path.Combine(TestFixtures.Model(name), "model", "config.json");
        var config = MambaConfig.FromFile(path);
        var original = FixtureJson(name);
        var written = config.ToJson();
        // Every key of the file comes back with the same value (transformers_version, architectures, ...).
        foreach (var (key, value) in original)
            Assert.That(JsonNode.DeepEquals(written[key], value), Is.True, $"{key}: wrote {written[key]?.ToJsonString()}, file has {value?.ToJsonString()}");
        var temp = Path.Combine(Path.GetTempPath(), $"mamba-config-{Guid.NewGuid():N}.json");
        try
        {
            config.Save(temp);
            var again = MambaConfig.FromFile(temp);
            Assert.That(again.ToJson().ToJsonString(), Is.EqualTo(written.ToJsonString()));
        }
        finally { File.Delete(temp); }
    }

    [Test]
    public void DerivedValuesFollowTheSpec()
    {
        var tiny = MambaConfig.FromFile(Path.Combine(TestFixtures.Model("tiny"), "model", "config.json"));
        Assert.That(tiny.IntermediateSize, Is.EqualTo(128));
        Assert.That(tiny.TimeStepRank, Is.EqualTo(4));
        var bias = MambaConfig.FromFile(Path.Combine(TestFixtures.Model("tiny-untied-bias"), "model", "config.json"));
        Assert.That(bias.TimeStepRank, Is.EqualTo(6), "an explicit time_step_rank wins over ceil(48/16) = 3");
        Assert.That((bias.UseBias, bias.TieWordEmbeddings, bias.ResidualInFp32, bias.ConvKernel), Is.EqualTo((true, false, false, 3)));
        var auto = MambaConfig.FromJson(new JsonObject { ["hidden_size"] = 768, ["time_step_rank"] = "auto" });
        Assert.That(auto.TimeStepRank, Is.EqualTo(48));
        Assert.That(MambaConfig.Preset("130m").IntermediateSize, Is.EqualTo(1536));
    }

    [Test]
    public void OriginalFormatMapsToHfFields()
    {
        var config = MambaConfig.FromFile(Path.Combine(TestFixtures.Model("tiny-original"), "config.json"));
        Assert.That((config.HiddenSize, config.NumHiddenLayers, config.VocabSize, config.StateSize, config.ConvKernel), Is.EqualTo((64, 2, 512, 16, 4)));
        var padded = MambaConfig.FromOriginalJson(new JsonObject
        {
            ["d_model"] = 768, ["n_layer"] = 24, ["vocab_size"] = 50277, ["pad_vocab_size_multiple"] = 8,
            ["ssm_cfg"] = new JsonObject { ["d_state"] = 8, ["dt_rank"] = 12, ["bias"] = true, ["conv_bias"] = false },
            ["tie_embeddings"] = false,
        });
        Assert.That(padded.VocabSize, Is.EqualTo(50280));
        Assert.That((padded.StateSize, padded.TimeStepRank, padded.UseBias, padded.UseConvBias, padded.TieWordEmbeddings), Is.EqualTo((8, 12, true, false, false)));
    }

    private static IEnumerable<TestCaseData> BadHfConfigs()
    {
        yield return new TestCaseData("hidden_size", "\"64\"").SetName("string where an int belongs");
        yield return new TestCaseData("hidden_size", "-4").SetName("negative hidden size");
        yield return new TestCaseData("use_bias", "1").SetName("number where a bool belongs");
        yield return new TestCaseData("hidden_act", "\"gelu\"").SetName("unsupported activation");
        yield return new TestCaseData("time_step_rank", "\"big\"").SetName("rank neither int nor auto");
        yield return new TestCaseData("intermediate_size", "100").SetName("intermediate size disagrees with expand");
        yield return new TestCaseData("time_step_init_scheme", "\"xavier\"").SetName("unknown init scheme");
        yield return new TestCaseData("eos_token_id", "600").SetName("eos outside vocab");
        yield return new TestCaseData("layer_norm_epsilon", "0").SetName("zero epsilon");
        yield return new TestCaseData("model_type", "\"mamba2\"").SetName("other model type");
        yield return new TestCaseData("dtype", "\"int8\"").SetName("unsupported dtype");
        yield return new TestCaseData("state_size", "2.5").SetName("fractional state size");
    }

    [TestCaseSource(nameof(BadHfConfigs))]
    public void BadValuesNameTheKey(string key, string json)
    {
        var obj = FixtureJson("tiny");
        obj[key] = JsonNode.Parse(json);
        var e = Assert.Throws<MambaConfigException>(() => MambaConfig.FromJson(obj, "config.json"))!;
        Assert.That(e.Key, Is.EqualTo(key));
        Assert.That(e.Message, Does.Contain(key).And.Contain("config.json"));
    }

    [Test]
    public void BadOriginalConfigsNameTheKey()
    {
        Assert.That(Assert.Throws<MambaConfigException>(() => MambaConfig.FromOriginalJson(new JsonObject { ["d_model"] = 64, ["rms_norm"] = false }))!.Key, Is.EqualTo("rms_norm"));
        Assert.That(Assert.Throws<MambaConfigException>(() => MambaConfig.FromOriginalJson(new JsonObject { ["d_model"] = 64, ["attn_layer_idx"] = new JsonArray(1) }))!.Key, Is.EqualTo("attn_layer_idx"));
        Assert.That(Assert.Throws<MambaConfigException>(() => MambaConfig.FromOriginalJson(new JsonObject { ["d_model"] = 64, ["ssm_cfg"] = new JsonObject { ["layer"] = "Mamba2" } }))!.Key, Is.EqualTo("ssm_cfg.layer"));
        Assert.That(Assert.Throws<MambaConfigException>(() => MambaConfig.FromOriginalJson(new JsonObject { ["d_model"] = 64, ["d_intermediate"] = 128 }))!.Key, Is.EqualTo("d_intermediate"));
    }

    [Test]
    public void MalformedJsonIsAFormatError()
    {
        var temp = Path.Combine(Path.GetTempPath(), $"mamba-bad-{Guid.NewGuid():N}.json");
        try
        {
            File.WriteAllText(temp, "{ \"hidden_size\": 64, ");
            var e = Assert.Throws<MambaFormatException>(() => MambaConfig.FromFile(temp))!;
            Assert.That(e.FilePath, Is.EqualTo(temp));
            File.WriteAllText(temp, "[1, 2]");
            Assert.Throws<MambaFormatException>(() => MambaConfig.FromFile(temp));
        }
        finally { File.Delete(temp); }
    }
}

/// <summary>Loading weights that disagree with the config: each gives a format error naming the tensor.</summary>
public class WeightLoadingTests
{
    private static string CopyTiny()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"mamba-model-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(Path.Combine(TestFixtures.Model("tiny"), "model")))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private static void Rewrite(string dir, Func<Dictionary<string, (float[] data, long[] shape)>, Dictionary<string, (float[] data, long[] shape)>> change)
    {
        var path = Path.Combine(dir, "model.safetensors");
        var tensors = new Dictionary<string, (float[] data, long[] shape)>();
        using (var file = SafeTensorsFile.Open(path))
            foreach (var (name, info) in file.Tensors)
                tensors[name] = (file.ReadFloat32(name), info.Shape);
        SafeTensorsWriter.WriteFloat32(path, change(tensors));
    }

    [Test]
    public void WrongShapeNamesTheTensor()
    {
        var dir = CopyTiny();
        try
        {
            Rewrite(dir, t => { t["backbone.layers.1.mixer.D"] = (new float[127], [127]); return t; });
            var e = Assert.Throws<MambaFormatException>(() => MambaForCausalLM.FromPretrained(dir))!;
            Assert.That(e.EntryName, Is.EqualTo("backbone.layers.1.mixer.D"));
            Assert.That(e.Message, Does.Contain("[127]").And.Contain("[128]"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void MissingAndUnexpectedTensorsAreNamed()
    {
        var dir = CopyTiny();
        try
        {
            Rewrite(dir, t => { t.Remove("backbone.layers.0.mixer.A_log"); return t; });
            Assert.That(Assert.Throws<MambaFormatException>(() => MambaForCausalLM.FromPretrained(dir))!.EntryName, Is.EqualTo("backbone.layers.0.mixer.A_log"));
            Rewrite(dir, t => { t["backbone.layers.0.mixer.A_log"] = (new float[128 * 16], [128, 16]); t["backbone.layers.5.norm.weight"] = (new float[64], [64]); return t; });
            Assert.That(Assert.Throws<MambaFormatException>(() => MambaForCausalLM.FromPretrained(dir))!.EntryName, Is.EqualTo("backbone.layers.5.norm.weight"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void UntiedConfigRequiresLmHead()
    {
        var dir = CopyTiny();
        try
        {
            var config = MambaConfig.FromFile(Path.Combine(dir, "config.json")) with { TieWordEmbeddings = false };
            config.Save(Path.Combine(dir, "config.json"));
            Assert.That(Assert.Throws<MambaFormatException>(() => MambaForCausalLM.FromPretrained(dir))!.EntryName, Is.EqualTo("lm_head.weight"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void MissingFilesGiveClearErrors()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"mamba-empty-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            Assert.That(Assert.Throws<MambaFormatException>(() => MambaForCausalLM.FromPretrained(dir))!.Message, Does.Contain("config.json"));
            File.Copy(Path.Combine(TestFixtures.Model("tiny"), "model", "config.json"), Path.Combine(dir, "config.json"));
            Assert.That(Assert.Throws<MambaFormatException>(() => MambaForCausalLM.FromPretrained(dir))!.Message, Does.Contain("no weights"));
        }
        finally { Directory.Delete(dir, true); }
        Assert.Throws<DirectoryNotFoundException>(() => MambaForCausalLM.FromPretrained(dir));
    }

    [Test]
    public void SavedWeightsReloadToTheSameModel()
    {
        var weights = MambaInitializer.Create(new MambaConfig { VocabSize = 64, HiddenSize = 16, NumHiddenLayers = 2, UseBias = true, TieWordEmbeddings = false }, seed: 9);
        var dir = Path.Combine(Path.GetTempPath(), $"mamba-saved-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            weights.Config.Save(Path.Combine(dir, "config.json"));
            SafeTensorsWriter.WriteFloat32(Path.Combine(dir, "model.safetensors"), weights.Enumerate().ToDictionary(t => t.Name, t => (t.Data, t.Shape)));
            using var a = new MambaForCausalLM(weights);
            using var b = MambaForCausalLM.FromPretrained(dir);
            var ids = new int[,] { { 1, 2, 3, 60 } };
            Assert.That(b.Forward(ids).Logits.Data, Is.EqualTo(a.Forward(ids).Logits.Data));
        }
        finally { Directory.Delete(dir, true); }
    }
}
