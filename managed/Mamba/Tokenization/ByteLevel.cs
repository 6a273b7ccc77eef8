using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;

namespace Mamba.Tokenization;

/// <summary>
/// The GPT-2 byte-level scheme: the reversible byte ⇄ printable-character map and the GPT-2 split pattern
/// <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c>, implemented by hand on
/// code points (so letters and digits outside the BMP are classified like the reference's regex engine does).
/// </summary>
internal static class ByteLevel
{
    /// <summary>Byte value → the character that stands for it in byte-level vocabularies.</summary>
    public static readonly char[] ByteToChar = BuildByteToChar();

    /// <summary>Character → byte value, or -1 for characters that stand for no byte.</summary>
    public static readonly short[] CharToByte = BuildCharToByte();

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        var direct = new bool[256];
        for (int b = '!'; b <= '~'; b++) direct[b] = true;
        for (int b = 0xA1; b <= 0xAC; b++) direct[b] = true;
        for (int b = 0xAE; b <= 0xFF; b++) direct[b] = true;
        int n = 0;
        for (int b = 0; b < 256; b++)
            map[b] = direct[b] ? (char)b : (char)(256 + n++);
        return map;
    }

    private static short[] BuildCharToByte()
    {
        var map = new short[512];
        Array.Fill(map, (short)-1);
        for (int b = 0; b < 256; b++) map[ByteToChar[b]] = (short)b;
        return map;
    }

    /// <summary>
    /// The bytes a token string stands for, as the reference ByteLevel decoder computes them: every character
    /// mapped back to its byte, or, when one character is not part of the map, the token's own UTF-8 bytes.
    /// </summary>
    public static byte[] TokenToBytes(string token)
    {
        var bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            char c = token[i];
            int b = c < CharToByte.Length ? CharToByte[c] : -1;
            if (b < 0) return Encoding.UTF8.GetBytes(token);
            bytes[i] = (byte)b;
        }
        return bytes;
    }

    // ---- pre-tokenizer ------------------------------------------------------------------------------------

    private const byte ClassOther = 0, ClassLetter = 1, ClassNumber = 2, ClassSpace = 3;

    private static readonly byte[] AsciiClass = BuildAsciiClass();

    private static byte[] BuildAsciiClass()
    {
        var t = new byte[128];
        for (int c = 0; c < 128; c++)
        {
            t[c] = char.IsWhiteSpace((char)c) ? ClassSpace
                : char.IsAsciiLetter((char)c) ? ClassLetter
                : char.IsAsciiDigit((char)c) ? ClassNumber
                : ClassOther;
        }
        return t;
    }

    /// <summary>Classifies the code point at <paramref name="i"/>; <paramref name="len"/> gets its UTF-16 length.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte Classify(ReadOnlySpan<char> s, int i, out int len)
    {
        char c = s[i];
        if (c < 128)
        {
            len = 1;
            return AsciiClass[c];
        }
        return ClassifySlow(s, i, out len);
    }

    private static byte ClassifySlow(ReadOnlySpan<char> s, int i, out int len)
    {
        char c = s[i];
        if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
        {
            len = 2;
            return CategoryClass(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(c, s[i + 1])));
        }
        len = 1;
        // All White_Space characters (what \s matches in the reference) lie in the BMP.
        if (char.IsWhiteSpace(c)) return ClassSpace;
        return CategoryClass(CharUnicodeInfo.GetUnicodeCategory(c));
    }

    private static byte CategoryClass(UnicodeCategory cat) => cat switch
    {
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
            or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => ClassLetter,
        UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => ClassNumber,
        UnicodeCategory.SpaceSeparator or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator => ClassSpace,
        _ => ClassOther,
    };

    /// <summary>End (exclusive) of the run of code points of class <paramref name="cls"/> starting at <paramref name="i"/>.</summary>
    private static int RunEnd(ReadOnlySpan<char> s, int i, byte cls)
    {
        while (i < s.Length)
        {
            if (Classify(s, i, out int len) != cls) break;
            i += len;
        }
        return i;
    }

    /// <summary>
    /// Length of the next piece of the GPT-2 split pattern starting at <paramref name="i"/> (which must be
    /// inside <paramref name="s"/>). Every character belongs to some piece, so repeated calls cover the text.
    /// </summary>
    public static int NextPiece(ReadOnlySpan<char> s, int i)
    {
        char c = s[i];
        int n = s.Length;
        if (c == '\'' && i + 1 < n)
        {
            // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as in the reference pattern)
            char d = s[i + 1];
            if (d is 's' or 't' or 'm' or 'd') return 2;
            if (i + 2 < n)
            {
                char e = s[i + 2];
                if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) return 3;
            }
        }

        byte cls = Classify(s, i, out int len);
        if (c == ' ' && i + 1 < n)
        {
            // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+" with the optional space.
            byte next = Classify(s, i + 1, out _);
            if (next != ClassSpace)
                return RunEnd(s, i + 1, next) - i;
        }
        if (cls != ClassSpace)
            return RunEnd(s, i + len, cls) - i;

        // "\s+(?!\S)|\s+": the whole whitespace run when it ends the text, else all but its last character
        // (which then prefixes the following word), but never less than one character.
        int end = RunEnd(s, i + len, ClassSpace);
        if (end == n) return end - i;
        return end - i >= 2 ? end - i - 1 : end - i;
    }
}
