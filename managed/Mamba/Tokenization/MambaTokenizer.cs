using System.Buffers;
using System.Text;

namespace Mamba.Tokenization;

/// <summary>
/// The byte-level BPE tokenizer of a Hugging Face <c>tokenizer.json</c> (GPT-2 / GPT-NeoX-20B family, which every
/// <c>state-spaces/mamba-*-hf</c> model uses), giving exactly the ids of the Hugging Face <c>tokenizers</c> library:
/// added tokens are extracted first (non-normalized ones from the raw text, normalized ones after the
/// normalizer), the remaining text is normalized, split with the GPT-2 pattern, mapped to byte characters and
/// merged. Instances are immutable and safe to use from several threads.
/// </summary>
public sealed partial class MambaTokenizer
{
    private readonly BpeModel _model;
    private readonly AddedTokenMatcher? _rawMatcher;
    private readonly AddedTokenMatcher? _normalizedMatcher;
    private readonly NormalizationForm[] _normalizations;
    private readonly char _normalizationStableBelow;
    private readonly bool _addPrefixSpace;
    private readonly bool _useRegex;
    private readonly byte[]?[] _idBytes;
    private readonly string?[] _idTokens;
    private readonly bool[] _isSpecial;
    private readonly Dictionary<string, int> _addedByContent;
    private readonly int[] _prefixIds;
    private readonly int[] _suffixIds;
    private readonly string? _unsupportedPostProcessor;

    /// <summary>Number of ids the tokenizer knows: the highest id of the vocabulary or the added tokens, plus one.</summary>
    public int VocabSize => _idBytes.Length;

    /// <summary>Id of the beginning-of-sequence token, when known.</summary>
    public int? BosTokenId { get; private set; }

    /// <summary>Id of the end-of-sequence token, when known.</summary>
    public int? EosTokenId { get; private set; }

    /// <summary>Id of the padding token, when known.</summary>
    public int? PadTokenId { get; private set; }

    /// <summary>The path of the tokenizer.json this tokenizer was read from.</summary>
    public string SourcePath { get; }

