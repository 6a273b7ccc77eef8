using System.Text.Json;
using System.Text.Json.Nodes;
using Mamba.IO;
using Mamba.Model;

namespace Mamba.Training;

/// <summary>
/// Checkpoint folders: a Hugging Face model folder (config.json, model.safetensors in float32 from the master
/// weights, tokenizer.json, generation_config.json) that <c>MambaForCausalLM.FromPretrained</c> and transformers load,
/// plus <c>optimizer.safetensors</c> (per parameter name: <c>.master</c>, <c>.exp_avg</c>, <c>.exp_avg_sq</c>, float32)
/// and <c>trainer_state.json</c>.
/// </summary>
internal static class TrainerCheckpoint
{
    public const string OptimizerFile = "optimizer.safetensors";
    public const string StateFile = "trainer_state.json";

    /// <summary>The folder name of the checkpoint at <paramref name="step"/>.</summary>
    public static string FolderName(int step) => $"checkpoint-{step}";

    /// <summary>Writes the model folder files from the fp32 <paramref name="masters"/>.</summary>
    public static void SaveModel(string dir, MambaConfig config, ParameterStore<float[]> masters, string tokenizerPath)
    {
        Directory.CreateDirectory(dir);
        var extra = config.ExtraKeys.Where(kv => kv.Key != "mamba_dotnet_untrained").ToDictionary(kv => kv.Key, kv => kv.Value?.DeepClone());
        (config with { TorchDType = "float32", ExtraKeys = extra }).Save(Path.Combine(dir, "config.json"));
        var weights = new MambaWeights(masters);
        SafeTensorsWriter.WriteFloat32(Path.Combine(dir, "model.safetensors"),
            weights.Enumerate().ToDictionary(t => t.Name, t => (t.Data, t.Shape)), "F32",
            new Dictionary<string, string> { ["format"] = "pt" });
        var generation = new JsonObject
        {
            ["bos_token_id"] = config.BosTokenId,
            ["eos_token_id"] = config.EosTokenId,
            ["pad_token_id"] = config.PadTokenId,
        };
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), generation.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        var tokenizerTarget = Path.Combine(dir, "tokenizer.json");
        if (!string.Equals(Path.GetFullPath(tokenizerPath), Path.GetFullPath(tokenizerTarget), StringComparison.Ordinal))
            File.Copy(tokenizerPath, tokenizerTarget, overwrite: true);
    }

    /// <summary>Writes the optimizer tensors (master, m, v per parameter) as float32 safetensors.</summary>
    public static void SaveOptimizer(string path, MambaConfig config, ParameterStore<float[]> masters, ParameterStore<float[]> m, ParameterStore<float[]> v)
    {
        var tensors = new Dictionary<string, (float[] data, long[] shape)>();
        foreach (var entry in MambaParameterTable.Entries(config))
        {
            tensors[entry.Name + ".master"] = (masters[entry.Key], entry.StoredShape);
            tensors[entry.Name + ".exp_avg"] = (m[entry.Key], entry.StoredShape);
            tensors[entry.Name + ".exp_avg_sq"] = (v[entry.Key], entry.StoredShape);
        }
        SafeTensorsWriter.WriteFloat32(path, tensors, "F32");
    }

    /// <summary>Reads optimizer tensors written by <see cref="SaveOptimizer"/>, checking names and shapes against <paramref name="config"/>.</summary>
    public static (ParameterStore<float[]> Masters, ParameterStore<float[]> M, ParameterStore<float[]> V) LoadOptimizer(string path, MambaConfig config)
    {
        if (!File.Exists(path)) throw new MambaFormatException("the checkpoint has no optimizer state", path);
        using var file = SafeTensorsFile.Open(path);
        float[] Read(ParameterEntry entry, string suffix)
        {
            var name = entry.Name + suffix;
            if (!file.Contains(name)) throw new MambaFormatException("missing tensor (the checkpoint is of another model shape?)", path, name);
            var info = file.GetInfo(name);
            if (info.DType != "F32" || !info.Shape.SequenceEqual(entry.StoredShape))
                throw new MambaFormatException($"is {info.DType} [{string.Join(", ", info.Shape)}], expected F32 [{string.Join(", ", entry.StoredShape)}]", path, name);
            return file.ReadFloat32(name);
        }
        return (new ParameterStore<float[]>(config, e => Read(e, ".master")),
            new ParameterStore<float[]>(config, e => Read(e, ".exp_avg")),
            new ParameterStore<float[]>(config, e => Read(e, ".exp_avg_sq")));
    }
}
