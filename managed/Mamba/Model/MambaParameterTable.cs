namespace Mamba.Model;

/// <summary>Which parameter of <c>MambaForCausalLM</c> (per block where <see cref="ParameterSpec.PerLayer"/>).</summary>
public enum ParameterId
{
    /// <summary><c>backbone.embeddings.weight</c> [V, d].</summary>
    Embeddings,
    /// <summary><c>backbone.layers.i.norm.weight</c> [d]: the block's RMSNorm.</summary>
    Norm,
    /// <summary><c>mixer.in_proj.weight</c> [2E, d]: rows 0..E−1 give x, E..2E−1 give z.</summary>
    InProjWeight,
    /// <summary><c>mixer.in_proj.bias</c> [2E] (only with use_bias).</summary>
    InProjBias,
    /// <summary><c>mixer.conv1d.weight</c> [E, 1, K] (stored), [E, K] on a backend; tap K−1 multiplies the current token.</summary>
    ConvWeight,
    /// <summary><c>mixer.conv1d.bias</c> [E] (only with use_conv_bias).</summary>
    ConvBias,
    /// <summary><c>mixer.x_proj.weight</c> [R+2N, E]: rows give δ̃, then B, then C.</summary>
    XProjWeight,
    /// <summary><c>mixer.dt_proj.weight</c> [E, R].</summary>
    DtProjWeight,
    /// <summary><c>mixer.dt_proj.bias</c> [E] (added inside the scan before softplus).</summary>
    DtProjBias,
    /// <summary><c>mixer.A_log</c> [E, N]; backends hold A = −exp(A_log).</summary>
    ALog,
    /// <summary><c>mixer.D</c> [E]: the skip gain.</summary>
    D,
    /// <summary><c>mixer.out_proj.weight</c> [d, E].</summary>
    OutProjWeight,
    /// <summary><c>mixer.out_proj.bias</c> [d] (only with use_bias).</summary>
    OutProjBias,
    /// <summary><c>backbone.norm_f.weight</c> [d]: the final RMSNorm.</summary>
    NormF,
    /// <summary><c>lm_head.weight</c> [V, d]; with tie_word_embeddings it is <see cref="Embeddings"/> (see <see cref="ParameterSpec.TiedTo"/>).</summary>
    LmHead,
}

/// <summary>How a parameter is held on a backend.</summary>
public enum ParameterForm
{
    /// <summary>A GEMM or lookup matrix: stored in the model's activation dtype (bf16/f16/f32).</summary>
    Matrix,
    /// <summary>A vector or small table read by the fused kernels: always float32.</summary>
    Vector,
    /// <summary>A_log, held as A = −exp(A_log) in float32 (computed from the fp32 value).</summary>
    NegExp,
}

/// <summary>One parameter of a block (per layer) or of the model (global).</summary>
/// <param name="Id">Which parameter.</param>
/// <param name="Name">The Hugging Face name; per-layer names are under <c>backbone.layers.{i}.</c>.</param>
/// <param name="PerLayer">True for block parameters.</param>
/// <param name="Form">How backends hold it.</param>
/// <param name="WeightDecay">Whether AdamW decays it (not A_log, D, norm weights and biases: mamba-ssm's and HF's practice).</param>
/// <param name="StoredShape">Its shape in a checkpoint for a config.</param>
/// <param name="DeviceShape">Its shape on a backend for a config.</param>
/// <param name="Present">Whether a config has it (optional biases, untied lm_head).</param>
/// <param name="TiedTo">With tie_word_embeddings, the parameter this one is (its gradient adds to that one's).</param>
public sealed record ParameterSpec(
    ParameterId Id,
    string Name,
    bool PerLayer,
    ParameterForm Form,
    bool WeightDecay,
    Func<MambaConfig, long[]> StoredShape,
    Func<MambaConfig, int[]> DeviceShape,
    Func<MambaConfig, bool> Present,
    ParameterId? TiedTo = null)
{
    /// <summary>The full Hugging Face name for <paramref name="layer"/> (ignored for global parameters).</summary>
    public string FullName(int layer) => PerLayer ? $"backbone.layers.{layer}.{Name}" : Name;
}

/// <summary>A parameter instance: which one, and its layer (−1 for global parameters).</summary>
public readonly record struct ParameterKey(ParameterId Id, int Layer = -1)
{
    /// <inheritdoc />
    public override string ToString() => Layer < 0 ? Id.ToString() : $"{Id}[{Layer}]";
}