    /// <summary>
    /// Encodes <paramref name="text"/> to token ids. With <paramref name="addSpecialTokens"/>, the tokens of the
    /// post-processor (or of <c>add_bos_token</c>/<c>add_eos_token</c> in tokenizer_config.json) are added around
    /// them; for GPT-NeoX that adds nothing, as in the reference.
    /// </summary>
    /// <exception cref="NotSupportedException">special tokens were requested and the post-processor is of an unsupported kind.</exception>
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        if (addSpecialTokens) { CheckPostProcessor(); ids.AddRange(_prefixIds); }
        int count = 0;
        EncodeCore(text, ids, ref count);
        if (addSpecialTokens) ids.AddRange(_suffixIds);
        return ids.ToArray();
    }

    /// <summary>Number of tokens <see cref="Encode"/> gives for <paramref name="text"/> (without special tokens), without building the list.</summary>
    public int CountTokens(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int count = 0;
        EncodeCore(text, null, ref count);
        return count;
    }

    /// <summary>
    /// Turns ids back into text: the bytes of every token concatenated and read as UTF-8 (invalid sequences become
    /// U+FFFD), skipping special tokens when <paramref name="skipSpecialTokens"/> is set.
    /// </summary>
    /// <remarks>
    /// An id the tokenizer does not know (at least <see cref="VocabSize"/>, or a gap in the numbering) contributes
    /// nothing, as in Hugging Face tokenizers' <c>decode</c> (it drops ids with no token). Models pad their vocabulary
    /// past the tokenizer's (state-spaces/mamba-*-hf: 50,280 embedding rows, 50,277 tokenizer ids), so a model can
    /// produce such ids.
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">an id is negative.</exception>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var buffer = new ArrayBufferWriter<byte>(256);
        foreach (int id in ids)
        {
            var bytes = TryGetTokenBytes(id);
            if (bytes is null || (skipSpecialTokens && _isSpecial[id])) continue;
            buffer.Write(bytes);
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>Creates a decoder that turns ids generated one at a time into text, never splitting a character.</summary>
    public StreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false) => new(this, skipSpecialTokens);

    /// <summary>The id of a token given as its vocabulary string (byte-level characters, e.g. <c>"Ġthe"</c>) or added-token text; null when unknown.</summary>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (_addedByContent.TryGetValue(token, out int added)) return added;
        return _model.TryGetId(token, out int id) ? id : null;
    }

    /// <summary>The vocabulary string of <paramref name="id"/> (byte-level characters for BPE tokens); null when the id is unassigned.</summary>
    public string? IdToToken(int id) => id >= 0 && id < _idTokens.Length ? _idTokens[id] : null;

    /// <summary>Whether <paramref name="id"/> is a special added token (skipped by <c>skipSpecialTokens</c>).</summary>
    public bool IsSpecialToken(int id) => id >= 0 && id < _isSpecial.Length && _isSpecial[id];

    /// <summary>The BPE model (tests reach its uncached paths).</summary>
    internal BpeModel Model => _model;

    /// <summary>The raw bytes a token stands for; null for an id the tokenizer does not know (decoding skips it).</summary>
    /// <exception cref="ArgumentOutOfRangeException">the id is negative.</exception>
    internal byte[]? TryGetTokenBytes(int id)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(id);
        return id < _idBytes.Length ? _idBytes[id] : null;
    }

    private void CheckPostProcessor()
    {
        if (_unsupportedPostProcessor is not null)
            throw new NotSupportedException($"post_processor of type '{_unsupportedPostProcessor}' is not supported; encode with addSpecialTokens: false");
    }

    private void EncodeCore(string text, List<int>? output, ref int count)
    {
        if (text.Length == 0) return;
        if (_rawMatcher is null)
        {
            EncodeNormalizedPass(text, output, ref count);
            return;
        }
        var segments = new List<Segment>();
        _rawMatcher.Split(text, segments);
        if (segments is [{ TokenId: < 0 } only] && only.Length == text.Length)
        {
            EncodeNormalizedPass(text, output, ref count); // no added token: skip the copy
            return;
        }
        foreach (var seg in segments)
        {
            if (seg.TokenId >= 0)
            {
                output?.Add(seg.TokenId);
                count++;
            }
            else
            {
                EncodeNormalizedPass(text.Substring(seg.Start, seg.Length), output, ref count);
            }
        }
    }

    private void EncodeNormalizedPass(string piece, List<int>? output, ref int count)
    {
        string normalized = Normalize(piece);
        if (_normalizedMatcher is null)
        {
            EncodeText(normalized, output, ref count);
            return;
        }
        var segments = new List<Segment>();
        _normalizedMatcher.Split(normalized, segments);
        foreach (var seg in segments)
        {
            if (seg.TokenId >= 0)
            {
                output?.Add(seg.TokenId);
                count++;
            }
            else
            {
                EncodeText(normalized.AsSpan(seg.Start, seg.Length), output, ref count);
            }
        }
    }

    private string Normalize(string s)
    {
        if (_normalizations.Length == 0) return s;
        // ASCII is unchanged by every normalization form, and text below U+0300 by NFC (nothing there decomposes
        // under NFC or composes with what precedes it).
        bool simple = true;
        foreach (char c in s)
        {
            if (c >= _normalizationStableBelow) { simple = false; break; }
        }
        if (simple) return s;
        return NormalizeAll(s, _normalizations);
    }

    private void EncodeText(ReadOnlySpan<char> text, List<int>? output, ref int count)
    {
        if (text.Length == 0) return;
        if (_addPrefixSpace && text[0] != ' ')
            text = string.Concat(" ", text).AsSpan();
        if (!_useRegex)
        {
            AddWord(text, output, ref count);
            return;
        }
        int i = 0;
        while (i < text.Length)
        {
            int len = ByteLevel.NextPiece(text, i);
            AddWord(text.Slice(i, len), output, ref count);
            i += len;
        }
    }

    private void AddWord(ReadOnlySpan<char> word, List<int>? output, ref int count)
    {
        var ids = _model.EncodeWord(word);
        if (output is not null)
        {
            if (ids.Length == 1) output.Add(ids[0]);
            else CollectionExtensions.AddRange(output, (ReadOnlySpan<int>)ids);
        }
        count += ids.Length;
    }
}
