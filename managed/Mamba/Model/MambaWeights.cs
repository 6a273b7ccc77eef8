namespace Mamba.Model;

/// <summary>The float32 host copy of one block's parameters (HF names under backbone.layers.i.).</summary>
public sealed class MambaLayerWeights
{
    /// <summary>The block RMSNorm weight [d].</summary>
    public required float[] NormWeight { get; init; }
    /// <summary>in_proj weight [2E, d]: rows 0..E−1 give x, E..2E−1 give z.</summary>
    public required float[] InProjWeight { get; init; }
    /// <summary>in_proj bias [2E] (only with use_bias).</summary>
    public float[]? InProjBias { get; init; }
    /// <summary>Depthwise conv weight [E, 1, K]; tap K−1 multiplies the current token.</summary>
    public required float[] ConvWeight { get; init; }
    /// <summary>Conv bias [E] (only with use_conv_bias).</summary>
    public float[]? ConvBias { get; init; }
    /// <summary>x_proj weight [R+2N, E]: rows give δ̃, then B, then C.</summary>
    public required float[] XProjWeight { get; init; }
    /// <summary>dt_proj weight [E, R].</summary>
    public required float[] DtProjWeight { get; init; }
    /// <summary>dt_proj bias [E] (added inside the scan before softplus).</summary>
    public required float[] DtProjBias { get; init; }
    /// <summary>A_log [E, N]; A = −exp(A_log).</summary>
    public required float[] ALog { get; init; }
    /// <summary>Skip gain D [E].</summary>
    public required float[] D { get; init; }
    /// <summary>out_proj weight [d, E].</summary>
    public required float[] OutProjWeight { get; init; }
    /// <summary>out_proj bias [d] (only with use_bias).</summary>
    public float[]? OutProjBias { get; init; }
}

/// <summary>
/// Every parameter of a <c>MambaForCausalLM</c> as float32 host arrays, checked against the config:
/// names (HF and original state-spaces layouts), shapes, tied or untied lm_head.
/// </summary>
public sealed class MambaWeights
{
    /// <summary>The configuration the tensors were checked against.</summary>
    public required MambaConfig Config { get; init; }
    /// <summary>Embedding table [V, d] (also the lm_head when tied).</summary>
    public required float[] Embeddings { get; init; }
    /// <summary>One entry per block.</summary>
    public required IReadOnlyList<MambaLayerWeights> Layers { get; init; }
    /// <summary>The final RMSNorm weight [d].</summary>
    public required float[] NormF { get; init; }
    /// <summary>The untied lm_head [V, d]; null when tied to <see cref="Embeddings"/>.</summary>
    public float[]? LmHead { get; init; }
    /// <summary>Storage dtype of the checkpoint's float tensors ("F32", "BF16", "F16").</summary>
    public string StoredDType { get; init; } = "F32";

    /// <summary>Number of parameters (the tied head counted once).</summary>
    public long ParameterCount =>
        Embeddings.LongLength + NormF.LongLength + (LmHead?.LongLength ?? 0) + Layers.Sum(l =>
            l.NormWeight.LongLength + l.InProjWeight.LongLength + (l.InProjBias?.LongLength ?? 0) + l.ConvWeight.LongLength +
            (l.ConvBias?.LongLength ?? 0) + l.XProjWeight.LongLength + l.DtProjWeight.LongLength + l.DtProjBias.LongLength +
            l.ALog.LongLength + l.D.LongLength + l.OutProjWeight.LongLength + (l.OutProjBias?.LongLength ?? 0));

