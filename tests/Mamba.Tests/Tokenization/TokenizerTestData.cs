using System.Text;
using System.Text.Json;
using Mamba.Tokenization;

namespace Mamba.Tests.Tokenization;

/// <summary>Shared fixtures: the GPT-NeoX tokenizer (loaded once), its reference cases, random Unicode text.</summary>
public static class TokenizerTestData
{
    private static readonly Lazy<MambaTokenizer> Shared = new(() => MambaTokenizer.FromFile(TestFixtures.Tokenizer("tokenizer.json")));

    public static MambaTokenizer NeoX => Shared.Value;

    public sealed record Case(string Text, int[] Ids, string Decoded)
    {
        public override string ToString() => JsonSerializer.Serialize(Text);
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        var root = TestFixtures.Root;
        if (root is null)
        {
            yield return new TestCaseData(new Case("", [], "")).SetName("fixtures missing");
            yield break;
        }
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "tokenizer", "cases.json")));
        int i = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            var text = c.GetProperty("text").GetString()!;
            int[] ids = [.. c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32())];
            yield return new TestCaseData(new Case(text, ids, c.GetProperty("decoded").GetString()!)).SetName($"case {i++}: {Abbrev(text)}");
        }
    }

    private static string Abbrev(string s)
    {
        var json = JsonSerializer.Serialize(s);
        return json.Length > 40 ? json[..40] + "…" : json;
    }

    private static readonly string[] Emoji = ["🐍", "🚀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🤖", "😀", "🧪", "✨"];
    private static readonly string[] Words = ["the", "Mamba", "state", "space", "model", "don't", "it's", "we're", "I'll", "you've", "I'm", "he'd", "HELLO", "x", "_", "foo_bar", "CamelCase"];
    private static readonly string[] Other = ["Ω", "ß", "æ", "œ", "İ", "ﬁ", "Å", "µ", "½", "²", "€", "©", "→", "∑", "¿", "¡", "—", "…", "\u00A0", "\u3000", "\u2028", "\u200B", "\u200D", "\u0085", "\u000B", "\u000C", "\r\n", "\u00AD", "ℌ", "Ⅻ"];

    /// <summary>A random string of words, whitespace runs, combining marks, emoji, CJK, Hangul, digits and symbols.</summary>
    public static string RandomText(Random rng)
    {
        var sb = new StringBuilder();
        int pieces = rng.Next(1, 24);
        for (int p = 0; p < pieces; p++)
        {
            switch (rng.Next(16))
            {
                case 0: sb.Append(' ', rng.Next(1, 40)); break;
                case 1: sb.Append("\n\t \r"[rng.Next(4)], rng.Next(1, 4)); break;
                case 2: // letters followed by combining marks (compose or not)
                    sb.Append("aeiouAEIOUnscyzgk<=>"[rng.Next(20)]);
                    for (int k = rng.Next(1, 4); k > 0; k--) sb.Append((char)rng.Next(0x300, 0x370));
                    break;
                case 3: sb.Append((char)rng.Next(0x300, 0x370)); break; // stray combining mark
                case 4: sb.Append(Emoji[rng.Next(Emoji.Length)]); break;
                case 5: for (int k = rng.Next(1, 8); k > 0; k--) sb.Append((char)rng.Next(0x4E00, 0x9FFF)); break; // CJK
                case 6: for (int k = rng.Next(1, 6); k > 0; k--) sb.Append((char)rng.Next(0xAC00, 0xD7A4)); break; // Hangul syllables
                case 7: sb.Append((char)rng.Next(0x1100, 0x1113)).Append((char)rng.Next(0x1161, 0x1176)); if (rng.Next(2) == 0) sb.Append((char)rng.Next(0x11A8, 0x11C3)); break; // conjoining jamo
                case 8: sb.Append(rng.Next(0, 100000)); break;
                case 9: sb.Append("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"[rng.Next(32)], rng.Next(1, 3)); break;
                case 10: sb.Append(Words[rng.Next(Words.Length)]); break;
                case 11: sb.Append(Other[rng.Next(Other.Length)]); break;
                case 12: sb.Append(char.ConvertFromUtf32(rng.Next(2) == 0 ? rng.Next(0x1D400, 0x1D4FF) : rng.Next(0x20000, 0x2A6DF))); break; // astral letters
                case 13: sb.Append((char)rng.Next(0x0900, 0x097F)).Append((char)rng.Next(0x0590, 0x06FF)); break; // Devanagari, Hebrew/Arabic
                case 14: sb.Append(" <|endoftext|>x"); break; // special token, followed by a letter so NFC across it cannot differ
                default: sb.Append((char)rng.Next(0x20, 0x7F)); break;
            }
        }
        return sb.ToString();
    }
}
