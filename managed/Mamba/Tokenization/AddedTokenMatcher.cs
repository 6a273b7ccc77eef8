using System.Globalization;

namespace Mamba.Tokenization;

/// <summary>One entry of tokenizer.json's <c>added_tokens</c>.</summary>
internal sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord, bool LStrip, bool RStrip, bool Normalized);

/// <summary>A piece of text after added-token extraction: either plain text (<see cref="TokenId"/> &lt; 0) or one added token.</summary>
internal readonly record struct Segment(int Start, int Length, int TokenId);

/// <summary>
/// Finds added tokens in text the way the reference's added vocabulary does: non-overlapping
/// leftmost-longest matches, with the <c>single_word</c>, <c>lstrip</c> and <c>rstrip</c> rules applied to each.
/// </summary>
internal sealed class AddedTokenMatcher
{
    private sealed class Node
    {
        public Dictionary<char, Node>? Children;
        public int Token = -1;
    }

    private readonly Node _root = new();
    private readonly AddedToken[] _tokens;
    private readonly string[] _patterns;
    private readonly ulong[] _firstChars = new ulong[65536 / 64];

    /// <summary>Builds a matcher over <paramref name="tokens"/>; <paramref name="patterns"/> is the text to find for each (normalized when the token is).</summary>
    public AddedTokenMatcher(IReadOnlyList<AddedToken> tokens, IReadOnlyList<string> patterns)
    {
        _tokens = [.. tokens];
        _patterns = [.. patterns];
        for (int t = 0; t < _tokens.Length; t++)
        {
            string p = _patterns[t];
            if (p.Length == 0) continue;
            var node = _root;
            foreach (char c in p)
            {
                node.Children ??= [];
                if (!node.Children.TryGetValue(c, out var child))
                    node.Children[c] = child = new Node();
                node = child;
            }
            if (node.Token < 0) node.Token = t; // the first token with a given text wins
            _firstChars[p[0] >> 6] |= 1UL << (p[0] & 63);
        }
    }

    /// <summary>True when there is nothing to match.</summary>
    public bool IsEmpty => _root.Children is null;

    /// <summary>Leftmost-longest match starting at or after <paramref name="from"/>.</summary>
    private bool FindNext(ReadOnlySpan<char> s, int from, out int start, out int end, out int token)
    {
        for (int i = from; i < s.Length; i++)
        {
            char c = s[i];
            if ((_firstChars[c >> 6] & (1UL << (c & 63))) == 0) continue;
            var node = _root;
            int best = -1, bestEnd = -1;
            for (int j = i; j < s.Length; j++)
            {
                if (node.Children is null || !node.Children.TryGetValue(s[j], out node)) break;
                if (node.Token >= 0) { best = node.Token; bestEnd = j + 1; }
            }
            if (best >= 0)
            {
                start = i; end = bestEnd; token = best;
                return true;
            }
        }
        start = end = token = -1;
        return false;
    }

    /// <summary>Splits <paramref name="s"/> into text and added-token segments (offsets relative to <paramref name="s"/>).</summary>
    public void Split(ReadOnlySpan<char> s, List<Segment> output)
    {
        int startOffset = 0, searchFrom = 0;
        while (FindNext(s, searchFrom, out int start, out int stop, out int t))
        {
            searchFrom = stop;
            if (start < startOffset) continue; // swallowed by the previous token's rstrip
            var token = _tokens[t];
            if (token.SingleWord)
            {
                bool startSpace = start == 0 || !IsWordChar(s, start, backwards: true);
                bool stopSpace = stop == s.Length || !IsWordChar(s, stop, backwards: false);
                if (!startSpace || !stopSpace) continue;
            }
            if (token.LStrip)
            {
                int newStart = start;
                while (newStart > 0 && char.IsWhiteSpace(s[newStart - 1])) newStart--;
                start = Math.Max(newStart, startOffset);
            }
            if (token.RStrip)
            {
                while (stop < s.Length && char.IsWhiteSpace(s[stop])) stop++;
            }
            if (start > startOffset) output.Add(new Segment(startOffset, start - startOffset, -1));
            output.Add(new Segment(start, stop - start, token.Id));
            startOffset = stop;
        }
        if (startOffset < s.Length) output.Add(new Segment(startOffset, s.Length - startOffset, -1));
    }

    /// <summary>Whether the code point just before (or at) <paramref name="at"/> is a regex <c>\w</c> character.</summary>
    private static bool IsWordChar(ReadOnlySpan<char> s, int at, bool backwards)
    {
        int cp;
        if (backwards)
        {
            char c = s[at - 1];
            cp = char.IsLowSurrogate(c) && at >= 2 && char.IsHighSurrogate(s[at - 2]) ? char.ConvertToUtf32(s[at - 2], c) : c;
        }
        else
        {
            char c = s[at];
            cp = char.IsHighSurrogate(c) && at + 1 < s.Length && char.IsLowSurrogate(s[at + 1]) ? char.ConvertToUtf32(c, s[at + 1]) : c;
        }
        if (cp == '_' || cp == 0x200C || cp == 0x200D) return true;
        return CharUnicodeInfo.GetUnicodeCategory(cp) switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter
                or UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark
                or UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber
                or UnicodeCategory.ConnectorPunctuation => true,
            _ => false,
        };
    }
}
