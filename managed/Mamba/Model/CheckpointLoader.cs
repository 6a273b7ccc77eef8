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
        var config = MambaConfig.FromFile(configPath);
        using var source = OpenSource(directory);
        return MambaWeights.Load(config, source);
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