    /// <summary>The expected HF name → shape of every parameter for <paramref name="config"/> (lm_head only when untied).</summary>
    public static IReadOnlyDictionary<string, long[]> ExpectedShapes(MambaConfig config)
    {
        long d = config.HiddenSize, e = config.IntermediateSize, n = config.StateSize, r = config.TimeStepRank, k = config.ConvKernel, v = config.VocabSize;
        var shapes = new Dictionary<string, long[]> { ["backbone.embeddings.weight"] = [v, d], ["backbone.norm_f.weight"] = [d] };
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            var p = $"backbone.layers.{i}.";
            shapes[p + "norm.weight"] = [d];
            shapes[p + "mixer.in_proj.weight"] = [2 * e, d];
            if (config.UseBias) shapes[p + "mixer.in_proj.bias"] = [2 * e];
            shapes[p + "mixer.conv1d.weight"] = [e, 1, k];
            if (config.UseConvBias) shapes[p + "mixer.conv1d.bias"] = [e];
            shapes[p + "mixer.x_proj.weight"] = [r + 2 * n, e];
            shapes[p + "mixer.dt_proj.weight"] = [e, r];
            shapes[p + "mixer.dt_proj.bias"] = [e];
            shapes[p + "mixer.A_log"] = [e, n];
            shapes[p + "mixer.D"] = [e];
            shapes[p + "mixer.out_proj.weight"] = [d, e];
            if (config.UseBias) shapes[p + "mixer.out_proj.bias"] = [d];
        }
        if (!config.TieWordEmbeddings) shapes["lm_head.weight"] = [v, d];
        return shapes;
    }

    /// <summary>
    /// Reads and checks every parameter. Accepts HF names, the original <c>backbone.embedding.weight</c>,
    /// and <c>MambaModel</c> files without the <c>backbone.</c> prefix. A tied model ignores a stored
    /// lm_head copy; an untied one requires it. Unknown, missing or mis-shaped tensors throw
    /// <see cref="MambaFormatException"/> naming the tensor.
    /// </summary>
    public static MambaWeights Load(MambaConfig config, ICheckpointSource source)
    {
        var expected = ExpectedShapes(config);
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
        float[] Read(string name) => source.ReadFloat32(stored[name]);
        float[]? ReadOptional(string name) => stored.ContainsKey(name) ? Read(name) : null;
        var layers = new MambaLayerWeights[config.NumHiddenLayers];
        for (int i = 0; i < layers.Length; i++)
        {
            var p = $"backbone.layers.{i}.";
            layers[i] = new MambaLayerWeights
            {
                NormWeight = Read(p + "norm.weight"),
                InProjWeight = Read(p + "mixer.in_proj.weight"),
                InProjBias = ReadOptional(p + "mixer.in_proj.bias"),
                ConvWeight = Read(p + "mixer.conv1d.weight"),
                ConvBias = ReadOptional(p + "mixer.conv1d.bias"),
                XProjWeight = Read(p + "mixer.x_proj.weight"),
                DtProjWeight = Read(p + "mixer.dt_proj.weight"),
                DtProjBias = Read(p + "mixer.dt_proj.bias"),
                ALog = Read(p + "mixer.A_log"),
                D = Read(p + "mixer.D"),
                OutProjWeight = Read(p + "mixer.out_proj.weight"),
                OutProjBias = ReadOptional(p + "mixer.out_proj.bias"),
            };
        }
        var dtypes = stored.Values.Select(source.GetDType).GroupBy(x => x).OrderByDescending(g => g.Count()).First().Key;
        return new MambaWeights
        {
            Config = config,
            Embeddings = Read("backbone.embeddings.weight"),
            Layers = layers,
            NormF = Read("backbone.norm_f.weight"),
            LmHead = config.TieWordEmbeddings ? null : Read("lm_head.weight"),
            StoredDType = dtypes,
        };
    }

    /// <summary>Every parameter under its HF name (the tied head omitted), e.g. to save a checkpoint.</summary>
    public IEnumerable<(string Name, float[] Data, long[] Shape)> Enumerate()
    {
        var shapes = ExpectedShapes(Config);
        (string, float[], long[]) Item(string name, float[] data) => (name, data, shapes[name]);
        yield return Item("backbone.embeddings.weight", Embeddings);
        for (int i = 0; i < Layers.Count; i++)
        {
            var l = Layers[i];
            var p = $"backbone.layers.{i}.";
            yield return Item(p + "norm.weight", l.NormWeight);
            yield return Item(p + "mixer.in_proj.weight", l.InProjWeight);
            if (l.InProjBias is not null) yield return Item(p + "mixer.in_proj.bias", l.InProjBias);
            yield return Item(p + "mixer.conv1d.weight", l.ConvWeight);
            if (l.ConvBias is not null) yield return Item(p + "mixer.conv1d.bias", l.ConvBias);
            yield return Item(p + "mixer.x_proj.weight", l.XProjWeight);
            yield return Item(p + "mixer.dt_proj.weight", l.DtProjWeight);
            yield return Item(p + "mixer.dt_proj.bias", l.DtProjBias);
            yield return Item(p + "mixer.A_log", l.ALog);
            yield return Item(p + "mixer.D", l.D);
            yield return Item(p + "mixer.out_proj.weight", l.OutProjWeight);
            if (l.OutProjBias is not null) yield return Item(p + "mixer.out_proj.bias", l.OutProjBias);
        }
        yield return Item("backbone.norm_f.weight", NormF);
        if (LmHead is not null) yield return Item("lm_head.weight", LmHead);
    }
}
