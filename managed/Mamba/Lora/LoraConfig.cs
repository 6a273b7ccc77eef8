using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Mamba.IO;

namespace Mamba.Lora;

/// <summary>
/// A LoRA adapter configuration with the fields and defaults of PEFT's <c>LoraConfig</c> (0.21) that matter for plain
/// LoRA on Mamba. Reads and writes PEFT's <c>adapter_config.json</c>. Unknown keys are ignored on read; a known key
/// with a wrong type, a missing required key (<c>peft_type</c>, <c>target_modules</c>) or a feature this library does
/// not implement (another <c>peft_type</c>, DoRA, trained biases, <c>modules_to_save</c>, a regular-expression
/// <c>target_modules</c>) throws <see cref="MambaConfigException"/> naming the key.
/// </summary>
public sealed record LoraConfig
{
    /// <summary>The file name PEFT uses for the configuration.</summary>
    public const string FileName = "adapter_config.json";

    /// <summary>The PEFT version whose file format this class writes.</summary>
    public const string PeftVersion = "0.21.0";

    private static readonly TimeSpan RegexTimeout = TimeSpan.FromSeconds(1);

    /// <summary>Default rank r of every adapted module (<c>r</c>).</summary>
    public int R { get; init; } = 8;

    /// <summary>Default α of every adapted module (<c>lora_alpha</c>).</summary>
    public double LoraAlpha { get; init; } = 8;

    /// <summary>Dropout on the LoRA input during training (<c>lora_dropout</c>); no effect at inference.</summary>
    public double LoraDropout { get; init; }

    /// <summary>Which biases are trained (<c>bias</c>); only "none" is supported.</summary>
    public string Bias { get; init; } = "none";

    /// <summary>
    /// Module names to adapt (<c>target_modules</c>). PEFT's rule: a module is targeted when its full path equals an
    /// entry or ends with "." followed by the entry (so "in_proj" targets every <c>backbone.layers.{i}.mixer.in_proj</c>).
    /// </summary>
    public IReadOnlyList<string> TargetModules { get; init; } = [];

    /// <summary>Scale α/√r instead of α/r (<c>use_rslora</c>).</summary>
    public bool UseRslora { get; init; }

    /// <summary>
    /// PEFT's flag for Conv1D-style (transposed) base weights (<c>fan_in_fan_out</c>). PEFT resets it to false for
    /// <c>nn.Linear</c> targets, which Mamba's are, so the stored A/B orientation does not depend on it; it is kept for round trips.
    /// </summary>
    public bool FanInFanOut { get; init; }

    /// <summary>Extra fully trained modules (<c>modules_to_save</c>); only null or empty is supported.</summary>
    public IReadOnlyList<string>? ModulesToSave { get; init; }

    /// <summary>Per-module rank overrides (<c>rank_pattern</c>): pattern → r, matched as PEFT's <c>get_pattern_key</c> does.</summary>
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();

    /// <summary>Per-module α overrides (<c>alpha_pattern</c>): pattern → α, matched as PEFT's <c>get_pattern_key</c> does.</summary>
    public IReadOnlyDictionary<string, double> AlphaPattern { get; init; } = new Dictionary<string, double>();

    /// <summary>The PEFT task type (<c>task_type</c>), "CAUSAL_LM" for language-model adapters.</summary>
    public string? TaskType { get; init; } = "CAUSAL_LM";

    /// <summary>Whether the adapter was saved for inference (<c>inference_mode</c>); PEFT writes true.</summary>
    public bool InferenceMode { get; init; } = true;

    /// <summary>The base model the adapter was trained on (<c>base_model_name_or_path</c>), when known.</summary>
    public string? BaseModelNameOrPath { get; init; }

    /// <summary>
    /// The initialisation PEFT used (<c>init_lora_weights</c>): "true" or "false" for PEFT's boolean values, else the
    /// method name PEFT accepts there (for example "gaussian"). Saved weights do not depend on it.
    /// </summary>
    public string InitLoraWeights { get; init; } = "true";

    /// <summary>
    /// The rank of the module at <paramref name="modulePath"/> (e.g. <c>backbone.layers.0.mixer.in_proj</c>):
    /// the first <see cref="RankPattern"/> entry that matches, else <see cref="R"/>.
    /// </summary>
    public int RankFor(string modulePath) => MatchPattern(RankPattern, modulePath) is { } key ? RankPattern[key] : R;

