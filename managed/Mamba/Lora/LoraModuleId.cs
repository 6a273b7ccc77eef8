using System.Globalization;

namespace Mamba.Lora;

/// <summary>
/// One adapted module: a <see cref="LoraTarget"/> and, for the per-layer projections, the layer index
/// (<see cref="Layer"/> is -1 for <see cref="LoraTarget.Embeddings"/>).
/// </summary>
public readonly record struct LoraModuleId
{
    /// <summary>The kind of module.</summary>
    public LoraTarget Target { get; }

    // 0 for the embedding, so that default(LoraModuleId) equals Embeddings.
    private readonly int _layer;

    /// <summary>The layer index for the mixer projections; -1 for the embedding.</summary>
    public int Layer => Target == LoraTarget.Embeddings ? -1 : _layer;

    private LoraModuleId(LoraTarget target, int layer)
    {
        Target = target;
        _layer = layer;
    }

    /// <summary>The embedding module <c>backbone.embeddings</c> (also <c>default(LoraModuleId)</c>).</summary>
    public static LoraModuleId Embeddings { get; } = new(LoraTarget.Embeddings, 0);

    /// <summary>A mixer projection of layer <paramref name="layer"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="target"/> is <see cref="LoraTarget.Embeddings"/> or not a defined value.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="layer"/> is negative.</exception>
    public static LoraModuleId ForLayer(LoraTarget target, int layer)
    {
        if (target is not (LoraTarget.InProj or LoraTarget.XProj or LoraTarget.DtProj or LoraTarget.OutProj))
            throw new ArgumentException($"{target} is not a per-layer projection", nameof(target));
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        return new LoraModuleId(target, layer);
    }

    /// <summary>True for the embedding module.</summary>
    public bool IsEmbedding => Target == LoraTarget.Embeddings;

    /// <summary>The module's attribute name as PEFT's <c>target_modules</c> spells it: embeddings, in_proj, x_proj, dt_proj, out_proj.</summary>
    public string ShortName => ShortNameOf(Target);

    /// <summary>The module path in transformers' <c>MambaForCausalLM</c>, e.g. <c>backbone.layers.0.mixer.in_proj</c>.</summary>
    public string ModulePath => IsEmbedding
        ? "backbone.embeddings"
        : string.Create(CultureInfo.InvariantCulture, $"backbone.layers.{Layer}.mixer.{ShortName}");

    /// <summary>The key of the A matrix in PEFT's <c>adapter_model.safetensors</c>.</summary>
    public string PeftKeyA => IsEmbedding ? $"{PeftPrefix}{ModulePath}.lora_embedding_A" : $"{PeftPrefix}{ModulePath}.lora_A.weight";

    /// <summary>The key of the B matrix in PEFT's <c>adapter_model.safetensors</c>.</summary>
    public string PeftKeyB => IsEmbedding ? $"{PeftPrefix}{ModulePath}.lora_embedding_B" : $"{PeftPrefix}{ModulePath}.lora_B.weight";

    /// <summary>The prefix PEFT puts before module paths in saved adapters (<c>PeftModelForCausalLM.base_model.model</c>).</summary>
    public const string PeftPrefix = "base_model.model.";

    /// <summary>The <c>target_modules</c> spelling of <paramref name="target"/>.</summary>
    public static string ShortNameOf(LoraTarget target) => target switch
    {
        LoraTarget.Embeddings => "embeddings",
        LoraTarget.InProj => "in_proj",
        LoraTarget.XProj => "x_proj",
        LoraTarget.DtProj => "dt_proj",
        LoraTarget.OutProj => "out_proj",
        _ => throw new ArgumentOutOfRangeException(nameof(target), target, "not a LoRA target"),
    };

    /// <summary>
    /// Parses a key of PEFT's <c>adapter_model.safetensors</c> (for example
    /// <c>base_model.model.backbone.layers.3.mixer.x_proj.lora_B.weight</c>).
    /// </summary>
    /// <param name="key">The tensor name.</param>
    /// <param name="id">The module the key belongs to.</param>
    /// <param name="isA">True for the A matrix, false for B.</param>
    /// <returns>False when the key is not a LoRA A/B tensor of a supported Mamba module.</returns>
    public static bool TryParsePeftKey(string key, out LoraModuleId id, out bool isA)
    {
        ArgumentNullException.ThrowIfNull(key);
        id = default;
        isA = false;
        if (!key.StartsWith(PeftPrefix, StringComparison.Ordinal))
            return false;
        var rest = key.AsSpan(PeftPrefix.Length);

        const string Embedding = "backbone.embeddings.lora_embedding_";
        if (rest.StartsWith(Embedding, StringComparison.Ordinal))
        {
            var ab = rest[Embedding.Length..];
            if (ab is not ("A" or "B"))
                return false;
            id = Embeddings;
            isA = ab is "A";
            return true;
        }

        const string Layers = "backbone.layers.";
        if (!rest.StartsWith(Layers, StringComparison.Ordinal))
            return false;
        rest = rest[Layers.Length..];
        int dot = rest.IndexOf('.');
        if (dot <= 0 || dot > 9)
            return false;
        var digits = rest[..dot];
        // Canonical decimal only (no sign, no leading zeros): the key must round-trip through PeftKeyA/PeftKeyB.
        if ((digits.Length > 1 && digits[0] == '0') || !int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out int layer))
            return false;
        rest = rest[(dot + 1)..];
        const string Mixer = "mixer.";
        if (!rest.StartsWith(Mixer, StringComparison.Ordinal))
            return false;
        rest = rest[Mixer.Length..];
        dot = rest.IndexOf('.');
        if (dot <= 0)
            return false;
        LoraTarget? target = rest[..dot] switch
        {
            "in_proj" => LoraTarget.InProj,
            "x_proj" => LoraTarget.XProj,
            "dt_proj" => LoraTarget.DtProj,
            "out_proj" => LoraTarget.OutProj,
            _ => null,
        };
        if (target is null)
            return false;
        var suffix = rest[(dot + 1)..];
        if (suffix is not ("lora_A.weight" or "lora_B.weight"))
            return false;
        id = new LoraModuleId(target.Value, layer);
        isA = suffix is "lora_A.weight";
        return true;
    }

    /// <inheritdoc />
    public override string ToString() => ModulePath;
}
