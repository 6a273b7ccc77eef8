using System.Text.Json;
using System.Text.Json.Nodes;

namespace Mamba.Generation;

/// <summary>
/// How to generate: length limits, greedy or sampled decoding, the logits processors and when to stop. Names,
/// defaults and meanings follow Hugging Face transformers' <c>GenerationConfig</c> (5.x): <c>max_new_tokens</c>
/// is <see cref="MaxNewTokens"/>, <c>do_sample</c> is <see cref="DoSample"/>, and so on. With everything left at
/// its default, generation is greedy and produces at most 20 new tokens, as <c>model.generate(input_ids)</c> does.
/// </summary>
/// <remarks>
/// The sampling settings (<see cref="Temperature"/>, <see cref="TopK"/>, <see cref="TopP"/>, <see cref="MinP"/>)
/// only act when <see cref="DoSample"/> is true; <see cref="RepetitionPenalty"/> and the minimum lengths act in
/// greedy decoding too. Call <see cref="Validate"/> (the generation entry points do) to check the values.
/// </remarks>
public sealed record GenerationOptions
{
    /// <summary>The number of new tokens generated when neither <see cref="MaxNewTokens"/> nor <see cref="MaxLength"/> is set (HF's default <c>max_length</c> of 20).</summary>
    public const int DefaultMaxNewTokens = 20;

    /// <summary>
    /// The most tokens to generate, prompt excluded (<c>max_new_tokens</c>). Takes precedence over
    /// <see cref="MaxLength"/>; when both are null, 20 new tokens. 0 is allowed and generates nothing (transformers
    /// rejects 0).
    /// </summary>
    public int? MaxNewTokens { get; init; }

    /// <summary>
    /// The most tokens of prompt plus generated text (<c>max_length</c>), used only when <see cref="MaxNewTokens"/>
    /// is null. As in transformers, the value 20 (the library default) means 20 new tokens rather than a total.
    /// </summary>
    public int? MaxLength { get; init; }

    /// <summary>The fewest new tokens before an end-of-sequence token may be chosen (<c>min_new_tokens</c>); 0 means no minimum. Takes precedence over <see cref="MinLength"/>.</summary>
    public int MinNewTokens { get; init; }

    /// <summary>The fewest tokens of prompt plus generated text before an end-of-sequence token may be chosen (<c>min_length</c>); used only when <see cref="MinNewTokens"/> is 0.</summary>
    public int? MinLength { get; init; }

    /// <summary>Sample the next token from the processed distribution (<c>do_sample</c>); false is greedy decoding (argmax).</summary>
    public bool DoSample { get; init; }

    /// <summary>Divides the logits before sampling (<c>temperature</c>); must be &gt; 0 when <see cref="DoSample"/>. 1 leaves them unchanged.</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Keeps only the <c>top_k</c> largest logits when sampling; 0 disables the filter.</summary>
    public int TopK { get; init; } = 50;

    /// <summary>Nucleus sampling (<c>top_p</c>): keeps the smallest set of most likely tokens whose probability adds up to at least this; 1 disables it. In (0, 1].</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Min-p sampling (<c>min_p</c>): drops tokens whose probability is below <c>min_p</c> times the largest probability; null disables it. In [0, 1].</summary>
    public double? MinP { get; init; }

    /// <summary>
    /// Repetition penalty (<c>repetition_penalty</c>): the logit of every token already in the sequence (prompt
    /// included) is divided by it when positive and multiplied by it when negative; 1 disables it. Must be &gt; 0.
    /// </summary>
    public double RepetitionPenalty { get; init; } = 1.0;

    /// <summary>The end-of-sequence token ids (<c>eos_token_id</c>); null means the model's own.</summary>
    public IReadOnlyList<int>? EosTokenIds { get; init; }

    /// <summary>The padding token id (<c>pad_token_id</c>), when the generation config names one.</summary>
    public int? PadTokenId { get; init; }

    /// <summary>The beginning-of-sequence token id (<c>bos_token_id</c>), when the generation config names one.</summary>
    public int? BosTokenId { get; init; }

    /// <summary>Strings that end generation when they appear in the generated text (<c>stop_strings</c>); the text is cut where the first one starts. Empty: none.</summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];