    /// <summary>The α of the module at <paramref name="modulePath"/>: the first <see cref="AlphaPattern"/> entry that matches, else <see cref="LoraAlpha"/>.</summary>
    public double AlphaFor(string modulePath) => MatchPattern(AlphaPattern, modulePath) is { } key ? AlphaPattern[key] : LoraAlpha;

    /// <summary>
    /// The LoRA scale of the module at <paramref name="modulePath"/>, as PEFT's <c>LoraLayer.update_layer</c> sets it:
    /// α/r, or α/√r with <see cref="UseRslora"/>, where r and α come from <see cref="RankFor"/> and <see cref="AlphaFor"/>.
    /// </summary>
    public double ScaleFor(string modulePath)
    {
        int r = RankFor(modulePath);
        double alpha = AlphaFor(modulePath);
        return UseRslora ? alpha / Math.Sqrt(r) : alpha / r;
    }

    /// <summary>True when <see cref="TargetModules"/> selects the module at <paramref name="modulePath"/> (PEFT's exact-or-suffix rule).</summary>
    public bool IsTargeted(string modulePath)
    {
        ArgumentNullException.ThrowIfNull(modulePath);
        foreach (var t in TargetModules)
            if (modulePath == t || modulePath.EndsWith("." + t, StringComparison.Ordinal))
                return true;
        return false;
    }

    /// <summary>
    /// PEFT 0.21's <c>get_pattern_key</c>: the first key k (in file order) for which <c>re.match(rf"(.*\.)?({k})$", path)</c>
    /// succeeds, or null.
    /// </summary>
    private static string? MatchPattern<T>(IReadOnlyDictionary<string, T> patterns, string modulePath)
    {
        ArgumentNullException.ThrowIfNull(modulePath);
        foreach (var key in patterns.Keys)
            if (PatternRegex(key).IsMatch(modulePath))
                return key;
        return null;
    }

    private static Regex PatternRegex(string key) => new($"^(.*\\.)?({key})$", RegexOptions.CultureInvariant, RegexTimeout);

    // ------------------------------------------------------------------ reading

