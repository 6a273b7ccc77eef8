using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Mamba;

/// <summary>
/// The configuration of a Mamba (v1) language model, with the fields and defaults of Hugging Face
/// transformers' <c>MambaConfig</c> (5.17). Reads and writes HF <c>config.json</c> and reads the original
/// state-spaces (mamba_ssm) <c>config.json</c>. Unknown keys are kept (and written back) but unused;
/// a known key with a wrong type or an unsupported or inconsistent value throws
/// <see cref="MambaConfigException"/> naming the key.
/// </summary>
public sealed record MambaConfig
{
    /// <summary>Vocabulary rows of the embedding and lm_head (padded).</summary>
    public int VocabSize { get; init; } = 50280;
    /// <summary>Model width d.</summary>
    public int HiddenSize { get; init; } = 768;
    /// <summary>SSM state size N.</summary>
    public int StateSize { get; init; } = 16;
    /// <summary>Number of Mamba blocks.</summary>
    public int NumHiddenLayers { get; init; } = 32;
    /// <summary>ε of every RMSNorm.</summary>
    public double LayerNormEpsilon { get; init; } = 1e-5;
    /// <summary>Padding token id.</summary>
    public int? PadTokenId { get; init; } = 0;
    /// <summary>Beginning-of-sequence token id.</summary>
    public int? BosTokenId { get; init; } = 0;
    /// <summary>End-of-sequence token ids (HF allows an int or a list).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [0];
    /// <summary>Inner width multiplier: E = int(expand·d).</summary>
    public int Expand { get; init; } = 2;
    /// <summary>Causal conv width K.</summary>
    public int ConvKernel { get; init; } = 4;
    /// <summary>Bias on in_proj and out_proj.</summary>
    public bool UseBias { get; init; }
    /// <summary>Bias on conv1d.</summary>
    public bool UseConvBias { get; init; } = true;
    /// <summary>Activation after the conv; only "silu" is supported.</summary>
    public string HiddenAct { get; init; } = "silu";
    /// <summary>σ of the normal init of Linear, Conv1d and Embedding weights.</summary>
    public double InitializerRange { get; init; } = 0.1;
    /// <summary>Keep the residual stream in float32.</summary>
    public bool ResidualInFp32 { get; init; } = true;
    /// <summary>Δ rank as written in the file; null means "auto" (ceil(d/16)).</summary>
    public int? TimeStepRankValue { get; init; }
    /// <summary>dt_proj init scale.</summary>
    public double TimeStepScale { get; init; } = 1.0;
    /// <summary>Smallest initial Δ.</summary>
    public double TimeStepMin { get; init; } = 0.001;
    /// <summary>Largest initial Δ.</summary>
    public double TimeStepMax { get; init; } = 0.1;
    /// <summary>"random" or "constant" dt_proj init.</summary>
    public string TimeStepInitScheme { get; init; } = "random";
    /// <summary>Floor of the initial Δ.</summary>
    public double TimeStepFloor { get; init; } = 1e-4;
    /// <summary>Divide out_proj's init by √NL (applied only at from-scratch init).</summary>
    public bool RescalePrenormResidual { get; init; }
    /// <summary>Default of the cache use in forward/generate.</summary>
    public bool UseCache { get; init; } = true;
    /// <summary>Torch-only alternative scan in transformers (same math; kept for round-trips).</summary>
    public bool UseMambapy { get; init; }
    /// <summary>Torch-only associative scan switch in transformers (same math; kept for round-trips).</summary>
    public bool UseAssociativeScan { get; init; } = true;
    /// <summary>lm_head shares the embedding matrix.</summary>
    public bool TieWordEmbeddings { get; init; } = true;
    /// <summary>Storage dtype of the weights ("float32", "bfloat16", "float16"), when the file says.</summary>
    public string? TorchDType { get; init; }
    /// <summary>Keys the library does not use, kept verbatim so that <see cref="ToJson"/> round-trips.</summary>
    public IReadOnlyDictionary<string, JsonNode?> ExtraKeys { get; init; } = new Dictionary<string, JsonNode?>();

    /// <summary>E = int(expand·d).</summary>
    public int IntermediateSize => Expand * HiddenSize;

    /// <summary>Δ rank R: the explicit value, or ceil(d/16) for "auto".</summary>
    public int TimeStepRank => TimeStepRankValue ?? (HiddenSize + 15) / 16;