    /// <summary>
    /// Seed of the sampling random number generator: the same seed, options and logits give the same tokens. Null
    /// seeds from the system. The random stream is .NET's, not PyTorch's, so seeded samples differ from
    /// transformers' for the same seed.
    /// </summary>
    public int? Seed { get; init; }

    /// <summary>
    /// The name of a LoRA adapter loaded on the model (<see cref="MambaModel.LoadAdapter"/>,
    /// <see cref="Model.MambaForCausalLM.LoadAdapter"/>) to generate with, unmerged; null uses the base model. PEFT's
    /// <c>set_adapter</c>, per request.
    /// </summary>
    public string? Adapter { get; init; }

    /// <summary>
    /// Checks every value and throws <see cref="ArgumentOutOfRangeException"/> whose
    /// <see cref="ArgumentException.ParamName"/> names the first offending property.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A value is outside its allowed range.</exception>
    public void Validate()
    {
        if (MaxNewTokens is < 0)
            throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "max_new_tokens must be >= 0");
        if (MaxLength is < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxLength), MaxLength, "max_length must be >= 1");
        if (MinNewTokens < 0)
            throw new ArgumentOutOfRangeException(nameof(MinNewTokens), MinNewTokens, "min_new_tokens must be >= 0");
        if (MinLength is < 0)
            throw new ArgumentOutOfRangeException(nameof(MinLength), MinLength, "min_length must be >= 0");
        if (MaxNewTokens is { } maxNew && MinNewTokens > maxNew)
            throw new ArgumentOutOfRangeException(nameof(MinNewTokens), MinNewTokens, $"min_new_tokens must not exceed max_new_tokens ({maxNew})");
        if (MaxLength is { } maxLength && MinLength is { } minLength && minLength > maxLength)
            throw new ArgumentOutOfRangeException(nameof(MinLength), MinLength, $"min_length must not exceed max_length ({maxLength})");
        if (DoSample && !(Temperature > 0 && double.IsFinite(Temperature)))
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature,
                "temperature must be a finite number > 0 when sampling (for greedy decoding set DoSample = false)");
        if (TopK < 0)
            throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "top_k must be >= 0 (0 disables it)");
        if (!(TopP > 0 && TopP <= 1))
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "top_p must be in (0, 1]");
        if (MinP is { } minP && !(minP >= 0 && minP <= 1))
            throw new ArgumentOutOfRangeException(nameof(MinP), MinP, "min_p must be in [0, 1]");
        if (!(RepetitionPenalty > 0 && double.IsFinite(RepetitionPenalty)))
            throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), RepetitionPenalty, "repetition_penalty must be a finite number > 0");
        if (EosTokenIds is not null)
            foreach (var id in EosTokenIds)
                if (id < 0)
                    throw new ArgumentOutOfRangeException(nameof(EosTokenIds), id, "eos token ids must be >= 0");
        if (PadTokenId is < 0)
            throw new ArgumentOutOfRangeException(nameof(PadTokenId), PadTokenId, "pad_token_id must be >= 0");
        if (BosTokenId is < 0)
            throw new ArgumentOutOfRangeException(nameof(BosTokenId), BosTokenId, "bos_token_id must be >= 0");
        if (StopSequences is null)
            throw new ArgumentOutOfRangeException(nameof(StopSequences), null, "stop sequences must be a list (empty for none)");
        foreach (var stop in StopSequences)
            if (string.IsNullOrEmpty(stop))
                throw new ArgumentOutOfRangeException(nameof(StopSequences), stop, "a stop sequence must be a non-empty string");
    }

    /// <summary>
    /// How many new tokens at most, for a prompt of <paramref name="promptLength"/> tokens, with transformers'
    /// precedence (<c>_prepare_generated_length</c>): <see cref="MaxNewTokens"/> when set; else
    /// <see cref="MaxLength"/> minus the prompt (except that a <c>max_length</c> of exactly 20, the library default,
    /// means 20 new tokens); else 20.
    /// </summary>
    /// <param name="promptLength">Tokens in the prompt (for left-padded batches, transformers counts the padded length).</param>
    /// <exception cref="ArgumentOutOfRangeException">The prompt is negative, or already as long as <see cref="MaxLength"/> (transformers raises then too).</exception>
    public int ResolveMaxNewTokens(int promptLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(promptLength);
        if (MaxNewTokens is { } maxNew) return maxNew;
        if (MaxLength is { } maxLength)
        {
            if (maxLength == DefaultMaxNewTokens) return DefaultMaxNewTokens;
            if (promptLength >= maxLength)
                throw new ArgumentOutOfRangeException(nameof(promptLength), promptLength,
                    $"the prompt has {promptLength} tokens but max_length is {maxLength}; increase max_length or, better, set max_new_tokens");
            return maxLength - promptLength;
        }
        return DefaultMaxNewTokens;
    }

    /// <summary>
    /// How many new tokens at least before an end-of-sequence token may be chosen, for a prompt of
    /// <paramref name="promptLength"/> tokens: <see cref="MinNewTokens"/> when &gt; 0, else
    /// <see cref="MinLength"/> minus the prompt (not below 0), else 0.
    /// </summary>
    /// <param name="promptLength">Tokens in the prompt.</param>
    public int ResolveMinNewTokens(int promptLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(promptLength);
        if (MinNewTokens > 0) return MinNewTokens;
        if (MinLength is { } minLength) return Math.Max(0, minLength - promptLength);
        return 0;
    }

    /// <summary>
    /// Reads a Hugging Face <c>generation_config.json</c>: <c>max_new_tokens</c>, <c>max_length</c>,
    /// <c>min_new_tokens</c>, <c>min_length</c>, <c>do_sample</c>, <c>temperature</c>, <c>top_k</c>, <c>top_p</c>,
    /// <c>min_p</c>, <c>repetition_penalty</c>, <c>eos_token_id</c> (an int or a list), <c>pad_token_id</c>,
    /// <c>bos_token_id</c> and <c>stop_strings</c> (a string or a list). Other keys are ignored; a JSON null is
    /// the same as an absent key.
    /// </summary>
    /// <param name="generationConfigJsonPath">Path of the file.</param>
    /// <exception cref="MambaFormatException">The file cannot be read or is not a JSON object.</exception>
    /// <exception cref="MambaConfigException">A known key has the wrong type or an invalid value; <see cref="MambaConfigException.Key"/> names it.</exception>
    public static GenerationOptions FromGenerationConfig(string generationConfigJsonPath)
    {
        ArgumentNullException.ThrowIfNull(generationConfigJsonPath);
        string path = generationConfigJsonPath;
        // At most 16 MiB from a regular file; keys given twice and invalid strings are refused with the key named.
        var bytes = Mamba.IO.JsonFile.ReadBounded(path, Mamba.IO.JsonFile.MaxConfigBytes, "generation_config.json");
        using (Mamba.IO.JsonFile.Parse(bytes, path, "generation_config.json", (entry, message) => new MambaConfigException(entry.Length == 0 ? "(root)" : entry, message, path)))
        {
        }
        JsonObject obj;
        try
        {
            obj = JsonNode.Parse(bytes, documentOptions: new JsonDocumentOptions { AllowTrailingCommas = true }) as JsonObject
                  ?? throw new MambaFormatException("generation_config.json must hold a JSON object", generationConfigJsonPath);
        }
        catch (JsonException e)
        {
            throw new MambaFormatException($"generation_config.json is not valid JSON: {e.Message}", generationConfigJsonPath, inner: e);
        }
        return FromGenerationConfig(obj, generationConfigJsonPath);
    }

    /// <summary>Reads the object of a Hugging Face <c>generation_config.json</c>; see <see cref="FromGenerationConfig(string)"/>.</summary>
    /// <param name="generationConfig">The parsed JSON object.</param>
    /// <param name="filePath">The file it came from, for error messages; may be null.</param>
    /// <exception cref="MambaConfigException">A known key has the wrong type or an invalid value; <see cref="MambaConfigException.Key"/> names it.</exception>
    public static GenerationOptions FromGenerationConfig(JsonObject generationConfig, string? filePath = null)
    {
        ArgumentNullException.ThrowIfNull(generationConfig);
        var r = new JsonReader(generationConfig, filePath);
        var defaults = new GenerationOptions();
        var options = new GenerationOptions
        {
            MaxNewTokens = r.OptInt("max_new_tokens"),
            MaxLength = r.OptInt("max_length"),
            MinNewTokens = r.OptInt("min_new_tokens") ?? 0,
            MinLength = r.OptInt("min_length"),
            DoSample = r.OptBool("do_sample") ?? defaults.DoSample,
            Temperature = r.OptDouble("temperature") ?? defaults.Temperature,
            TopK = r.OptInt("top_k") ?? defaults.TopK,
            TopP = r.OptDouble("top_p") ?? defaults.TopP,
            MinP = r.OptDouble("min_p"),
            RepetitionPenalty = r.OptDouble("repetition_penalty") ?? defaults.RepetitionPenalty,
            EosTokenIds = r.OptIntOrList("eos_token_id"),
            PadTokenId = r.OptInt("pad_token_id"),
            BosTokenId = r.OptInt("bos_token_id"),
            StopSequences = r.OptStringOrList("stop_strings") ?? [],
        };
        try
        {
            options.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            var key = e.ParamName is { } name && JsonKeys.TryGetValue(name, out var k) ? k : e.ParamName ?? "?";
            throw new MambaConfigException(key, FirstLine(e.Message), filePath, e);
        }
        return options;
    }

    private static string FirstLine(string message)
    {
        int cut = message.IndexOf(" (Parameter '", StringComparison.Ordinal);
        return cut >= 0 ? message[..cut] : message.Split('\n')[0];
    }

    private static readonly Dictionary<string, string> JsonKeys = new()
    {
        [nameof(MaxNewTokens)] = "max_new_tokens",
        [nameof(MaxLength)] = "max_length",
        [nameof(MinNewTokens)] = "min_new_tokens",
        [nameof(MinLength)] = "min_length",
        [nameof(DoSample)] = "do_sample",
        [nameof(Temperature)] = "temperature",
        [nameof(TopK)] = "top_k",
        [nameof(TopP)] = "top_p",
        [nameof(MinP)] = "min_p",
        [nameof(RepetitionPenalty)] = "repetition_penalty",
        [nameof(EosTokenIds)] = "eos_token_id",
        [nameof(PadTokenId)] = "pad_token_id",
        [nameof(BosTokenId)] = "bos_token_id",
        [nameof(StopSequences)] = "stop_strings",
    };

    /// <summary>Typed, null-tolerant access to generation_config.json values that names the key on every error.</summary>
    private sealed class JsonReader(JsonObject obj, string? filePath)
    {
        private MambaConfigException Bad(string key, string expected, JsonNode? node) =>
            new(key, $"expected {expected}, got {node!.ToJsonString()}", filePath);

        private static bool TryInt(JsonNode node, out int value)
        {
            value = 0;
            if (node is not JsonValue v || v.GetValueKind() != JsonValueKind.Number) return false;
            if (v.TryGetValue(out value)) return true;
            if (v.TryGetValue<double>(out var d) && d == Math.Floor(d) && d is >= int.MinValue and <= int.MaxValue)
            {
                value = (int)d;
                return true;
            }
            return false;
        }

        public int? OptInt(string key)
        {
            var node = obj[key];
            if (node is null) return null;
            return TryInt(node, out var i) ? i : throw Bad(key, "an integer", node);
        }

        public double? OptDouble(string key)
        {
            var node = obj[key];
            if (node is null) return null;
            if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out var d))
                return d;
            throw Bad(key, "a number", node);
        }

        public bool? OptBool(string key)
        {
            var node = obj[key];
            if (node is null) return null;
            return node.GetValueKind() switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Bad(key, "true or false", node),
            };
        }

        public IReadOnlyList<int>? OptIntOrList(string key)
        {
            var node = obj[key];
            if (node is null) return null;
            if (TryInt(node, out var single)) return [single];
            if (node is JsonArray array)
            {
                var ids = new int[array.Count];
                for (int i = 0; i < array.Count; i++)
                    if (array[i] is not { } item || !TryInt(item, out ids[i]))
                        throw Bad(key, "an integer or a list of integers", node);
                return ids;
            }
            throw Bad(key, "an integer or a list of integers", node);
        }

        public IReadOnlyList<string>? OptStringOrList(string key)
        {
            var node = obj[key];
            if (node is null) return null;
            if (node.GetValueKind() == JsonValueKind.String) return [node.GetValue<string>()];
            if (node is JsonArray array)
            {
                var strings = new string[array.Count];
                for (int i = 0; i < array.Count; i++)
                    strings[i] = array[i] is { } item && item.GetValueKind() == JsonValueKind.String
                        ? item.GetValue<string>()
                        : throw Bad(key, "a string or a list of strings", node);
                return strings;
            }
            throw Bad(key, "a string or a list of strings", node);
        }
    }
}
