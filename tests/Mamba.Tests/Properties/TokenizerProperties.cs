using System.Text;
using CsCheck;
using Mamba.Tests.Tokenization;
using Mamba.Tokenization;

namespace Mamba.Tests.Properties;

/// <summary>
/// Property-based tests (CsCheck) of the GPT-NeoX tokenizer on generated Unicode text: round trips, streaming
/// decoding and determinism. Each property runs a fixed number of random cases; a failure prints the shrunk input and
/// the CsCheck seed that reproduces it (pass it as <c>seed:</c> to <c>Sample</c> to replay).
/// </summary>
public class TokenizerProperties
{
    private const int Iterations = 1500;

    private static MambaTokenizer Tok => TokenizerTestData.NeoX;

    /// <summary>Text pieces chosen to reach every kind of input the byte-level BPE treats differently.</summary>
    private static readonly Gen<string> Piece = Gen.Frequency(
        (6, Gen.String[Gen.Char[' ', '~'], 1, 8]),                                    // printable ASCII
        (3, Gen.String[Gen.Char[" \t\n\r\u00a0\u2009\u3000\u000b\u000c\u0085"], 1, 30]), // whitespace runs (longer than the 24-space added token too)
        (2, Gen.String[Gen.Char['\0', '\u001f'], 1, 3]),                              // C0 controls
        (1, Gen.String[Gen.Char['\u007f', '\u009f'], 1, 3]),                          // DEL and C1 controls
        (3, Gen.String[Gen.Char['\u00a0', '\u024f'], 1, 4]),                          // Latin-1 and Latin Extended
        (2, Gen.String[Gen.Char['\u0300', '\u036f'], 1, 3]),                          // combining marks (NFC composes them)
        (3, Gen.String[Gen.Char['\u0370', '\ud7ff'], 1, 4]),                          // the rest of the BMP below the surrogates
        (1, Gen.String[Gen.Char['\ue000', '\uffff'], 1, 3]),                          // private use, compatibility forms, noncharacters
        (3, Gen.Int[0x10000, 0x10FFFF].Select(char.ConvertFromUtf32)),               // supplementary planes: surrogate pairs
        (1, Gen.Int[0x1F300, 0x1FAFF].Select(char.ConvertFromUtf32)),                // emoji
        (1, Gen.OneOf(Gen.Const("<|endoftext|>"), Gen.Const("<|padding|>"), Gen.Const("Hello"), Gen.Const(" world"),
            Gen.Const("'s"), Gen.Const("'ll"), Gen.Const("e\u0301"), Gen.Const("\u1100\u1161\u11a8"))));   // special tokens, contractions, decomposed é and Hangul

    /// <summary>Well-formed UTF-16 text (every surrogate paired) of up to 24 pieces.</summary>
    private static readonly Gen<string> Text = Piece.Array[0, 24].Select(pieces => string.Concat(pieces));

    /// <summary>Text with lone surrogates mixed in.</summary>
    private static readonly Gen<string> IllFormedText = Gen.Select(Text, Gen.Char['\ud800', '\udfff'].Array[1, 3], Gen.Int[0, 1000].Array[3],
        (s, surrogates, at) =>
        {
            var sb = new StringBuilder(s);
            for (int i = 0; i < surrogates.Length; i++) sb.Insert(at[i] % (sb.Length + 1), surrogates[i]);
            return sb.ToString();
        });

    [Test]
    public void DecodeOfEncodeGivesTheNfcText() =>
        Text.Sample(s =>
        {
            var ids = Tok.Encode(s);
            // The GPT-NeoX tokenizer splits off its special tokens first (as Hugging Face tokenizers does), then
            // normalizes each piece between them to NFC; the byte-level BPE loses nothing else. So a combining mark right
            // after "<|padding|>" stays a combining mark rather than composing with its ">".
            return Tok.Decode(ids) == NfcBetweenSpecialTokens(s);
        }, iter: Iterations, print: Show);

