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

    /// <summary>Writes the optimizer tensors (master, m, v per trainable tensor) as float32 safetensors.</summary>
    public static void SaveOptimizer(string path, IReadOnlyList<TrainableTensor> tensors, IReadOnlyList<float[]> masters, IReadOnlyList<float[]> m, IReadOnlyList<float[]> v)
    {
        var data = new Dictionary<string, (float[] data, long[] shape)>();
        for (int i = 0; i < tensors.Count; i++)
        {
            data[tensors[i].Name + ".master"] = (masters[i], tensors[i].SavedShape);
            data[tensors[i].Name + ".exp_avg"] = (m[i], tensors[i].SavedShape);
            data[tensors[i].Name + ".exp_avg_sq"] = (v[i], tensors[i].SavedShape);
        }
        SafeTensorsWriter.WriteFloat32(path, data, "F32");
    }

    /// <summary>Reads optimizer tensors written by <see cref="SaveOptimizer"/>, checking names and shapes against <paramref name="tensors"/>.</summary>
    public static (float[][] Masters, float[][] M, float[][] V) LoadOptimizer(string path, IReadOnlyList<TrainableTensor> tensors)
    {
        if (!File.Exists(path)) throw new MambaFormatException("the checkpoint has no optimizer state", path);
        using var file = SafeTensorsFile.Open(path);
        float[] Read(TrainableTensor tensor, string suffix)
        {
            var name = tensor.Name + suffix;
            if (!file.Contains(name)) throw new MambaFormatException("missing tensor (the checkpoint is of another model or adapter shape?)", path, name);
            var info = file.GetInfo(name);
            if (info.DType != "F32" || !info.Shape.SequenceEqual(tensor.SavedShape))
                throw new MambaFormatException($"is {info.DType} [{string.Join(", ", info.Shape)}], expected F32 [{string.Join(", ", tensor.SavedShape)}]", path, name);
            return file.ReadFloat32(name);
        }
        return (tensors.Select(t => Read(t, ".master")).ToArray(), tensors.Select(t => Read(t, ".exp_avg")).ToArray(),
            tensors.Select(t => Read(t, ".exp_avg_sq")).ToArray());
    }
}