/// <summary>One parameter of a concrete config: the spec, its layer, its name and shapes.</summary>
public sealed record ParameterEntry(ParameterSpec Spec, int Layer, string Name, long[] StoredShape, int[] DeviceShape)
{
    /// <summary>The key of this instance.</summary>
    public ParameterKey Key => new(Spec.Id, Spec.PerLayer ? Layer : -1);

    /// <summary>Number of elements.</summary>
    public long ElementCount => StoredShape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// The one list of <c>MambaForCausalLM</c>'s parameters. Loading, saving, initialisation, upload, disposal and the
/// fused decode plan iterate it (and so will gradients, optimizer state and adapters), so a parameter is described
/// here once: name, shape from the config, backend form, weight decay, presence and tying.
/// </summary>
public static class MambaParameterTable
{
    private static long[] L(params long[] v) => v;
    private static int[] I(params int[] v) => v;

    /// <summary>Every parameter, in checkpoint order (global ones first and last, the block's in between).</summary>
    public static IReadOnlyList<ParameterSpec> Specs { get; } =
    [
        new(ParameterId.Embeddings, "backbone.embeddings.weight", false, ParameterForm.Matrix, true,
            c => L(c.VocabSize, c.HiddenSize), c => I(c.VocabSize, c.HiddenSize), _ => true),
        new(ParameterId.Norm, "norm.weight", true, ParameterForm.Vector, false,
            c => L(c.HiddenSize), c => I(c.HiddenSize), _ => true),
        new(ParameterId.InProjWeight, "mixer.in_proj.weight", true, ParameterForm.Matrix, true,
            c => L(2L * c.IntermediateSize, c.HiddenSize), c => I(2 * c.IntermediateSize, c.HiddenSize), _ => true),
        new(ParameterId.InProjBias, "mixer.in_proj.bias", true, ParameterForm.Vector, false,
            c => L(2L * c.IntermediateSize), c => I(2 * c.IntermediateSize), c => c.UseBias),
        new(ParameterId.ConvWeight, "mixer.conv1d.weight", true, ParameterForm.Vector, true,
            c => L(c.IntermediateSize, 1, c.ConvKernel), c => I(c.IntermediateSize, c.ConvKernel), _ => true),
        new(ParameterId.ConvBias, "mixer.conv1d.bias", true, ParameterForm.Vector, false,
            c => L(c.IntermediateSize), c => I(c.IntermediateSize), c => c.UseConvBias),
        new(ParameterId.XProjWeight, "mixer.x_proj.weight", true, ParameterForm.Matrix, true,
            c => L(c.TimeStepRank + 2L * c.StateSize, c.IntermediateSize), c => I(c.TimeStepRank + 2 * c.StateSize, c.IntermediateSize), _ => true),
        new(ParameterId.DtProjWeight, "mixer.dt_proj.weight", true, ParameterForm.Matrix, true,
            c => L(c.IntermediateSize, c.TimeStepRank), c => I(c.IntermediateSize, c.TimeStepRank), _ => true),
        new(ParameterId.DtProjBias, "mixer.dt_proj.bias", true, ParameterForm.Vector, false,
            c => L(c.IntermediateSize), c => I(c.IntermediateSize), _ => true),
        new(ParameterId.ALog, "mixer.A_log", true, ParameterForm.NegExp, false,
            c => L(c.IntermediateSize, c.StateSize), c => I(c.IntermediateSize, c.StateSize), _ => true),
        new(ParameterId.D, "mixer.D", true, ParameterForm.Vector, false,
            c => L(c.IntermediateSize), c => I(c.IntermediateSize), _ => true),
        new(ParameterId.OutProjWeight, "mixer.out_proj.weight", true, ParameterForm.Matrix, true,
            c => L(c.HiddenSize, c.IntermediateSize), c => I(c.HiddenSize, c.IntermediateSize), _ => true),
        new(ParameterId.OutProjBias, "mixer.out_proj.bias", true, ParameterForm.Vector, false,
            c => L(c.HiddenSize), c => I(c.HiddenSize), c => c.UseBias),
        new(ParameterId.NormF, "backbone.norm_f.weight", false, ParameterForm.Vector, false,
            c => L(c.HiddenSize), c => I(c.HiddenSize), _ => true),
        new(ParameterId.LmHead, "lm_head.weight", false, ParameterForm.Matrix, true,
            c => L(c.VocabSize, c.HiddenSize), c => I(c.VocabSize, c.HiddenSize), c => !c.TieWordEmbeddings, TiedTo: ParameterId.Embeddings),
    ];