    /// <summary>Reads <c>adapter_config.json</c>.</summary>
    /// <exception cref="MambaFormatException">The file is missing, unreadable or not a JSON object.</exception>
    /// <exception cref="MambaConfigException">A key is missing, mistyped, invalid or names an unsupported feature.</exception>
    public static LoraConfig FromFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
            throw new MambaFormatException($"{FileName} not found", path);
        // Bounded read, duplicate keys and unpaired surrogates refused with the key named (as config.json is read).
        using var doc = JsonFile.Read(path, JsonFile.MaxConfigBytes, FileName, (entry, message) => new MambaConfigException(entry, message, path), maxDepth: 32);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new MambaFormatException($"{FileName} must hold a JSON object", path);
        var obj = JsonObject.Create(doc.RootElement)!;
        return FromJson(obj, path);
    }

    /// <summary>Parses an <c>adapter_config.json</c> object.</summary>
    /// <exception cref="MambaConfigException">A key is missing, mistyped, invalid or names an unsupported feature.</exception>
    public static LoraConfig FromJson(JsonObject obj, string? filePath = null)
    {
        ArgumentNullException.ThrowIfNull(obj);
        var r = new Reader(obj, filePath);

        string peftType = r.RequiredString("peft_type");
        if (peftType != "LORA")
            throw new MambaConfigException("peft_type", $"only \"LORA\" adapters are supported, got \"{peftType}\"", filePath);
        if (r.Bool("use_dora", false))
            throw new MambaConfigException("use_dora", "DoRA adapters (use_dora = true) are not supported", filePath);
        if (r.Bool("lora_bias", false))
            throw new MambaConfigException("lora_bias", "adapters with a trained lora_B bias (lora_bias = true) are not supported", filePath);
        string bias = r.String("bias", "none");
        if (bias != "none")
            throw new MambaConfigException("bias", $"only bias = \"none\" is supported, got \"{bias}\" (trained base biases are not part of the adapter format this library reads)", filePath);

        if (obj["target_modules"] is JsonValue tv && tv.GetValueKind() == JsonValueKind.String)
            throw new MambaConfigException("target_modules",
                $"a regular expression or shorthand (\"{tv.GetValue<string>()}\") is not supported; list the module names (e.g. [\"in_proj\", \"x_proj\"])", filePath);
        var targets = r.StringList("target_modules") ?? throw new MambaConfigException("target_modules", "is required", filePath);
        if (targets.Count == 0)
            throw new MambaConfigException("target_modules", "must list at least one module", filePath);

        var modulesToSave = r.StringList("modules_to_save");
        if (modulesToSave is { Count: > 0 })
            throw new MambaConfigException("modules_to_save", $"fully trained extra modules ({string.Join(", ", modulesToSave)}) are not supported", filePath);

        var config = new LoraConfig
        {
            R = r.Int("r", 8),
            LoraAlpha = r.Double("lora_alpha", 8),
            LoraDropout = r.Double("lora_dropout", 0),
            Bias = bias,
            TargetModules = targets,
            UseRslora = r.Bool("use_rslora", false),
            FanInFanOut = r.Bool("fan_in_fan_out", false),
            ModulesToSave = modulesToSave,
            RankPattern = r.Pattern("rank_pattern", (key, node) => r.IntValue(key, node)),
            AlphaPattern = r.Pattern("alpha_pattern", (key, node) => r.DoubleValue(key, node)),
            TaskType = r.OptString("task_type"),
            InferenceMode = r.Bool("inference_mode", true),
            BaseModelNameOrPath = r.OptString("base_model_name_or_path"),
            InitLoraWeights = r.BoolOrString("init_lora_weights", "true"),
        };
        config.Validate(filePath);
        return config;
    }

    /// <summary>Checks value ranges; throws <see cref="MambaConfigException"/> naming the key.</summary>
    /// <exception cref="MambaConfigException">A value is out of range or a pattern is not a valid regular expression.</exception>
    public void Validate(string? filePath = null)
    {
        if (R <= 0)
            throw new MambaConfigException("r", $"must be a positive integer, got {R}", filePath);
        if (!double.IsFinite(LoraAlpha))
            throw new MambaConfigException("lora_alpha", $"must be a finite number, got {LoraAlpha}", filePath);
        if (!(LoraDropout >= 0 && LoraDropout < 1))
            throw new MambaConfigException("lora_dropout", $"must be in [0, 1), got {LoraDropout}", filePath);
        if (Bias != "none")
            throw new MambaConfigException("bias", $"only \"none\" is supported, got \"{Bias}\"", filePath);
        if (TargetModules.Count == 0 || TargetModules.Any(string.IsNullOrEmpty))
            throw new MambaConfigException("target_modules", "must list at least one non-empty module name", filePath);
        if (ModulesToSave is { Count: > 0 })
            throw new MambaConfigException("modules_to_save", "fully trained extra modules are not supported", filePath);
        foreach (var (key, rank) in RankPattern)
        {
            CheckPattern("rank_pattern", key, filePath);
            if (rank <= 0)
                throw new MambaConfigException("rank_pattern", $"rank of '{key}' must be a positive integer, got {rank}", filePath);
        }
        foreach (var (key, alpha) in AlphaPattern)
        {
            CheckPattern("alpha_pattern", key, filePath);
            if (!double.IsFinite(alpha))
                throw new MambaConfigException("alpha_pattern", $"alpha of '{key}' must be a finite number, got {alpha}", filePath);
        }
    }

    private static void CheckPattern(string configKey, string pattern, string? filePath)
    {
        try
        {
            _ = PatternRegex(pattern);
        }
        catch (ArgumentException e)
        {
            throw new MambaConfigException(configKey, $"'{pattern}' is not a valid regular expression: {e.Message}", filePath, e);
        }
    }

    // ------------------------------------------------------------------ writing

    /// <summary>
    /// The <c>adapter_config.json</c> object PEFT 0.21 writes for this configuration (keys sorted, as PEFT's
    /// <c>json.dumps(sort_keys=True)</c>; float fields with a decimal point).
    /// </summary>
    public JsonObject ToJson()
    {
        var obj = new SortedDictionary<string, JsonNode?>(StringComparer.Ordinal)
        {
            ["alpha_pattern"] = new JsonObject(AlphaPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)IntOrFloat(kv.Value)))),
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = BaseModelNameOrPath,
            ["bias"] = Bias,
            ["exclude_modules"] = null,
            ["fan_in_fan_out"] = FanInFanOut,
            ["inference_mode"] = InferenceMode,
            ["init_lora_weights"] = InitLoraWeights switch { "true" => true, "false" => false, var s => JsonValue.Create(s) },
            ["layers_pattern"] = null,
            ["layers_to_transform"] = null,
            ["lora_alpha"] = IntOrFloat(LoraAlpha),
            ["lora_bias"] = false,
            ["lora_dropout"] = MambaConfig.Float(LoraDropout),
            ["modules_to_save"] = ModulesToSave is null ? null : new JsonArray(ModulesToSave.Select(m => (JsonNode?)JsonValue.Create(m)).ToArray()),
            ["peft_type"] = "LORA",
            ["peft_version"] = PeftVersion,
            ["r"] = R,
            ["rank_pattern"] = new JsonObject(RankPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))),
            ["revision"] = null,
            ["target_modules"] = new JsonArray(TargetModules.Select(m => (JsonNode?)JsonValue.Create(m)).ToArray()),
            ["task_type"] = TaskType,
            ["use_dora"] = false,
            ["use_rslora"] = UseRslora,
        };
        return new JsonObject(obj);
    }

    /// <summary>Writes <c>adapter_config.json</c> (indented by two spaces, as PEFT does).</summary>
    public void Save(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var options = new JsonSerializerOptions { WriteIndented = true, IndentSize = 2 };
        File.WriteAllText(path, ToJson().ToJsonString(options) + "\n");
    }

    /// <summary>PEFT declares lora_alpha as int: an integral α is written as an integer, any other as a float.</summary>
    private static JsonNode IntOrFloat(double value) =>
        value == Math.Floor(value) && Math.Abs(value) < 1e15 ? JsonValue.Create((long)value) : MambaConfig.Float(value);

    /// <summary>Typed access to JSON values that names the key on every error.</summary>
    private sealed class Reader(JsonObject obj, string? filePath)
    {
        private MambaConfigException Bad(string key, string expected, JsonNode? node) =>
            new(key, $"expected {expected}, got {(node is null ? "null" : node.ToJsonString())}", filePath);

        public string RequiredString(string key) => OptString(key) ?? throw new MambaConfigException(key, "is required", filePath);

        public string String(string key, string fallback) => OptString(key) ?? fallback;

        public string? OptString(string key)
        {
            var node = obj[key];
            if (node is null) return null;
            if (node.GetValueKind() == JsonValueKind.String) return node.GetValue<string>();
            throw Bad(key, "a string", node);
        }

        public int Int(string key, int fallback) => obj[key] is { } node ? IntValue(key, node) : fallback;

        public int IntValue(string key, JsonNode? node)
        {
            if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number)
            {
                if (v.TryGetValue<int>(out var i)) return i;
                if (v.TryGetValue<double>(out var d) && d == Math.Floor(d) && d is >= int.MinValue and <= int.MaxValue) return (int)d;
            }
            throw Bad(key, "an integer", node);
        }

        public double Double(string key, double fallback) => obj[key] is { } node ? DoubleValue(key, node) : fallback;

        public double DoubleValue(string key, JsonNode? node)
        {
            if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out var d)) return d;
            throw Bad(key, "a number", node);
        }

        public bool Bool(string key, bool fallback)
        {
            var node = obj[key];
            if (node is null) return fallback;
            return node.GetValueKind() switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Bad(key, "a JSON boolean", node),
            };
        }

        public string BoolOrString(string key, string fallback)
        {
            var node = obj[key];
            return node?.GetValueKind() switch
            {
                null => fallback,
                JsonValueKind.True => "true",
                JsonValueKind.False => "false",
                JsonValueKind.String => node.GetValue<string>(),
                _ => throw Bad(key, "a JSON boolean or a string", node),
            };
        }

        public List<string>? StringList(string key)
        {
            var node = obj[key];
            if (node is null) return null;
            if (node is not JsonArray array) throw Bad(key, "a list of strings", node);
            var result = new List<string>(array.Count);
            foreach (var item in array)
            {
                if (item is null || item.GetValueKind() != JsonValueKind.String) throw Bad(key, "a list of strings", node);
                result.Add(item.GetValue<string>());
            }
            return result;
        }

        /// <summary>A pattern → value map in file order (PEFT tries patterns in insertion order).</summary>
        public IReadOnlyDictionary<string, T> Pattern<T>(string key, Func<string, JsonNode?, T> value)
        {
            var node = obj[key];
            var result = new OrderedDictionary<string, T>(StringComparer.Ordinal);
            if (node is null) return result;
            if (node is not JsonObject map) throw Bad(key, "an object mapping module patterns to values", node);
            foreach (var (pattern, v) in map)
                result[pattern] = value(key, v);
            return result;
        }
    }
}
