using System.Text;
using System.Text.Json;

namespace Mamba.Tokenization;

public sealed partial class MambaTokenizer
{
    /// <summary>What tokenizer.json and the optional configuration files say, before the tokenizer is built.</summary>
    private sealed class Definition
    {
        public required Dictionary<string, int> Vocab;
        public required List<(string, string)> Merges;
        public string? UnkToken;
        public bool IgnoreMerges;
        public required List<AddedToken> AddedTokens;
        public required NormalizationForm[] Normalizations;
        public bool AddPrefixSpace;
        public bool UseRegex = true;
        public List<string> Prefix = [];
        public List<string> Suffix = [];
        public Dictionary<string, int> PostProcessorIds = new(StringComparer.Ordinal);
        public string? UnsupportedPostProcessor;
    }

    /// <summary>
    /// Reads a Hugging Face <c>tokenizer.json</c>. Special token ids are not configured there, so
    /// <see cref="BosTokenId"/>/<see cref="EosTokenId"/> fall back to a special added token named
    /// <c>&lt;|endoftext|&gt;</c> (or <c>&lt;s&gt;</c>/<c>&lt;/s&gt;</c>) and <see cref="PadTokenId"/> to <c>&lt;|padding|&gt;</c> (or <c>&lt;pad&gt;</c>);
    /// use <see cref="FromDirectory"/> to read them from the model's configuration.
    /// </summary>
    /// <exception cref="FileNotFoundException">the file does not exist.</exception>
    /// <exception cref="MambaFormatException">the file is not valid JSON or is inconsistent (the message names the entry).</exception>
    /// <exception cref="NotSupportedException">the model is not BPE (WordPiece, Unigram, WordLevel) or a component is of an unsupported kind.</exception>
    public static MambaTokenizer FromFile(string tokenizerJsonPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(tokenizerJsonPath);
        if (!File.Exists(tokenizerJsonPath))
            throw new FileNotFoundException($"tokenizer file not found: {tokenizerJsonPath}", tokenizerJsonPath);
        var def = ParseTokenizerJson(tokenizerJsonPath);
        var tokenizer = new MambaTokenizer(def, Path.GetFullPath(tokenizerJsonPath));
        tokenizer.GuessSpecialIds();
        return tokenizer;
    }

