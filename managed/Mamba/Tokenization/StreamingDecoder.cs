using System.Text;

namespace Mamba.Tokenization;

/// <summary>
/// Decodes ids produced one at a time (during generation): <see cref="Append"/> returns only text whose UTF-8
/// bytes are complete, holding back the start of a character split across tokens, so a valid sequence never
/// yields U+FFFD. The concatenation of every <see cref="Append"/> and the final <see cref="Flush"/> equals
/// <see cref="MambaTokenizer.Decode"/> of all the ids. Not thread-safe; create one per sequence.
/// </summary>
public sealed class StreamingDecoder
{
    private readonly MambaTokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];

    internal StreamingDecoder(MambaTokenizer tokenizer, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
    }

    /// <summary>
    /// Adds one id and returns the text it completes (possibly empty). An id the tokenizer does not know (a padded
    /// embedding row) adds nothing, as in <see cref="MambaTokenizer.Decode"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">the id is negative.</exception>
    public string Append(int id)
    {
        var bytes = _tokenizer.TryGetTokenBytes(id);
        if (bytes is null || (_skipSpecialTokens && _tokenizer.IsSpecialToken(id))) return "";
        return Convert(bytes, flush: false);
    }

    /// <summary>Returns what is held back (an incomplete character becomes U+FFFD) and starts afresh.</summary>
    public string Flush() => Convert([], flush: true);

    /// <summary>Drops whatever is held back and starts afresh.</summary>
    public void Reset() => _utf8.Reset();

    private string Convert(ReadOnlySpan<byte> bytes, bool flush)
    {
        int n = _utf8.GetCharCount(bytes, flush);
        if (n > _chars.Length) _chars = new char[Math.Max(n, _chars.Length * 2)];
        int written = _utf8.GetChars(bytes, _chars, flush);
        return written == 0 ? "" : new string(_chars, 0, written);
    }
}