    /// <summary>The first eos id (0 if none).</summary>
    public int EosTokenId => EosTokenIds.Count > 0 ? EosTokenIds[0] : 0;

    /// <summary>Published shapes of the state-spaces/mamba-*-hf models (GPT-NeoX vocabulary 50280).</summary>
    public static MambaConfig Preset(string name) => name.ToLowerInvariant() switch
    {
        "130m" => new() { HiddenSize = 768, NumHiddenLayers = 24 },
        "370m" => new() { HiddenSize = 1024, NumHiddenLayers = 48 },
        "790m" => new() { HiddenSize = 1536, NumHiddenLayers = 48 },
        "1.4b" => new() { HiddenSize = 2048, NumHiddenLayers = 48 },
        "2.8b" => new() { HiddenSize = 2560, NumHiddenLayers = 64 },
        _ => throw new ArgumentException($"unknown preset '{name}' (expected 130m, 370m, 790m, 1.4b, 2.8b)", nameof(name)),
    };

    /// <summary>Checks every value; throws <see cref="MambaConfigException"/> naming the first bad key.</summary>
    public void Validate(string? filePath = null)
    {
        void Positive(string key, long value)
        {
            if (value <= 0) throw new MambaConfigException(key, $"must be a positive integer, got {value}", filePath);
        }
        Positive("vocab_size", VocabSize);
        Positive("hidden_size", HiddenSize);
        Positive("state_size", StateSize);
        Positive("num_hidden_layers", NumHiddenLayers);
        Positive("expand", Expand);
        Positive("conv_kernel", ConvKernel);
        Positive("time_step_rank", TimeStepRank);
        if ((long)Expand * HiddenSize > int.MaxValue / 4)
            throw new MambaConfigException("expand", $"intermediate size {(long)Expand * HiddenSize} is too large", filePath);
        if (!(LayerNormEpsilon > 0) || double.IsInfinity(LayerNormEpsilon))
            throw new MambaConfigException("layer_norm_epsilon", $"must be a positive number, got {LayerNormEpsilon}", filePath);
        if (HiddenAct != "silu")
            throw new MambaConfigException("hidden_act", $"only \"silu\" is supported, got \"{HiddenAct}\"", filePath);
        if (TimeStepInitScheme is not ("random" or "constant"))
            throw new MambaConfigException("time_step_init_scheme", $"expected \"random\" or \"constant\", got \"{TimeStepInitScheme}\"", filePath);
        if (!(TimeStepMin > 0) || !(TimeStepMax >= TimeStepMin))
            throw new MambaConfigException("time_step_max", $"need 0 < time_step_min ({TimeStepMin}) <= time_step_max ({TimeStepMax})", filePath);
        if (!(TimeStepFloor >= 0))
            throw new MambaConfigException("time_step_floor", $"must be >= 0, got {TimeStepFloor}", filePath);
        foreach (var (key, id) in new[] { ("pad_token_id", PadTokenId), ("bos_token_id", BosTokenId) })
            if (id is { } v && (v < 0 || v >= VocabSize))
                throw new MambaConfigException(key, $"{v} is outside the vocabulary [0, {VocabSize})", filePath);
        foreach (var id in EosTokenIds)
            if (id < 0 || id >= VocabSize)
                throw new MambaConfigException("eos_token_id", $"{id} is outside the vocabulary [0, {VocabSize})", filePath);
        if (TorchDType is not null and not ("float32" or "bfloat16" or "float16"))
            throw new MambaConfigException("dtype", $"unsupported weight dtype \"{TorchDType}\" (float32, bfloat16 or float16)", filePath);
    }