    /// <summary>
    /// Reads <c>tokenizer.json</c> from a model folder, and the special tokens from <c>special_tokens_map.json</c>,
    /// <c>tokenizer_config.json</c> (also <c>add_bos_token</c>/<c>add_eos_token</c>) and <c>config.json</c>
    /// (<c>bos_token_id</c>, <c>eos_token_id</c>, <c>pad_token_id</c>) when present, in that order of precedence.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">the folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">the folder has no tokenizer.json.</exception>
    /// <exception cref="MambaFormatException">one of the files is malformed.</exception>
    /// <exception cref="NotSupportedException">the tokenizer is not a byte-level BPE one.</exception>
    public static MambaTokenizer FromDirectory(string modelDir)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelDir);
        if (!Directory.Exists(modelDir))
            throw new DirectoryNotFoundException($"model folder not found: {modelDir}");
        string path = Path.Combine(modelDir, "tokenizer.json");
        if (!File.Exists(path))
            throw new FileNotFoundException($"no tokenizer.json in {modelDir}", path);
        var def = ParseTokenizerJson(path);

        using var tokenizerConfig = ReadOptionalJson(Path.Combine(modelDir, "tokenizer_config.json"));
        using var specialMap = ReadOptionalJson(Path.Combine(modelDir, "special_tokens_map.json"));
        using var modelConfig = ReadOptionalJson(Path.Combine(modelDir, "config.json"));

        // add_bos_token / add_eos_token replace the post-processor, as the transformers fast tokenizers do.
        bool? addBos = GetBool(tokenizerConfig, "add_bos_token");
        bool? addEos = GetBool(tokenizerConfig, "add_eos_token");

        var tokenizer = new MambaTokenizer(def, Path.GetFullPath(path));
        tokenizer.BosTokenId = tokenizer.ResolveSpecial("bos", specialMap, tokenizerConfig, modelConfig);
        tokenizer.EosTokenId = tokenizer.ResolveSpecial("eos", specialMap, tokenizerConfig, modelConfig);
        tokenizer.PadTokenId = tokenizer.ResolveSpecial("pad", specialMap, tokenizerConfig, modelConfig);
        tokenizer.GuessSpecialIds();

        if (addBos is not null || addEos is not null)
        {
            var prefix = new List<int>();
            var suffix = new List<int>();
            if (addBos == true)
                prefix.Add(tokenizer.BosTokenId ?? throw new MambaFormatException("add_bos_token is set but there is no bos token", Path.Combine(modelDir, "tokenizer_config.json"), "add_bos_token"));
            if (addEos == true)
                suffix.Add(tokenizer.EosTokenId ?? throw new MambaFormatException("add_eos_token is set but there is no eos token", Path.Combine(modelDir, "tokenizer_config.json"), "add_eos_token"));
            return new MambaTokenizer(tokenizer, [.. prefix], [.. suffix]);
        }
        return tokenizer;
    }

    private MambaTokenizer(Definition def, string path)
    {
        SourcePath = path;
        _model = new BpeModel(def.Vocab, def.Merges, def.UnkToken, def.IgnoreMerges, path);
        _normalizations = def.Normalizations;
        _normalizationStableBelow = _normalizations.All(f => f == NormalizationForm.FormC) ? '\u0300' : '\u0080';
        _addPrefixSpace = def.AddPrefixSpace;
        _useRegex = def.UseRegex;

        int size = 0;
        foreach (int id in def.Vocab.Values) size = Math.Max(size, id + 1);
        foreach (var t in def.AddedTokens) size = Math.Max(size, t.Id + 1);
        _idTokens = new string?[size];
        _idBytes = new byte[]?[size];
        _isSpecial = new bool[size];
        foreach (var (token, id) in def.Vocab) _idTokens[id] = token;
        _addedByContent = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var t in def.AddedTokens)
        {
            _idTokens[t.Id] = t.Content;
            _isSpecial[t.Id] = t.Special;
            _addedByContent.TryAdd(t.Content, t.Id);
        }
        for (int id = 0; id < size; id++)
        {
            if (_idTokens[id] is { } s) _idBytes[id] = ByteLevel.TokenToBytes(s);
        }

        var raw = def.AddedTokens.Where(t => !t.Normalized).ToList();
        var normalized = def.AddedTokens.Where(t => t.Normalized).ToList();
        if (raw.Count > 0)
            _rawMatcher = new AddedTokenMatcher(raw, raw.Select(t => t.Content).ToList());
        if (normalized.Count > 0)
            _normalizedMatcher = new AddedTokenMatcher(normalized, normalized.Select(t => NormalizeAll(t.Content, _normalizations)).ToList());

        _unsupportedPostProcessor = def.UnsupportedPostProcessor;
        _prefixIds = [.. def.Prefix.Select(name => ResolvePostProcessorToken(def, name, path))];
        _suffixIds = [.. def.Suffix.Select(name => ResolvePostProcessorToken(def, name, path))];
    }

    /// <summary>A copy of <paramref name="other"/> with different special tokens around encoded text.</summary>
    private MambaTokenizer(MambaTokenizer other, int[] prefixIds, int[] suffixIds)
    {
        SourcePath = other.SourcePath;
        _model = other._model;
        _rawMatcher = other._rawMatcher;
        _normalizedMatcher = other._normalizedMatcher;
        _normalizations = other._normalizations;
        _normalizationStableBelow = other._normalizationStableBelow;
        _addPrefixSpace = other._addPrefixSpace;
        _useRegex = other._useRegex;
        _idBytes = other._idBytes;
        _idTokens = other._idTokens;
        _isSpecial = other._isSpecial;
        _addedByContent = other._addedByContent;
        _prefixIds = prefixIds;
        _suffixIds = suffixIds;
        _unsupportedPostProcessor = null;
        BosTokenId = other.BosTokenId;
        EosTokenId = other.EosTokenId;
        PadTokenId = other.PadTokenId;
    }

    private static string NormalizeAll(string s, NormalizationForm[] forms)
    {
        foreach (var f in forms)
        {
            s = f switch
            {
                NormalizationForm.FormC => UnicodeNormalizer.Nfc(s),
                NormalizationForm.FormD => UnicodeNormalizer.Nfd(s),
                _ => s.Normalize(f),
            };
        }
        return s;
    }

    /// <summary>Whether the runtime normalizes compatibility forms (it does not in globalization-invariant mode).</summary>
    private static bool RuntimeCompatibilityNormalization() => "\u00BD".Normalize(NormalizationForm.FormKC) != "\u00BD";

    private int ResolvePostProcessorToken(Definition def, string name, string path)
    {
        if (def.PostProcessorIds.TryGetValue(name, out int id)) return id;
        return TokenToId(name) ?? throw new MambaFormatException($"post_processor token '{name}' is not in the vocabulary", path, "post_processor");
    }

    private void GuessSpecialIds()
    {
        int? Special(params string[] names)
        {
            foreach (var n in names)
            {
                if (_addedByContent.TryGetValue(n, out int id) && _isSpecial[id]) return id;
            }
            return null;
        }
        BosTokenId ??= Special("<|endoftext|>", "<s>", "<|begin_of_text|>");
        EosTokenId ??= Special("<|endoftext|>", "</s>", "<|end_of_text|>");
        PadTokenId ??= Special("<|padding|>", "<pad>");
    }

    private int? ResolveSpecial(string kind, JsonDocument? specialMap, JsonDocument? tokenizerConfig, JsonDocument? modelConfig)
    {
        foreach (var doc in new[] { specialMap, tokenizerConfig })
        {
            if (doc?.RootElement is not { ValueKind: JsonValueKind.Object } root) continue;
            if (!root.TryGetProperty(kind + "_token", out var v)) continue;
            string? content = v.ValueKind switch
            {
                JsonValueKind.String => v.GetString(),
                JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
                _ => null,
            };
            if (content is not null && TokenToId(content) is int id) return id;
        }
        if (modelConfig?.RootElement is { ValueKind: JsonValueKind.Object } cfg && cfg.TryGetProperty(kind + "_token_id", out var idValue))
        {
            if (idValue.ValueKind == JsonValueKind.Array && idValue.GetArrayLength() > 0) idValue = idValue[0];
            if (idValue.ValueKind == JsonValueKind.Number && idValue.TryGetInt32(out int id) && id >= 0 && id < VocabSize && _idBytes[id] is not null)
                return id;
        }
        return null;
    }

    private static bool? GetBool(JsonDocument? doc, string key) =>
        doc?.RootElement is { ValueKind: JsonValueKind.Object } root && root.TryGetProperty(key, out var v)
            && v.ValueKind is JsonValueKind.True or JsonValueKind.False
            ? v.GetBoolean() : null;

    private static JsonDocument? ReadOptionalJson(string path)
    {
        if (!File.Exists(path)) return null;
        string name = Path.GetFileName(path);
        var bytes = Mamba.IO.JsonFile.ReadBounded(path, Mamba.IO.JsonFile.MaxConfigBytes, name);
        return Mamba.IO.JsonFile.Parse(bytes, path, name, (entry, message) => new MambaFormatException(message, path, entry.Length == 0 ? null : entry),
            comments: JsonCommentHandling.Skip);
    }

    // ---- tokenizer.json -----------------------------------------------------------------------------------

    private static Definition ParseTokenizerJson(string path)
    {
        // At most 256 MiB from a regular file; every key and string checked (no duplicates, valid UTF-16) before use.
        var bytes = Mamba.IO.JsonFile.ReadBounded(path, Mamba.IO.JsonFile.MaxTokenizerBytes, "tokenizer.json");
        var doc = Mamba.IO.JsonFile.Parse(bytes, path, "tokenizer.json (truncated or corrupt?)",
            (entry, message) => new MambaFormatException(message, path, entry.Length == 0 ? null : entry), maxDepth: 128);
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new MambaFormatException("tokenizer.json must hold a JSON object", path);

            if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
                throw new MambaFormatException("tokenizer.json has no 'model' object", path, "model");
            string type = OptString(model, "type", path, "model.type")
                ?? (model.TryGetProperty("merges", out _) ? "BPE" : throw new MambaFormatException("'model' has no 'type' and no 'merges'", path, "model.type"));
            if (type != "BPE")
                throw new NotSupportedException($"tokenizer model type '{type}' is not supported (only byte-level BPE, as GPT-2/GPT-NeoX use); file {path}");

            if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.TryGetDouble(out double p) && p is > 0 and < 1)
                throw new NotSupportedException($"BPE dropout ({p}) is not supported; file {path}");
            foreach (var affix in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            {
                if (!string.IsNullOrEmpty(OptString(model, affix, path, "model." + affix)))
                    throw new NotSupportedException($"BPE with '{affix}' is not supported; file {path}");
            }

            var def = new Definition
            {
                Vocab = ParseVocab(model, path),
                Merges = ParseMerges(model, path),
                UnkToken = OptString(model, "unk_token", path, "model.unk_token"),
                IgnoreMerges = OptBool(model, "ignore_merges", false, path, "model.ignore_merges"),
                AddedTokens = ParseAddedTokens(root, path),
                Normalizations = ParseNormalizer(root.TryGetProperty("normalizer", out var n) ? n : default, path, "normalizer"),
            };
            ParsePreTokenizer(root.TryGetProperty("pre_tokenizer", out var pre) ? pre : default, def, path, "pre_tokenizer");
            ParseDecoder(root.TryGetProperty("decoder", out var dec) ? dec : default, path, "decoder");
            if (root.TryGetProperty("post_processor", out var post))
                ParsePostProcessor(post, def, path, "post_processor");
            CheckIdRange(def, path);
            return def;
        }
    }

    /// <summary>
    /// The tokenizer keeps one slot per id up to the largest, so ids must be dense enough: every id must be below
    /// 4 × (vocabulary entries + added tokens) + 1024 (real tokenizers number their tokens 0, 1, 2, ...). Without this an
    /// id near int.MaxValue would size those tables at gigabytes.
    /// </summary>
    private static void CheckIdRange(Definition def, string path)
    {
        long limit = 4L * (def.Vocab.Count + def.AddedTokens.Count) + 1024;
        foreach (var (token, id) in def.Vocab)
            if (id >= limit)
                throw new MambaFormatException($"vocabulary entry '{token}' has id {id}, far beyond the {def.Vocab.Count + def.AddedTokens.Count} tokens the file defines (ids must be below {limit})", path, "model.vocab");
        for (int i = 0; i < def.AddedTokens.Count; i++)
            if (def.AddedTokens[i].Id >= limit)
                throw new MambaFormatException($"added token id {def.AddedTokens[i].Id} is far beyond the {def.Vocab.Count + def.AddedTokens.Count} tokens the file defines (ids must be below {limit})", path, $"added_tokens[{i}]");
        foreach (var (name, id) in def.PostProcessorIds)
            if (id >= limit)
                throw new MambaFormatException($"post_processor token '{name}' has id {id}, far beyond the tokens the file defines (ids must be below {limit})", path, "post_processor");
    }

    private static Dictionary<string, int> ParseVocab(JsonElement model, string path)
    {
        if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
            throw new MambaFormatException("'model' has no 'vocab' object", path, "model.vocab");
        var dict = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in vocab.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                throw new MambaFormatException($"vocabulary entry '{p.Name}' has id {p.Value.GetRawText()}, not a non-negative integer", path, "model.vocab");
            dict[p.Name] = id;
        }
        if (dict.Count == 0)
            throw new MambaFormatException("the vocabulary is empty", path, "model.vocab");
        return dict;
    }

    private static List<(string, string)> ParseMerges(JsonElement model, string path)
    {
        if (!model.TryGetProperty("merges", out var merges) || merges.ValueKind != JsonValueKind.Array)
            throw new MambaFormatException("'model' has no 'merges' array", path, "model.merges");
        var list = new List<(string, string)>(merges.GetArrayLength());
        int i = 0;
        foreach (var m in merges.EnumerateArray())
        {
            if (m.ValueKind == JsonValueKind.String)
            {
                var s = m.GetString()!;
                int space = s.IndexOf(' ');
                if (space <= 0 || space == s.Length - 1 || s.IndexOf(' ', space + 1) >= 0)
                    throw new MambaFormatException($"merge {i} is '{s}', not two tokens separated by one space", path, $"model.merges[{i}]");
                list.Add((s[..space], s[(space + 1)..]));
            }
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                     && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
            {
                list.Add((m[0].GetString()!, m[1].GetString()!));
            }
            else
            {
                throw new MambaFormatException($"merge {i} is {m.GetRawText()}, neither \"a b\" nor [\"a\", \"b\"]", path, $"model.merges[{i}]");
            }
            i++;
        }
        return list;
    }

    private static List<AddedToken> ParseAddedTokens(JsonElement root, string path)
    {
        var list = new List<AddedToken>();
        if (!root.TryGetProperty("added_tokens", out var added) || added.ValueKind == JsonValueKind.Null)
            return list;
        if (added.ValueKind != JsonValueKind.Array)
            throw new MambaFormatException("'added_tokens' is not an array", path, "added_tokens");
        int i = 0;
        foreach (var t in added.EnumerateArray())
        {
            string where = $"added_tokens[{i}]";
            if (t.ValueKind != JsonValueKind.Object)
                throw new MambaFormatException("added token is not an object", path, where);
            if (!t.TryGetProperty("id", out var idEl) || idEl.ValueKind != JsonValueKind.Number || !idEl.TryGetInt32(out int id) || id < 0)
                throw new MambaFormatException("added token has no non-negative integer 'id'", path, where);
            string content = OptString(t, "content", path, where + ".content")
                ?? throw new MambaFormatException("added token has no 'content'", path, where);
            if (content.Length == 0)
                throw new MambaFormatException("added token has empty 'content'", path, where);
            bool special = OptBool(t, "special", false, path, where);
            list.Add(new AddedToken(
                id, content, special,
                OptBool(t, "single_word", false, path, where),
                OptBool(t, "lstrip", false, path, where),
                OptBool(t, "rstrip", false, path, where),
                OptBool(t, "normalized", !special, path, where)));
            i++;
        }
        return list;
    }

    private static NormalizationForm[] ParseNormalizer(JsonElement n, string path, string where)
    {
        if (n.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return [];
        if (n.ValueKind != JsonValueKind.Object)
            throw new MambaFormatException("normalizer is not an object", path, where);
        string type = OptString(n, "type", path, where + ".type") ?? throw new MambaFormatException("normalizer has no 'type'", path, where);
        switch (type)
        {
            case "NFC": return [NormalizationForm.FormC];
            case "NFD": return [NormalizationForm.FormD];
            case "NFKC" or "NFKD":
                if (!RuntimeCompatibilityNormalization())
                    throw new NotSupportedException($"normalizer '{type}' needs ICU, which this process runs without (globalization-invariant mode); file {path}");
                return [type == "NFKC" ? NormalizationForm.FormKC : NormalizationForm.FormKD];
            case "Sequence":
                if (!n.TryGetProperty("normalizers", out var items) || items.ValueKind != JsonValueKind.Array)
                    throw new MambaFormatException("Sequence normalizer has no 'normalizers' array", path, where);
                return [.. items.EnumerateArray().SelectMany((x, k) => ParseNormalizer(x, path, $"{where}.normalizers[{k}]"))];
            default:
                throw new NotSupportedException($"normalizer of type '{type}' is not supported (NFC, NFD, NFKC, NFKD and Sequence are); file {path}");
        }
    }

    private static void ParsePreTokenizer(JsonElement p, Definition def, string path, string where)
    {
        if (p.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null)
            throw new NotSupportedException($"a BPE tokenizer without the ByteLevel pre-tokenizer is not supported; file {path}");
        if (p.ValueKind != JsonValueKind.Object)
            throw new MambaFormatException("pre_tokenizer is not an object", path, where);
        string type = OptString(p, "type", path, where + ".type") ?? throw new MambaFormatException("pre_tokenizer has no 'type'", path, where);
        if (type == "Sequence" && p.TryGetProperty("pretokenizers", out var items) && items.ValueKind == JsonValueKind.Array && items.GetArrayLength() == 1)
        {
            ParsePreTokenizer(items[0], def, path, where + ".pretokenizers[0]");
            return;
        }
        if (type != "ByteLevel")
            throw new NotSupportedException($"pre_tokenizer of type '{type}' is not supported (only ByteLevel); file {path}");
        def.AddPrefixSpace = OptBool(p, "add_prefix_space", true, path, where + ".add_prefix_space");
        def.UseRegex = OptBool(p, "use_regex", true, path, where + ".use_regex");
    }

    private static void ParseDecoder(JsonElement d, string path, string where)
    {
        if (d.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null)
            throw new NotSupportedException($"a BPE tokenizer without the ByteLevel decoder is not supported; file {path}");
        if (d.ValueKind != JsonValueKind.Object)
            throw new MambaFormatException("decoder is not an object", path, where);
        string type = OptString(d, "type", path, where + ".type") ?? throw new MambaFormatException("decoder has no 'type'", path, where);
        if (type == "Sequence" && d.TryGetProperty("decoders", out var items) && items.ValueKind == JsonValueKind.Array && items.GetArrayLength() == 1)
        {
            ParseDecoder(items[0], path, where + ".decoders[0]");
            return;
        }
        if (type != "ByteLevel")
            throw new NotSupportedException($"decoder of type '{type}' is not supported (only ByteLevel); file {path}");
    }

    private static void ParsePostProcessor(JsonElement p, Definition def, string path, string where)
    {
        if (p.ValueKind == JsonValueKind.Null) return;
        if (p.ValueKind != JsonValueKind.Object)
            throw new MambaFormatException("post_processor is not an object", path, where);
        string type = OptString(p, "type", path, where + ".type") ?? throw new MambaFormatException("post_processor has no 'type'", path, where);
        switch (type)
        {
            case "ByteLevel":
                return;
            case "Sequence":
                if (!p.TryGetProperty("processors", out var items) || items.ValueKind != JsonValueKind.Array)
                    throw new MambaFormatException("Sequence post_processor has no 'processors' array", path, where);
                int k = 0;
                foreach (var item in items.EnumerateArray())
                    ParsePostProcessor(item, def, path, $"{where}.processors[{k++}]");
                return;
            case "RobertaProcessing" or "BertProcessing":
            {
                var (cls, clsId) = NamedId(p, "cls", path, where);
                var (sep, sepId) = NamedId(p, "sep", path, where);
                def.PostProcessorIds[cls] = clsId;
                def.PostProcessorIds[sep] = sepId;
                def.Prefix.Insert(0, cls);
                def.Suffix.Add(sep);
                return;
            }
            case "TemplateProcessing":
            {
                if (!p.TryGetProperty("single", out var single) || single.ValueKind != JsonValueKind.Array)
                    throw new MambaFormatException("TemplateProcessing has no 'single' template", path, where + ".single");
                var before = new List<string>();
                var after = new List<string>();
                bool seenSequence = false;
                foreach (var piece in single.EnumerateArray())
                {
                    if (piece.ValueKind == JsonValueKind.Object && piece.TryGetProperty("SpecialToken", out var st))
                    {
                        string name = OptString(st, "id", path, where + ".single") ?? throw new MambaFormatException("template SpecialToken has no 'id'", path, where + ".single");
                        (seenSequence ? after : before).Add(name);
                    }
                    else if (piece.ValueKind == JsonValueKind.Object && piece.TryGetProperty("Sequence", out _))
                    {
                        seenSequence = true;
                    }
                    else
                    {
                        throw new MambaFormatException($"template piece {piece.GetRawText()} is neither SpecialToken nor Sequence", path, where + ".single");
                    }
                }
                if (p.TryGetProperty("special_tokens", out var specials) && specials.ValueKind == JsonValueKind.Object)
                {
                    foreach (var s in specials.EnumerateObject())
                    {
                        if (s.Value.ValueKind == JsonValueKind.Object && s.Value.TryGetProperty("ids", out var ids) && ids.ValueKind == JsonValueKind.Array)
                        {
                            if (ids.GetArrayLength() != 1)
                                throw new NotSupportedException($"template special token '{s.Name}' with {ids.GetArrayLength()} ids is not supported; file {path}");
                            if (ids[0].ValueKind != JsonValueKind.Number || !ids[0].TryGetInt32(out int sid) || sid < 0)
                                throw new MambaFormatException($"template special token '{s.Name}' has id {ids[0].GetRawText()}, not a non-negative integer", path, $"{where}.special_tokens.{s.Name}.ids");
                            def.PostProcessorIds[s.Name] = sid;
                        }
                    }
                }
                def.Prefix.InsertRange(0, before);
                def.Suffix.AddRange(after);
                return;
            }
            default:
                def.UnsupportedPostProcessor = type;
                return;
        }
    }

    private static (string, int) NamedId(JsonElement p, string key, string path, string where)
    {
        if (!p.TryGetProperty(key, out var v) || v.ValueKind != JsonValueKind.Array || v.GetArrayLength() != 2
            || v[0].ValueKind != JsonValueKind.String || v[1].ValueKind != JsonValueKind.Number || !v[1].TryGetInt32(out int id) || id < 0)
            throw new MambaFormatException($"'{key}' is not [token, id]", path, $"{where}.{key}");
        return (v[0].GetString()!, id);
    }

    private static string? OptString(JsonElement obj, string key, string path, string where)
    {
        if (!obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.String)
            throw new MambaFormatException($"'{key}' is {v.ValueKind}, not a string", path, where);
        return v.GetString();
    }

    private static bool OptBool(JsonElement obj, string key, bool fallback, string path, string where)
    {
        if (!obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new MambaFormatException($"'{key}' is {v.ValueKind}, not a boolean", path, where),
        };
    }
}
