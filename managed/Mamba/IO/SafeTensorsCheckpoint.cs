using System.Text.Json;

namespace Mamba.IO;

/// <summary>
/// A Hugging Face safetensors checkpoint folder: either a single <c>model.safetensors</c> or shards listed by
/// <c>model.safetensors.index.json</c> (its <c>weight_map</c> maps each tensor name to a shard file name).
/// All shards are opened and validated up front.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    /// <summary>The single-file checkpoint name.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>The sharded checkpoint index name.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private const long MaxIndexBytes = 64L << 20;

    private readonly List<SafeTensorsFile> _files;
    private readonly Dictionary<string, SafeTensorsFile> _byTensor;

    /// <summary>The folder the checkpoint was opened from.</summary>
    public string Directory { get; }

    /// <summary>The index file when the checkpoint is sharded, else the single safetensors file.</summary>
    public string SourcePath { get; }

    /// <summary>True when the checkpoint came from an index of shards.</summary>
    public bool IsSharded { get; }

    /// <summary>The opened files (one, or one per shard).</summary>
    public IReadOnlyList<SafeTensorsFile> Files => _files;

    /// <summary>Every tensor name of the checkpoint.</summary>
    public IReadOnlyCollection<string> TensorNames => _byTensor.Keys;

    /// <summary>The dtype most floating-point tensors are stored in (F32, BF16, F16, F64); "F32" when there are none.</summary>
    public string StoredDType { get; }

    private SafeTensorsCheckpoint(string directory, string sourcePath, bool sharded, List<SafeTensorsFile> files, Dictionary<string, SafeTensorsFile> byTensor)
    {
        Directory = directory;
        SourcePath = sourcePath;
        IsSharded = sharded;
        _files = files;
        _byTensor = byTensor;
        StoredDType = byTensor
            .Select(kv => kv.Value.Tensors[kv.Key].DType)
            .Where(d => d is "F32" or "BF16" or "F16" or "F64")
            .GroupBy(d => d)
            .OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => g.Key)
            .FirstOrDefault() ?? "F32";
    }

    /// <summary>
    /// Opens the checkpoint in <paramref name="directory"/> (the index when present, else <c>model.safetensors</c>).
    /// A path to a single <c>.safetensors</c> file is accepted too.
    /// </summary>
    /// <exception cref="MambaFormatException">Missing files, a malformed index or shard, or an index that disagrees with its shards.</exception>
    public static SafeTensorsCheckpoint Open(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (File.Exists(directory))
        {
            var single = SafeTensorsFile.Open(directory);
            return FromSingle(Path.GetDirectoryName(Path.GetFullPath(directory)) ?? ".", single);
        }
        if (!System.IO.Directory.Exists(directory))
            throw new MambaFormatException("checkpoint folder does not exist", directory);

        string indexPath = Path.Combine(directory, IndexFileName);
        if (File.Exists(indexPath))
            return OpenSharded(directory, indexPath);

        string singlePath = Path.Combine(directory, SingleFileName);
        if (!File.Exists(singlePath))
            throw new MambaFormatException($"folder holds neither {SingleFileName} nor {IndexFileName}", directory);
        return FromSingle(directory, SafeTensorsFile.Open(singlePath));
    }

    private static SafeTensorsCheckpoint FromSingle(string directory, SafeTensorsFile file)
    {
        var byTensor = file.Tensors.Keys.ToDictionary(k => k, _ => file, StringComparer.Ordinal);
        return new SafeTensorsCheckpoint(directory, file.FilePath, false, [file], byTensor);
    }

    private static SafeTensorsCheckpoint OpenSharded(string directory, string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        string fullDir = Path.GetFullPath(directory);

        var files = new List<SafeTensorsFile>();
        try
        {
            var shards = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
            var byTensor = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
            foreach (var (tensor, shard) in weightMap)
            {
                if (!shards.TryGetValue(shard, out var file))
                {
                    string shardPath = ValidateShardName(shard, fullDir, indexPath, tensor);
                    if (!File.Exists(shardPath))
                        throw new MambaFormatException($"shard '{shard}' listed in the index does not exist", indexPath, tensor);
                    file = SafeTensorsFile.Open(shardPath);
                    files.Add(file);
                    shards.Add(shard, file);
                }
                if (!file.Contains(tensor))
                    throw new MambaFormatException($"the index places the tensor in shard '{shard}', which does not hold it", indexPath, tensor);
                byTensor.Add(tensor, file);
            }
            // Tensors present in a shard but absent from the index are ignored: the index defines the checkpoint.
            return new SafeTensorsCheckpoint(directory, indexPath, true, files, byTensor);
        }
        catch
        {
            foreach (var f in files)
                f.Dispose();
            throw;
        }
    }

    private static List<(string Tensor, string Shard)> ReadWeightMap(string indexPath)
    {
        // A regular file of at most 64 MiB (a symbolic link followed; a FIFO or device refused unopened).
        byte[] bytes = JsonFile.ReadBounded(indexPath, MaxIndexBytes, "index");

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new MambaFormatException($"index is not valid JSON: {e.Message}", indexPath, null, e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new MambaFormatException("index must be a JSON object", indexPath);
            JsonFile.CheckTree(doc.RootElement, (entry, message) => new MambaFormatException(message, indexPath, entry.Length == 0 ? null : entry), duplicates: false);
            if (!doc.RootElement.TryGetProperty("weight_map", out var map))
                throw new MambaFormatException("index has no 'weight_map'", indexPath, "weight_map");
            if (map.ValueKind != JsonValueKind.Object)
                throw new MambaFormatException($"'weight_map' must be an object, not {map.ValueKind}", indexPath, "weight_map");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var result = new List<(string, string)>();
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new MambaFormatException($"weight_map value must be a shard file name, not {p.Value.ValueKind}", indexPath, p.Name);
                if (!seen.Add(p.Name))
                    throw new MambaFormatException("tensor is listed twice in weight_map", indexPath, p.Name);
                result.Add((p.Name, p.Value.GetString()!));
            }
            if (result.Count == 0)
                throw new MambaFormatException("weight_map is empty", indexPath, "weight_map");
            return result;
        }
    }

    /// <summary>A shard must be a plain file name inside the folder: no separators, no "..", no rooted path.</summary>
    private static string ValidateShardName(string shard, string fullDir, string indexPath, string tensor)
    {
        bool plain = shard.Length > 0 && shard.Length <= 255
            && shard != "." && shard != ".."
            && shard.IndexOfAny(['/', '\\', ':', '\0']) < 0
            && shard.IndexOfAny(Path.GetInvalidFileNameChars()) < 0
            && !Path.IsPathRooted(shard)
            && Path.GetFileName(shard) == shard;
        string full = plain ? Path.GetFullPath(Path.Combine(fullDir, shard)) : "";
        if (!plain || !string.Equals(Path.GetDirectoryName(full), Path.TrimEndingDirectorySeparator(fullDir), StringComparison.Ordinal))
            throw new MambaFormatException($"shard name '{shard}' is not a plain file name inside the checkpoint folder", indexPath, tensor);
        return full;
    }

    /// <summary>True when the checkpoint holds <paramref name="name"/>.</summary>
    public bool Contains(string name) => _byTensor.ContainsKey(name);

    /// <summary>The header entry of <paramref name="name"/> (offsets relative to its shard's data section).</summary>
    /// <exception cref="MambaFormatException">No such tensor.</exception>
    public SafeTensorInfo GetInfo(string name) => FileOf(name).Tensors[name];

    /// <summary>The file (shard) holding <paramref name="name"/>.</summary>
    /// <exception cref="MambaFormatException">No such tensor.</exception>
    public SafeTensorsFile FileOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!_byTensor.TryGetValue(name, out var file))
            throw new MambaFormatException("no such tensor in the checkpoint", SourcePath, name);
        return file;
    }

    /// <summary>Reads a F32/F16/BF16 tensor as float32.</summary>
    /// <exception cref="MambaFormatException">No such tensor, or it is not a float tensor.</exception>
    public float[] ReadFloat32(string name) => FileOf(name).ReadFloat32(name);

    /// <summary>Reads a F32/F16/BF16 tensor as float32 into <paramref name="destination"/> (length = element count).</summary>
    public void ReadFloat32(string name, Span<float> destination) => FileOf(name).ReadFloat32(name, destination);

    /// <summary>Reads an I64/I32 tensor as int64.</summary>
    public long[] ReadInt64(string name) => FileOf(name).ReadInt64(name);

    /// <summary>Unmaps every file.</summary>
    public void Dispose()
    {
        foreach (var f in _files)
            f.Dispose();
    }
}