    /// <summary>Reads a config.json in either the Hugging Face or the original state-spaces format.</summary>
    public static MambaConfig FromFile(string path)
    {
        JsonObject obj;
        try
        {
            var text = File.ReadAllText(path);
            obj = JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { AllowTrailingCommas = true }) as JsonObject
                  ?? throw new MambaFormatException("config.json must hold a JSON object", path);
        }
        catch (JsonException e)
        {
            throw new MambaFormatException($"config.json is not valid JSON: {e.Message}", path, inner: e);
        }
        catch (IOException e)
        {
            throw new MambaFormatException($"cannot read config.json: {e.Message}", path, inner: e);
        }
        return IsOriginalFormat(obj) ? FromOriginalJson(obj, path) : FromJson(obj, path);
    }

    /// <summary>True when the object looks like a mamba_ssm config (d_model/n_layer, no hidden_size).</summary>
    public static bool IsOriginalFormat(JsonObject obj) => obj.ContainsKey("d_model") && !obj.ContainsKey("hidden_size");

    /// <summary>Parses a Hugging Face config.json object.</summary>
    public static MambaConfig FromJson(JsonObject obj, string? filePath = null)
    {
        var r = new Reader(obj, filePath);
        if (r.OptString("model_type") is { } modelType && modelType != "mamba")
            throw new MambaConfigException("model_type", $"expected \"mamba\", got \"{modelType}\" (Mamba-2 and hybrids are not supported)", filePath);
        var defaults = new MambaConfig();
        var hidden = r.Int("hidden_size", defaults.HiddenSize);
        var expand = r.Int("expand", defaults.Expand);
        var config = new MambaConfig
        {
            VocabSize = r.Int("vocab_size", defaults.VocabSize),
            HiddenSize = hidden,
            StateSize = r.Int("state_size", defaults.StateSize),
            NumHiddenLayers = r.Int("num_hidden_layers", defaults.NumHiddenLayers),
            LayerNormEpsilon = r.Double("layer_norm_epsilon", defaults.LayerNormEpsilon),
            PadTokenId = r.NullableInt("pad_token_id", 0),
            BosTokenId = r.NullableInt("bos_token_id", 0),
            EosTokenIds = r.IntOrList("eos_token_id", [0]),
            Expand = expand,
            ConvKernel = r.Int("conv_kernel", defaults.ConvKernel),
            UseBias = r.Bool("use_bias", defaults.UseBias),
            UseConvBias = r.Bool("use_conv_bias", defaults.UseConvBias),
            HiddenAct = r.String("hidden_act", defaults.HiddenAct),
            InitializerRange = r.Double("initializer_range", defaults.InitializerRange),
            ResidualInFp32 = r.Bool("residual_in_fp32", defaults.ResidualInFp32),
            TimeStepRankValue = r.RankOrAuto("time_step_rank"),
            TimeStepScale = r.Double("time_step_scale", defaults.TimeStepScale),
            TimeStepMin = r.Double("time_step_min", defaults.TimeStepMin),
            TimeStepMax = r.Double("time_step_max", defaults.TimeStepMax),
            TimeStepInitScheme = r.String("time_step_init_scheme", defaults.TimeStepInitScheme),
            TimeStepFloor = r.Double("time_step_floor", defaults.TimeStepFloor),
            RescalePrenormResidual = r.Bool("rescale_prenorm_residual", defaults.RescalePrenormResidual),
            UseCache = r.Bool("use_cache", defaults.UseCache),
            UseMambapy = r.Bool("use_mambapy", defaults.UseMambapy),
            UseAssociativeScan = r.Bool("use_associative_scan", defaults.UseAssociativeScan),
            TieWordEmbeddings = r.Bool("tie_word_embeddings", defaults.TieWordEmbeddings),
            TorchDType = r.OptString("dtype") ?? r.OptString("torch_dtype"),
        };
        var intermediate = r.OptInt("intermediate_size");
        config = config with { ExtraKeys = r.Unused(KnownHfKeys) };
        config.Validate(filePath);
        if (intermediate is { } inter && inter != config.IntermediateSize)
            throw new MambaConfigException("intermediate_size", $"{inter} disagrees with expand·hidden_size = {expand}·{hidden} = {config.IntermediateSize}", filePath);
        return config;
    }

    /// <summary>Parses an original state-spaces (mamba_ssm) config.json object, mapping it to the HF fields.</summary>
    public static MambaConfig FromOriginalJson(JsonObject obj, string? filePath = null)
    {
        var r = new Reader(obj, filePath);
        if (!r.Bool("rms_norm", true))
            throw new MambaConfigException("rms_norm", "only RMSNorm models (rms_norm = true) are Mamba-1 language models", filePath);
        if (r.Int("d_intermediate", 0) != 0)
            throw new MambaConfigException("d_intermediate", "MLP blocks (d_intermediate != 0) are not part of Mamba-1", filePath);
        if (obj["attn_layer_idx"] is JsonArray { Count: > 0 })
            throw new MambaConfigException("attn_layer_idx", "attention layers (hybrid models) are not supported", filePath);
        var ssm = obj["ssm_cfg"] switch
        {
            null => new JsonObject(),
            JsonObject o => o,
            _ => throw new MambaConfigException("ssm_cfg", "must be a JSON object", filePath),
        };
        var s = new Reader(ssm, filePath, "ssm_cfg.");
        var layer = s.String("layer", "Mamba1");
        if (layer != "Mamba1")
            throw new MambaConfigException("ssm_cfg.layer", $"only \"Mamba1\" is supported, got \"{layer}\"", filePath);
        var vocab = r.Int("vocab_size", 50277);
        var multiple = r.Int("pad_vocab_size_multiple", 8);
        if (multiple <= 0)
            throw new MambaConfigException("pad_vocab_size_multiple", $"must be positive, got {multiple}", filePath);
        var padded = checked((vocab + multiple - 1) / multiple * multiple);
        var dtInit = s.String("dt_init", "random");
        var config = new MambaConfig
        {
            VocabSize = padded,
            HiddenSize = r.Int("d_model", 2560),
            NumHiddenLayers = r.Int("n_layer", 64),
            StateSize = s.Int("d_state", 16),
            ConvKernel = s.Int("d_conv", 4),
            Expand = s.Int("expand", 2),
            TimeStepRankValue = s.RankOrAuto("dt_rank"),
            TimeStepMin = s.Double("dt_min", 0.001),
            TimeStepMax = s.Double("dt_max", 0.1),
            TimeStepInitScheme = dtInit,
            TimeStepScale = s.Double("dt_scale", 1.0),
            TimeStepFloor = s.Double("dt_init_floor", 1e-4),
            UseConvBias = s.Bool("conv_bias", true),
            UseBias = s.Bool("bias", false),
            ResidualInFp32 = r.Bool("residual_in_fp32", true),
            TieWordEmbeddings = r.Bool("tie_embeddings", true),
        };
        // fused_add_norm only selects a kernel in mamba_ssm; the math is the same.
        r.Bool("fused_add_norm", true);
        config.Validate(filePath);
        return config;
    }

    /// <summary>The Hugging Face config.json object for this configuration (as save_pretrained writes it).</summary>
    public JsonObject ToJson()
    {
        var obj = new JsonObject();
        foreach (var (key, value) in ExtraKeys)
            obj[key] = value?.DeepClone();
        obj["architectures"] ??= new JsonArray("MambaForCausalLM");
        obj["model_type"] = "mamba";
        obj["vocab_size"] = VocabSize;
        obj["hidden_size"] = HiddenSize;
        obj["state_size"] = StateSize;
        obj["num_hidden_layers"] = NumHiddenLayers;
        obj["layer_norm_epsilon"] = Float(LayerNormEpsilon);
        obj["pad_token_id"] = PadTokenId;
        obj["bos_token_id"] = BosTokenId;
        obj["eos_token_id"] = EosTokenIds.Count == 1 ? JsonValue.Create(EosTokenIds[0]) : new JsonArray(EosTokenIds.Select(i => (JsonNode?)JsonValue.Create(i)).ToArray());
        obj["expand"] = Expand;
        obj["conv_kernel"] = ConvKernel;
        obj["use_bias"] = UseBias;
        obj["use_conv_bias"] = UseConvBias;
        obj["hidden_act"] = HiddenAct;
        obj["initializer_range"] = Float(InitializerRange);
        obj["residual_in_fp32"] = ResidualInFp32;
        obj["time_step_rank"] = TimeStepRank;
        obj["time_step_scale"] = Float(TimeStepScale);
        obj["time_step_min"] = Float(TimeStepMin);
        obj["time_step_max"] = Float(TimeStepMax);
        obj["time_step_init_scheme"] = TimeStepInitScheme;
        obj["time_step_floor"] = Float(TimeStepFloor);
        obj["rescale_prenorm_residual"] = RescalePrenormResidual;
        obj["use_cache"] = UseCache;
        obj["use_mambapy"] = UseMambapy;
        obj["use_associative_scan"] = UseAssociativeScan;
        obj["tie_word_embeddings"] = TieWordEmbeddings;
        obj["intermediate_size"] = IntermediateSize;
        if (TorchDType is not null) obj["dtype"] = TorchDType;
        return obj;
    }

    /// <summary>
    /// A float field as JSON with a decimal point or exponent (1 → 1.0): transformers' strict config classes reject an
    /// int where they declare a float.
    /// </summary>
    internal static JsonNode Float(double value)
    {
        var text = value.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        if (double.IsFinite(value) && !text.Contains('.') && !text.Contains('E')) text += ".0";
        return JsonNode.Parse(text)!;
    }

    /// <summary>Writes a Hugging Face config.json.</summary>
    public void Save(string path) =>
        File.WriteAllText(path, ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");

    private static readonly HashSet<string> KnownHfKeys =
    [
        "vocab_size", "hidden_size", "state_size", "num_hidden_layers", "layer_norm_epsilon", "pad_token_id",
        "bos_token_id", "eos_token_id", "expand", "conv_kernel", "use_bias", "use_conv_bias", "hidden_act",
        "initializer_range", "residual_in_fp32", "time_step_rank", "time_step_scale", "time_step_min",
        "time_step_max", "time_step_init_scheme", "time_step_floor", "rescale_prenorm_residual", "use_cache",
        "use_mambapy", "use_associative_scan", "tie_word_embeddings", "intermediate_size", "dtype", "torch_dtype",
        "model_type",
    ];

    /// <summary>Typed access to JSON values that names the key on every error.</summary>
    private sealed class Reader(JsonObject obj, string? filePath, string prefix = "")
    {
        private readonly HashSet<string> _read = [];

        private JsonNode? Get(string key)
        {
            _read.Add(key);
            return obj[key];
        }

        private MambaConfigException Bad(string key, string expected, JsonNode? node) =>
            new(prefix + key, $"expected {expected}, got {(node is null ? "null" : node.ToJsonString())}", filePath);

        public int Int(string key, int fallback) => OptInt(key) ?? fallback;

        public int? OptInt(string key)
        {
            var node = Get(key);
            if (node is null) return null;
            if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number)
            {
                if (v.TryGetValue<int>(out var i)) return i;
                if (v.TryGetValue<double>(out var d) && d == Math.Floor(d) && d is >= int.MinValue and <= int.MaxValue) return (int)d;
            }
            throw Bad(key, "an integer", node);
        }

        public int? NullableInt(string key, int? fallback) => obj.ContainsKey(key) && obj[key] is null ? Mark(key) : OptInt(key) ?? fallback;

        private int? Mark(string key)
        {
            _read.Add(key);
            return null;
        }

        public IReadOnlyList<int> IntOrList(string key, IReadOnlyList<int> fallback)
        {
            var node = Get(key);
            switch (node)
            {
                case null: return obj.ContainsKey(key) ? [] : fallback;
                case JsonArray array:
                    return array.Select(item => item is JsonValue iv && iv.TryGetValue<int>(out var x) ? x : throw Bad(key, "an integer or a list of integers", node)).ToArray();
                default:
                    return [OptInt(key)!.Value];
            }
        }

        public double Double(string key, double fallback)
        {
            var node = Get(key);
            if (node is null) return fallback;
            if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out var d)) return d;
            throw Bad(key, "a number", node);
        }

        public bool Bool(string key, bool fallback)
        {
            var node = Get(key);
            if (node is null) return fallback;
            // 5.17's config is strictly typed: booleans must be JSON booleans, not 0/1 or "true".
            return node.GetValueKind() switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Bad(key, "a JSON boolean", node),
            };
        }

        public string String(string key, string fallback) => OptString(key) ?? fallback;

        public string? OptString(string key)
        {
            var node = Get(key);
            if (node is null) return null;
            if (node.GetValueKind() == JsonValueKind.String) return node.GetValue<string>();
            throw Bad(key, "a string", node);
        }

        public int? RankOrAuto(string key)
        {
            var node = obj[key];
            if (node is not null && node.GetValueKind() == JsonValueKind.String)
            {
                _read.Add(key);
                var text = node.GetValue<string>();
                return text == "auto" ? null : throw Bad(key, "an integer or \"auto\"", node);
            }
            return OptInt(key);
        }

        public Dictionary<string, JsonNode?> Unused(HashSet<string> known)
        {
            var extra = new Dictionary<string, JsonNode?>();
            foreach (var (key, value) in obj)
                if (!known.Contains(key) && !_read.Contains(key))
                    extra[key] = value?.DeepClone();
            return extra;
        }
    }

    /// <summary>A one-line summary, e.g. "d=768 E=1536 N=16 R=48 K=4 layers=24 vocab=50280".</summary>
    public string Summary() => string.Create(CultureInfo.InvariantCulture,
        $"d={HiddenSize} E={IntermediateSize} N={StateSize} R={TimeStepRank} K={ConvKernel} layers={NumHiddenLayers} vocab={VocabSize} tied={TieWordEmbeddings} bias={UseBias} residual_fp32={ResidualInFp32}");
}