    private static readonly ParameterSpec[] ById = Specs.OrderBy(s => (int)s.Id).ToArray();

    /// <summary>The block's parameters, in checkpoint order.</summary>
    public static IReadOnlyList<ParameterSpec> LayerSpecs { get; } = Specs.Where(s => s.PerLayer).ToArray();

    /// <summary>The spec of <paramref name="id"/>.</summary>
    public static ParameterSpec Spec(ParameterId id) => ById[(int)id];

    /// <summary>
    /// The parameters <paramref name="config"/> has, in checkpoint order: embeddings, each block's, norm_f, and
    /// lm_head only when untied (a tied head is the embedding, not a second parameter).
    /// </summary>
    public static IEnumerable<ParameterEntry> Entries(MambaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        foreach (var spec in Specs)
        {
            if (!spec.PerLayer)
            {
                if (spec.Present(config)) yield return new ParameterEntry(spec, -1, spec.FullName(-1), spec.StoredShape(config), spec.DeviceShape(config));
                if (spec.Id == ParameterId.Embeddings)
                    foreach (var entry in LayerEntries(config)) yield return entry;
            }
        }
    }

    private static IEnumerable<ParameterEntry> LayerEntries(MambaConfig config)
    {
        for (int i = 0; i < config.NumHiddenLayers; i++)
            foreach (var spec in LayerSpecs)
                if (spec.Present(config))
                    yield return new ParameterEntry(spec, i, spec.FullName(i), spec.StoredShape(config), spec.DeviceShape(config));
    }

    /// <summary>
    /// The key whose storage holds <paramref name="key"/> for <paramref name="config"/>: a tied lm_head resolves to
    /// the embedding; every other key to itself.
    /// </summary>
    public static ParameterKey Resolve(MambaConfig config, ParameterKey key)
    {
        var spec = Spec(key.Id);
        return spec.TiedTo is { } target && !spec.Present(config) ? new ParameterKey(target) : key;
    }
}

/// <summary>
/// One value per parameter of a config (host arrays, device tensors, later gradients or optimizer moments), keyed by
/// <see cref="ParameterKey"/>. Filled from <see cref="MambaParameterTable.Entries"/>; a tied lm_head reads the embedding's.
/// </summary>
public sealed class ParameterStore<T> where T : class
{
    private readonly Dictionary<ParameterKey, T> _values = new();

    /// <summary>An empty store for <paramref name="config"/>.</summary>
    public ParameterStore(MambaConfig config) => Config = config ?? throw new ArgumentNullException(nameof(config));

    /// <summary>Fills one value per entry of <paramref name="config"/> from <paramref name="create"/>.</summary>
    public ParameterStore(MambaConfig config, Func<ParameterEntry, T> create) : this(config)
    {
        ArgumentNullException.ThrowIfNull(create);
        foreach (var entry in MambaParameterTable.Entries(config)) _values.Add(entry.Key, create(entry));
    }

    /// <summary>The config the store was made for.</summary>
    public MambaConfig Config { get; }

    /// <summary>The value of <paramref name="key"/> (a tied lm_head gives the embedding's); throws when the config has none.</summary>
    public T this[ParameterKey key] =>
        TryGet(key) ?? throw new KeyNotFoundException($"{key} is not a parameter of this config ({Config.Summary()})");

    /// <summary>The value of <paramref name="id"/> at <paramref name="layer"/>.</summary>
    public T this[ParameterId id, int layer = -1] => this[new ParameterKey(id, MambaParameterTable.Spec(id).PerLayer ? layer : -1)];

    /// <summary>The value, or null when the config does not have the parameter (an optional bias).</summary>
    public T? TryGet(ParameterKey key) =>
        _values.TryGetValue(MambaParameterTable.Resolve(Config, key), out var value) ? value : null;

    /// <summary>The value of <paramref name="id"/> at <paramref name="layer"/>, or null when absent.</summary>
    public T? TryGet(ParameterId id, int layer = -1) => TryGet(new ParameterKey(id, MambaParameterTable.Spec(id).PerLayer ? layer : -1));

    /// <summary>Sets the value of a parameter the config has.</summary>
    public void Set(ParameterKey key, T value)
    {
        ArgumentNullException.ThrowIfNull(value);
        _values[key] = value;
    }

    /// <summary>Every stored value with its key, in insertion (checkpoint) order; a tied lm_head is not listed.</summary>
    public IEnumerable<KeyValuePair<ParameterKey, T>> Items => _values;

    /// <summary>Number of stored values.</summary>
    public int Count => _values.Count;
}
