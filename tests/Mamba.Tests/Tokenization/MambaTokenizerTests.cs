using System.Collections.Concurrent;
using System.Text;
using Mamba.Tokenization;

namespace Mamba.Tests.Tokenization;

public class MambaTokenizerTests
{
    private static MambaTokenizer Tok => TokenizerTestData.NeoX;

    [TestCaseSource(typeof(TokenizerTestData), nameof(TokenizerTestData.Cases))]
    public void ReferenceCaseEncodesToExactIds(TokenizerTestData.Case c)
    {
        Assert.That(Tok.Encode(c.Text), Is.EqualTo(c.Ids));
        Assert.That(Tok.CountTokens(c.Text), Is.EqualTo(c.Ids.Length));
    }

    [TestCaseSource(typeof(TokenizerTestData), nameof(TokenizerTestData.Cases))]
    public void ReferenceCaseDecodes(TokenizerTestData.Case c) =>
        Assert.That(Tok.Decode(c.Ids), Is.EqualTo(c.Decoded));

    [Test]
    public void VocabularyAndSpecialTokens()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Tok.VocabSize, Is.EqualTo(50277));
            Assert.That(Tok.EosTokenId, Is.EqualTo(0));
            Assert.That(Tok.BosTokenId, Is.EqualTo(0));
            Assert.That(Tok.PadTokenId, Is.EqualTo(1));
            Assert.That(Tok.TokenToId("<|endoftext|>"), Is.EqualTo(0));
            Assert.That(Tok.IdToToken(50276), Is.EqualTo("  "));
            Assert.That(Tok.IsSpecialToken(0), Is.True);
            Assert.That(Tok.IsSpecialToken(50276), Is.False);
        });
    }

    [Test]
    public void AddSpecialTokensAddsNothingForGptNeoX() =>
        Assert.That(Tok.Encode("Hello world", addSpecialTokens: true), Is.EqualTo(Tok.Encode("Hello world")));

    [Test]
    public void SkipSpecialTokensDropsEndOfText()
    {
        var ids = Tok.Encode("<|endoftext|>Next document<|padding|>");
        Assert.That(ids[0], Is.EqualTo(0));
        Assert.That(ids[^1], Is.EqualTo(1));
        Assert.That(Tok.Decode(ids, skipSpecialTokens: true), Is.EqualTo("Next document"));
        Assert.That(Tok.Decode(ids), Is.EqualTo("<|endoftext|>Next document<|padding|>"));
    }

    [Test]
    public void InputIsNormalizedToNfc()
    {
        Assert.That(Tok.Encode("cafe\u0301 A\u030A"), Is.EqualTo(Tok.Encode("café Å")));
        Assert.That(Tok.Decode(Tok.Encode("cafe\u0301")), Is.EqualTo("café"));
        Assert.That(Tok.Decode(Tok.Encode("\u1100\u1161\u11A8")), Is.EqualTo("각"));
        Assert.That(Tok.Decode(Tok.Encode("\u212B")), Is.EqualTo("Å"));
    }

    [Test]
    public void WhitespaceRunsUseTheAddedTokens()
    {
        // 25 spaces: the longest added run (24, id 50254) first, then the rest.
        var ids = Tok.Encode(new string(' ', 25) + "x");
        Assert.That(ids[0], Is.EqualTo(50254));
        Assert.That(Tok.Decode(ids), Is.EqualTo(new string(' ', 25) + "x"));
    }

    [Test]
    public void EmptyTextGivesNoIds()
    {
        Assert.That(Tok.Encode(""), Is.Empty);
        Assert.That(Tok.Decode([]), Is.EqualTo(""));
        Assert.That(Tok.CountTokens(""), Is.Zero);
    }

    [Test]
    public void RandomUnicodeRoundTripsToNfc()
    {
        var rng = new Random(20240601);
        for (int i = 0; i < 5000; i++)
        {
            string s = TokenizerTestData.RandomText(rng);
            var ids = Tok.Encode(s);
            string expected = UnicodeNormalizer.Nfc(s);
            string decoded = Tok.Decode(ids);
            if (decoded != expected)
                Assert.Fail($"round trip #{i} differs: {Escape(s)} -> {Escape(decoded)}, expected {Escape(expected)}");
            Assert.That(Tok.CountTokens(s), Is.EqualTo(ids.Count));
        }
    }

    [Test]
    public void LongWordMergesAlikeOnBothPaths()
    {
        var rng = new Random(7);
        for (int i = 0; i < 200; i++)
        {
            var sb = new StringBuilder();
            int n = rng.Next(2, 400);
            for (int k = 0; k < n; k++) sb.Append(rng.Next(3) == 0 ? "é中"[rng.Next(2)] : (char)('a' + rng.Next(4)));
            var word = sb.ToString();
            Assert.That(Tok.Model.EncodeWordUncached(word, forceHeap: true), Is.EqualTo(Tok.Model.EncodeWordUncached(word)), word);
        }
        var longText = new string('a', 5000) + " " + string.Concat(Enumerable.Repeat("ab", 3000));
        Assert.That(Tok.Decode(Tok.Encode(longText)), Is.EqualTo(longText));
    }

    [Test]
    public void EncodingIsThreadSafe()
    {
        var rng = new Random(3);
        var texts = Enumerable.Range(0, 400).Select(_ => TokenizerTestData.RandomText(rng)).ToArray();
        var fresh = MambaTokenizer.FromFile(TestFixtures.Tokenizer("tokenizer.json"));
        var expected = texts.Select(t => Tok.Encode(t)).ToArray();
        var failures = new ConcurrentBag<int>();
        Parallel.For(0, texts.Length * 4, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            int k = i % texts.Length;
            if (!fresh.Encode(texts[k]).SequenceEqual(expected[k])) failures.Add(k);
        });
        Assert.That(failures, Is.Empty);
    }

    [Test]
    public void DecodeRejectsNegativeIdsAndSkipsIdsBeyondTheVocabularyAsHuggingFaceTokenizersDoes()
    {
        // Issue 17: the bundled model and state-spaces/mamba-*-hf have 50,280 embedding rows and 50,277 tokenizer ids;
        // tokenizers' decode drops ids it has no token for, so a padded id decodes to nothing instead of failing.
        Assert.Throws<ArgumentOutOfRangeException>(() => Tok.Decode([-1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tok.CreateStreamingDecoder().Append(-1));
        Assert.That(Tok.Decode([5, Tok.VocabSize]), Is.EqualTo(Tok.Decode([5])));
        Assert.That(Tok.Decode([Tok.VocabSize, 5, int.MaxValue, Tok.VocabSize + 2]), Is.EqualTo(Tok.Decode([5])));
        var streaming = Tok.CreateStreamingDecoder();
        Assert.That(streaming.Append(int.MaxValue), Is.EqualTo(""));
        Assert.That(streaming.Append(Tok.VocabSize) + streaming.Append(5) + streaming.Flush(), Is.EqualTo(Tok.Decode([5])));
    }

    internal static string Escape(string s) =>
        string.Concat(s.EnumerateRunes().Select(r => r.Value is >= 0x20 and < 0x7F ? ((char)r.Value).ToString() : $"\\u{{{r.Value:X}}}"));
}
