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

    /// <summary>Largest accepted <see cref="VocabSize"/> (2^24; GPT-NeoX has 50,280 rows).</summary>
    public const int MaxVocabSize = 1 << 24;
    /// <summary>Largest accepted <see cref="HiddenSize"/> and <see cref="TimeStepRank"/> (2^18; the largest published Mamba has 2,560).</summary>
    public const int MaxHiddenSize = 1 << 18;
    /// <summary>Largest accepted <see cref="StateSize"/> (2^16; published models use 16).</summary>
    public const int MaxStateSize = 1 << 16;
    /// <summary>Largest accepted <see cref="NumHiddenLayers"/> (2^14; published models have at most 64).</summary>
    public const int MaxLayers = 1 << 14;
    /// <summary>Largest accepted <see cref="ConvKernel"/> (2^10; published models use 4).</summary>
    public const int MaxConvKernel = 1 << 10;

    /// <summary>
    /// Checks every value; throws <see cref="MambaConfigException"/> naming the first bad key. Sizes must be positive,
    /// at most <see cref="MaxVocabSize"/>, <see cref="MaxHiddenSize"/>, <see cref="MaxStateSize"/>, <see cref="MaxLayers"/>
    /// and <see cref="MaxConvKernel"/>, and every parameter must fit one array: a hostile config fails here, before
    /// anything is allocated.
    /// </summary>
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
        void AtMost(string key, long value, long limit)
        {
            if (value > limit) throw new MambaConfigException(key, $"{value} is above the limit of {limit} (no Mamba model is near it; the file is damaged or hostile)", filePath);
        }
        AtMost("vocab_size", VocabSize, MaxVocabSize);
        AtMost("hidden_size", HiddenSize, MaxHiddenSize);
        AtMost("state_size", StateSize, MaxStateSize);
        AtMost("num_hidden_layers", NumHiddenLayers, MaxLayers);
        AtMost("conv_kernel", ConvKernel, MaxConvKernel);
        AtMost("time_step_rank", TimeStepRank, MaxHiddenSize);
        if ((long)Expand * HiddenSize > int.MaxValue / 4)
            throw new MambaConfigException("expand", $"intermediate size {(long)Expand * HiddenSize} is too large", filePath);
        // Every parameter must fit one array (the CPU path holds each in a float[]).
        long inner = (long)Expand * HiddenSize;
        foreach (var (key, what, count) in new[]
                 {
                     ("vocab_size", "the embedding (vocab_size × hidden_size)", (long)VocabSize * HiddenSize),
                     ("expand", "in_proj (2·expand·hidden_size × hidden_size)", 2 * inner * HiddenSize),
                     ("state_size", "x_proj ((time_step_rank + 2·state_size) × intermediate size)", (TimeStepRank + 2L * StateSize) * inner),
                     ("time_step_rank", "dt_proj (intermediate size × time_step_rank)", inner * TimeStepRank),
                 })
            if (count > Array.MaxLength)
                throw new MambaConfigException(key, $"{what} would hold {count} values, more than one array can", filePath);
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
    /// <remarks>
    /// The file may be at most <see cref="MaxFileBytes"/> bytes and must be a regular file (a FIFO or device is refused
    /// unopened); a key given twice in one object or a string that is not valid UTF-16 throws
    /// <see cref="MambaConfigException"/> naming the key.
    /// </remarks>
    /// <exception cref="MambaFormatException">The file is unreadable, too large, not a regular file or not JSON.</exception>
    /// <exception cref="MambaConfigException">A key is duplicated, of the wrong type, or has an unsupported, inconsistent or out-of-range value.</exception>
    public static MambaConfig FromFile(string path) => FromFile(path, out _);

    /// <summary>The largest config.json (or generation_config.json) read, in bytes.</summary>
    public const long MaxFileBytes = IO.JsonFile.MaxConfigBytes;

    /// <summary><see cref="FromFile(string)"/>, also saying whether the file was in the original state-spaces format.</summary>
    internal static MambaConfig FromFile(string path, out bool originalFormat)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var bytes = IO.JsonFile.ReadBounded(path, IO.JsonFile.MaxConfigBytes, "config.json");
        using (IO.JsonFile.Parse(bytes, path, "config.json", (entry, message) => new MambaConfigException(entry.Length == 0 ? "(root)" : entry, message, path)))
        {
            // Checked: no duplicate keys and no invalid strings, so the JsonNode below cannot fail on either.
        }
        JsonObject obj;
        try
        {
            obj = JsonNode.Parse(bytes, documentOptions: new JsonDocumentOptions { AllowTrailingCommas = true }) as JsonObject
                  ?? throw new MambaFormatException("config.json must hold a JSON object", path);
        }
        catch (JsonException e)
        {
            throw new MambaFormatException($"config.json is not valid JSON: {e.Message}", path, inner: e);
        }
        originalFormat = IsOriginalFormat(obj);
        return originalFormat ? FromOriginalJson(obj, path) : FromJson(obj, path);
    }

    /// <summary>The key that holds the HF field <paramref name="hfKey"/> in a config of the given format (for error messages).</summary>
    internal static string KeyName(string hfKey, bool originalFormat) => !originalFormat ? hfKey : hfKey switch
    {
        "hidden_size" => "d_model",
        "num_hidden_layers" => "n_layer",
        "state_size" => "ssm_cfg.d_state",
        "conv_kernel" => "ssm_cfg.d_conv",
        "expand" => "ssm_cfg.expand",
        "time_step_rank" => "ssm_cfg.dt_rank",
        _ => hfKey,
    };

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
        if (vocab <= 0 || vocab > MaxVocabSize)
            throw new MambaConfigException("vocab_size", $"must be in [1, {MaxVocabSize}], got {vocab}", filePath);
        if (multiple > MaxVocabSize)
            throw new MambaConfigException("pad_vocab_size_multiple", $"must be in [1, {MaxVocabSize}], got {multiple}", filePath);
        long padded = ((long)vocab + multiple - 1) / multiple * multiple;
        if (padded > MaxVocabSize)
            throw new MambaConfigException("pad_vocab_size_multiple", $"pads vocab_size {vocab} to {padded}, more than the {MaxVocabSize} limit", filePath);
        var dtInit = s.String("dt_init", "random");
        var config = new MambaConfig
        {
            VocabSize = (int)padded,
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
            try
            {
                return obj[key];
            }
            catch (ArgumentException e)
            {
                // A JsonObject parsed from text with a key given twice fails when first read (FromFile checks beforehand).
                throw new MambaConfigException(prefix + key, $"the object holds a key twice: {e.Message}", filePath, e);
            }
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
            if (node.GetValueKind() == JsonValueKind.String)
            {
                try
                {
                    return node.GetValue<string>();
                }
                catch (InvalidOperationException e)
                {
                    throw new MambaConfigException(prefix + key, "the string is not valid UTF-16 (an unpaired surrogate escape)", filePath, e);
                }
            }
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
