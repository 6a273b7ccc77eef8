namespace Mamba.Model;

/// <summary>
/// Every parameter of a <c>MambaForCausalLM</c> as float32 host arrays, checked against the config:
/// names (HF and original state-spaces layouts), shapes, tied or untied lm_head. Keyed by the
/// <see cref="MambaParameterTable"/> (<c>weights[ParameterId.InProjWeight, layer]</c>).
/// </summary>
public sealed class MambaWeights
{
    /// <summary>Wraps host arrays already keyed by the table; every parameter of the config must be there with its element count.</summary>
    public MambaWeights(ParameterStore<float[]> values, string storedDType = "F32")
    {
        ArgumentNullException.ThrowIfNull(values);
        foreach (var entry in MambaParameterTable.Entries(values.Config))
        {
            var data = values.TryGet(entry.Key) ?? throw new ArgumentException($"{entry.Name} is missing", nameof(values));
            if (data.LongLength != entry.ElementCount)
                throw new ArgumentException($"{entry.Name} holds {data.LongLength} values, [{string.Join(", ", entry.StoredShape)}] needs {entry.ElementCount}", nameof(values));
        }
        Values = values;
        StoredDType = storedDType;
    }

    /// <summary>The configuration the tensors were checked against.</summary>
    public MambaConfig Config => Values.Config;

    /// <summary>The arrays, one per parameter of the config (a tied lm_head reads the embedding).</summary>
    public ParameterStore<float[]> Values { get; }

    /// <summary>The array of <paramref name="id"/> (at <paramref name="layer"/> for block parameters); throws when the config has none.</summary>
    public float[] this[ParameterId id, int layer = -1] => Values[id, layer];

    /// <summary>Storage dtype of the checkpoint's float tensors ("F32", "BF16", "F16").</summary>
    public string StoredDType { get; }

    /// <summary>Number of parameters (the tied head counted once).</summary>
    public long ParameterCount => Values.Items.Sum(p => p.Value.LongLength);

    /// <summary>The expected HF name → shape of every parameter for <paramref name="config"/> (lm_head only when untied).</summary>
    public static IReadOnlyDictionary<string, long[]> ExpectedShapes(MambaConfig config) =>
        MambaParameterTable.Entries(config).ToDictionary(e => e.Name, e => e.StoredShape);

    /// <summary>
    /// Reads and checks every parameter. Accepts HF names, the original <c>backbone.embedding.weight</c>,
    /// and <c>MambaModel</c> files without the <c>backbone.</c> prefix. A tied model ignores a stored
    /// lm_head copy; an untied one requires it. Unknown, missing or mis-shaped tensors, and tensors holding NaN or ±∞,
    /// throw <see cref="MambaFormatException"/> naming the tensor.
    /// </summary>
    public static MambaWeights Load(MambaConfig config, ICheckpointSource source)
    {
        var entries = MambaParameterTable.Entries(config).ToList();
        var expected = entries.ToDictionary(e => e.Name, e => e.StoredShape);
        // Map each expected HF name to the name actually stored.
        var stored = new Dictionary<string, string>(StringComparer.Ordinal);
        var available = new HashSet<string>(source.TensorNames, StringComparer.Ordinal);
        bool noPrefix = !available.Any(n => n.StartsWith("backbone.", StringComparison.Ordinal)) && available.Count > 0;
        foreach (var name in available)
        {
            string canonical = name;
            if (noPrefix && name != "lm_head.weight") canonical = "backbone." + name;
            if (canonical == "backbone.embedding.weight") canonical = "backbone.embeddings.weight";
            if (canonical == "lm_head.weight" && config.TieWordEmbeddings) continue; // a copy of the tied embedding
            if (!expected.ContainsKey(canonical))
                throw new MambaFormatException($"unexpected tensor (not a parameter of this config: {config.Summary()})", source.SourcePath, name);
            if (!stored.TryAdd(canonical, name))
                throw new MambaFormatException($"tensor stored twice (as '{stored[canonical]}' and '{name}')", source.SourcePath, canonical);
        }
        foreach (var (name, shape) in expected)
        {
            if (!stored.TryGetValue(name, out var actual))
                throw new MambaFormatException($"missing tensor, expected shape [{string.Join(", ", shape)}]", source.SourcePath, name);
            var got = source.GetShape(actual);
            if (!got.SequenceEqual(shape))
                throw new MambaFormatException($"shape [{string.Join(", ", got)}] does not match the config, expected [{string.Join(", ", shape)}]", source.SourcePath, actual);
        }
        var values = new ParameterStore<float[]>(config);
        foreach (var entry in entries)
        {
            var data = source.ReadFloat32(stored[entry.Name]);
            // A NaN or ±∞ weight makes every logit NaN later; say so here, naming the tensor (issue 17).
            if (!System.Numerics.Tensors.TensorPrimitives.IsFiniteAll<float>(data))
            {
                int at = Array.FindIndex(data, v => !float.IsFinite(v));
                throw new MambaFormatException($"tensor holds a non-finite value ({data[at]} at flat index {at}): the weights are damaged", source.SourcePath, stored[entry.Name]);
            }
            values.Set(entry.Key, data);
        }
        var dtypes = stored.Values.Select(source.GetDType).GroupBy(x => x).OrderByDescending(g => g.Count()).First().Key;
        return new MambaWeights(values, dtypes);
    }

    /// <summary>Every parameter under its HF name (the tied head omitted), e.g. to save a checkpoint.</summary>
    public IEnumerable<(string Name, float[] Data, long[] Shape)> Enumerate() =>
        MambaParameterTable.Entries(Config).Select(e => (e.Name, Values[e.Key], e.StoredShape));
}
