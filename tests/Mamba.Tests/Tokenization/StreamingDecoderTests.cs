using System.Text;
using Mamba.Tokenization;

namespace Mamba.Tests.Tokenization;

public class StreamingDecoderTests
{
    private static MambaTokenizer Tok => TokenizerTestData.NeoX;

    [Test]
    public void StreamedTextEqualsDecodeAndNeverHasReplacementCharacters()
    {
        var rng = new Random(11);
        for (int i = 0; i < 2000; i++)
        {
            string s = TokenizerTestData.RandomText(rng);
            var ids = Tok.Encode(s);
            var decoder = Tok.CreateStreamingDecoder();
            var sb = new StringBuilder();
            foreach (int id in ids)
            {
                string piece = decoder.Append(id);
                Assert.That(piece, Does.Not.Contain("\uFFFD"), () => $"#{i} {MambaTokenizerTests.Escape(s)}");
                sb.Append(piece);
            }
            sb.Append(decoder.Flush());
            Assert.That(sb.ToString(), Is.EqualTo(Tok.Decode(ids)));
        }
    }

    [Test]
    public void SplitAtEveryByteStillYieldsWholeCharacters()
    {
        // One single-byte token per UTF-8 byte: every multi-byte character is split at every possible point.
        string s = "é中🐍👨‍👩‍👧 안녕 \u0301x𝐀";
        // (Bytes that never occur in UTF-8, like 0xF5..0xFF, have no token in the GPT-NeoX vocabulary.)
        int ByteId(byte b) => Tok.TokenToId(ByteLevel.ByteToChar[b].ToString()) ?? throw new AssertionException($"no token for byte {b:X2}");
        var decoder = Tok.CreateStreamingDecoder();
        var sb = new StringBuilder();
        foreach (byte b in Encoding.UTF8.GetBytes(s))
        {
            string piece = decoder.Append(ByteId(b));
            Assert.That(piece, Does.Not.Contain("\uFFFD"));
            sb.Append(piece);
        }
        Assert.That(decoder.Flush(), Is.Empty);
        Assert.That(sb.ToString(), Is.EqualTo(s));
    }

    [Test]
    public void IncompleteCharacterIsHeldBackThenFlushedAsReplacement()
    {
        var bytes = Encoding.UTF8.GetBytes("🐍");
        var decoder = Tok.CreateStreamingDecoder();
        Assert.That(decoder.Append(Tok.TokenToId(ByteLevel.ByteToChar[bytes[0]].ToString())!.Value), Is.Empty);
        Assert.That(decoder.Append(Tok.TokenToId(ByteLevel.ByteToChar[bytes[1]].ToString())!.Value), Is.Empty);
        Assert.That(decoder.Flush(), Is.EqualTo("\uFFFD"));
        Assert.That(decoder.Append(Tok.Encode("ok")[0]), Is.EqualTo("ok"));
    }

    [Test]
    public void SkipsSpecialTokensWhenAsked()
    {
        var ids = Tok.Encode("<|endoftext|>Hi");
        var decoder = Tok.CreateStreamingDecoder(skipSpecialTokens: true);
        Assert.That(string.Concat(ids.Select(decoder.Append)) + decoder.Flush(), Is.EqualTo("Hi"));
    }
}