    private static string NfcBetweenSpecialTokens(string s) => string.Concat(
        System.Text.RegularExpressions.Regex.Split(s, @"(<\|endoftext\|>|<\|padding\|>)")
            .Select(piece => piece is "<|endoftext|>" or "<|padding|>" ? piece : UnicodeNormalizer.Nfc(piece)));

    [Test]
    public void TextAlreadyInNfcRoundTripsExactly() =>
        Text.Select(UnicodeNormalizer.Nfc).Sample(s => Tok.Decode(Tok.Encode(s)) == s, iter: Iterations, print: Show);

    [Test]
    public void LoneSurrogatesBecomeReplacementCharacters() =>
        // Ill-formed UTF-16 is encoded as UTF-8 does it (each lone surrogate as U+FFFD) rather than rejected.
        IllFormedText.Sample(s =>
        {
            var wellFormed = new StringBuilder(s.Length);
            for (int i = 0; i < s.Length; i++)
            {
                char c = s[i];
                if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { wellFormed.Append(c).Append(s[++i]); continue; }
                wellFormed.Append(char.IsSurrogate(c) ? '\ufffd' : c);
            }
            return Tok.Decode(Tok.Encode(s)) == NfcBetweenSpecialTokens(wellFormed.ToString());
        }, iter: Iterations / 2, print: Show);

    [Test]
    public void EncodeIsDeterministicAndCountTokensAgrees() =>
        Text.Sample(s =>
        {
            var first = Tok.Encode(s);
            var second = Tok.Encode(new string(s.AsSpan()));   // a distinct string instance: no reference caching
            return first.SequenceEqual(second) && Tok.CountTokens(s) == first.Count;
        }, iter: Iterations, print: Show);

    [Test]
    public void EveryEncodedIdIsAKnownToken() =>
        Text.Sample(s => Tok.Encode(s).All(id => id >= 0 && id < Tok.VocabSize && Tok.IdToToken(id) is not null),
            iter: Iterations, print: Show);

    [Test]
    public void StreamingDecoderOutputEqualsWholeDecode() =>
        // Any id sequence, not only what Encode makes: arbitrary ids split characters across tokens and produce
        // invalid UTF-8, which both decoders must turn into the same U+FFFD characters.
        Gen.Frequency(
                (1, Text.Select(s => Tok.Encode(s).ToArray())),
                (1, Gen.Int[0, 50300].Array[0, 40]))
            .Sample(ids =>
            {
                foreach (bool skipSpecial in new[] { false, true })
                {
                    var streaming = Tok.CreateStreamingDecoder(skipSpecial);
                    var sb = new StringBuilder();
                    foreach (var id in ids)
                    {
                        var piece = streaming.Append(id);
                        // A piece never ends inside a surrogate pair: Append holds back incomplete characters.
                        if (piece.Length > 0 && char.IsHighSurrogate(piece[^1])) return false;
                        sb.Append(piece);
                    }
                    sb.Append(streaming.Flush());
                    if (sb.ToString() != Tok.Decode(ids, skipSpecial)) return false;
                }
                return true;
            }, iter: Iterations, print: ids => "[" + string.Join(", ", ids) + "]");

    [Test]
    public void StreamingDecoderOfWellFormedTextNeverEmitsReplacementCharacters() =>
        Text.Where(s => !s.Contains('\ufffd')).Sample(s =>
        {
            var streaming = Tok.CreateStreamingDecoder();
            foreach (var id in Tok.Encode(s))
                if (streaming.Append(id).Contains('\ufffd')) return false;
            return streaming.Flush().Length == 0;
        }, iter: Iterations, print: Show);

    /// <summary>The input as C# escapes, so control characters and surrogates are visible in a failure.</summary>
    private static string Show(string s)
    {
        var sb = new StringBuilder("\"");
        foreach (char c in s)
            sb.Append(c is >= ' ' and <= '~' and not '"' and not '\\' ? c.ToString() : $"\\u{(int)c:x4}");
        return sb.Append('"').ToString();
    }
}
