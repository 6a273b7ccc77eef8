using Mamba.IO;

namespace Mamba.Model;

/// <summary>Finds and opens the weights of a model folder in any supported layout.</summary>
public static class CheckpointLoader
{
    /// <summary>
    /// Reads <c>config.json</c> (HF or original format) and the weights: <c>model.safetensors</c>,
    /// sharded <c>model.safetensors.index.json</c>, or the original <c>pytorch_model.bin</c>.
    /// </summary>
    public static MambaWeights LoadWeights(string directory)
    {
        if (!System.IO.Directory.Exists(directory))
            throw new DirectoryNotFoundException($"model folder '{directory}' does not exist");
        var configPath = Path.Combine(directory, "config.json");
        if (!File.Exists(configPath))
            throw new MambaFormatException("the model folder has no config.json", configPath);
        var config = MambaConfig.FromFile(configPath, out bool originalFormat);
        using var source = OpenSource(directory);
        CheckSizesAgainstWeights(config, source, configPath, originalFormat);
        return MambaWeights.Load(config, source);
    }

    /// <summary>
    /// Compares the sizes of the config with what the weights hold before anything is allocated for them: the number
    /// of layers (the highest <c>layers.N.</c> index holding an in_proj, + 1), vocab_size and hidden_size (the embedding's shape),
    /// and state_size, expand, conv_kernel and time_step_rank (layer 0's A_log, conv1d and dt_proj shapes). A config that
    /// disagrees throws <see cref="MambaConfigException"/> naming its key (in the file's own spelling), so a config
    /// claiming millions of layers fails at once instead of after enumerating them.
    /// </summary>
    internal static void CheckSizesAgainstWeights(MambaConfig config, ICheckpointSource source, string configPath, bool originalFormat)
    {
        long[]? Shape(params string[] names)
        {
            foreach (var name in names)
                foreach (var candidate in new[] { "backbone." + name, name })
                    if (source.TensorNames.Contains(candidate)) return source.GetShape(candidate);
            return null;
        }
        MambaConfigException Mismatch(string hfKey, long configValue, long held, string what) =>
            new(MambaConfig.KeyName(hfKey, originalFormat), $"the config says {configValue}, but the weights ({source.SourcePath}) hold {held} ({what})", configPath);

        int layers = 0;
        foreach (var name in source.TensorNames)
        {
            var rest = name.StartsWith("backbone.", StringComparison.Ordinal) ? name.AsSpan("backbone.".Length) : name.AsSpan();
            if (!rest.StartsWith("layers.", StringComparison.Ordinal)) continue;
            rest = rest["layers.".Length..];
            int dot = rest.IndexOf('.');
            // A layer counts when it holds its in_proj (a stray tensor of another layer is reported by MambaWeights as unexpected).
            if (dot > 0 && rest[dot..].SequenceEqual(".mixer.in_proj.weight") && int.TryParse(rest[..dot], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int index)
                && index < int.MaxValue)
                layers = Math.Max(layers, index + 1);
        }
        if (layers > 0 && layers != config.NumHiddenLayers)
            throw Mismatch("num_hidden_layers", config.NumHiddenLayers, layers, "layers");
        if (Shape("embeddings.weight", "embedding.weight") is [var rows, var width])
        {
            if (rows != config.VocabSize) throw Mismatch("vocab_size", config.VocabSize, rows, "embedding rows");
            if (width != config.HiddenSize) throw Mismatch("hidden_size", config.HiddenSize, width, "embedding columns");
        }
        if (Shape("layers.0.mixer.A_log") is [var inner, var state])
        {
            if (inner != config.IntermediateSize) throw Mismatch("expand", config.Expand, inner / Math.Max(1, config.HiddenSize), $"A_log has {inner} channels = expand × hidden_size");
            if (state != config.StateSize) throw Mismatch("state_size", config.StateSize, state, "A_log columns");
        }
        if (Shape("layers.0.mixer.conv1d.weight") is [_, _, var kernel] && kernel != config.ConvKernel)
            throw Mismatch("conv_kernel", config.ConvKernel, kernel, "conv1d taps");
        if (Shape("layers.0.mixer.dt_proj.weight") is [_, var rank] && rank != config.TimeStepRank)
            throw Mismatch("time_step_rank", config.TimeStepRank, rank, "dt_proj columns");
    }

    /// <summary>Opens the tensors of a model folder (safetensors preferred over pytorch_model.bin).</summary>
    public static ICheckpointSource OpenSource(string directory)
    {
        if (File.Exists(Path.Combine(directory, "model.safetensors.index.json")) || File.Exists(Path.Combine(directory, "model.safetensors")))
            return new SafeTensorsSource(SafeTensorsCheckpoint.Open(directory));
        var bin = Path.Combine(directory, "pytorch_model.bin");
        if (File.Exists(bin))
            return new TorchSource(TorchCheckpoint.Open(bin));
        throw new MambaFormatException("no weights found: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin", directory);
    }

    private sealed class SafeTensorsSource(SafeTensorsCheckpoint checkpoint) : ICheckpointSource
    {
        public string SourcePath => checkpoint.SourcePath;
        public IReadOnlyCollection<string> TensorNames => checkpoint.TensorNames;
        public long[] GetShape(string name) => checkpoint.GetInfo(name).Shape;
        public string GetDType(string name) => checkpoint.GetInfo(name).DType;
        public float[] ReadFloat32(string name) => checkpoint.ReadFloat32(name);
        public void Dispose() => checkpoint.Dispose();
    }

    private sealed class TorchSource(TorchCheckpoint checkpoint) : ICheckpointSource
    {
        public string SourcePath => checkpoint.FilePath;
        public IReadOnlyCollection<string> TensorNames => checkpoint.TensorNames;
        public long[] GetShape(string name) => checkpoint.GetShape(name);
        public string GetDType(string name) => checkpoint.GetDType(name);
        public float[] ReadFloat32(string name) => checkpoint.ReadFloat32(name);
        public void Dispose() => checkpoint.Dispose();
    }
}
