using System.Buffers;
using System.Text;

namespace Mamba.Tokenization;

/// <summary>
/// Canonical Unicode normalization (NFC and NFD) with built-in tables, so it does not depend on ICU: the
/// repository's programs run with globalization-invariant mode, where <see cref="string.Normalize()"/> leaves
/// text unchanged.
/// </summary>
internal static partial class UnicodeNormalizer
{
    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    private const byte FlagNotQuick = 1;

    private static readonly Dictionary<int, (int Offset, int Length)> Decompositions;
    private static readonly int[] DecompositionValues;
    private static readonly Dictionary<long, int> Compositions;
    private static readonly int[] CccFirst, CccLast;
    private static readonly byte[] CccValue;
    private static readonly byte[] BmpCcc = new byte[0x10000];
    /// <summary>BMP characters that fail the NFC quick check (non-zero class, changed by NFC, or may compose with what precedes).</summary>
    private static readonly byte[] BmpFlags = new byte[0x10000];
    private static readonly HashSet<int> AstralNotQuick = [];

    static UnicodeNormalizer()
    {
        var data = DecompositionData;
        Decompositions = new Dictionary<int, (int, int)>(2100);
        var values = new List<int>(data.Length);
        for (int i = 0; i < data.Length;)
        {
            int cp = data[i], n = data[i + 1];
            Decompositions[cp] = (values.Count, n);
            for (int k = 0; k < n; k++) values.Add(data[i + 2 + k]);
            i += 2 + n;
        }
        DecompositionValues = [.. values];

        var ccc = CombiningClassData;
        int ranges = ccc.Length / 3;
        CccFirst = new int[ranges]; CccLast = new int[ranges]; CccValue = new byte[ranges];
        for (int r = 0; r < ranges; r++)
        {
            CccFirst[r] = ccc[3 * r]; CccLast[r] = ccc[3 * r + 1]; CccValue[r] = (byte)ccc[3 * r + 2];
            for (int cp = CccFirst[r]; cp <= CccLast[r]; cp++) MarkNotQuick(cp);
            for (int cp = CccFirst[r]; cp <= Math.Min(CccLast[r], 0xFFFF); cp++) BmpCcc[cp] = CccValue[r];
        }

        var comp = CompositionData;
        Compositions = new Dictionary<long, int>(comp.Length / 3);
        var primaries = new HashSet<int>();
        for (int i = 0; i < comp.Length; i += 3)
        {
            Compositions[Pair(comp[i], comp[i + 1])] = comp[i + 2];
            primaries.Add(comp[i + 2]);
            MarkNotQuick(comp[i + 1]); // may combine with the preceding character
        }
        for (int v = VBase; v < VBase + VCount; v++) MarkNotQuick(v);
        for (int t = TBase + 1; t < TBase + TCount; t++) MarkNotQuick(t);
        // Characters NFC changes: decomposable ones that are not primary composites (singletons, exclusions, and
        // the multi-step composites whose NFD recomposes to them are primaries themselves).
        foreach (var cp in Decompositions.Keys)
        {
            if (!primaries.Contains(cp) && !RecomposesToItself(cp)) MarkNotQuick(cp);
        }
    }

    private static bool RecomposesToItself(int cp)
    {
        var (offset, length) = Decompositions[cp];
        var buffer = DecompositionValues.AsSpan(offset, length).ToArray();
        int n = Compose(buffer, buffer.Length);
        return n == 1 && buffer[0] == cp;
    }

    private static void MarkNotQuick(int cp)
    {
        if (cp <= 0xFFFF) BmpFlags[cp] |= FlagNotQuick;
        else AstralNotQuick.Add(cp);
    }

    private static long Pair(int a, int b) => ((long)a << 21) | (uint)b;

    /// <summary>Canonical combining class of a code point.</summary>
    public static int CombiningClass(int cp)
    {
        if (cp <= 0xFFFF) return BmpCcc[cp];
        int lo = 0, hi = CccFirst.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            if (cp < CccFirst[mid]) hi = mid - 1;
            else if (cp > CccLast[mid]) lo = mid + 1;
            else return CccValue[mid];
        }
        return 0;
    }

    /// <summary>True when <paramref name="s"/> is certainly in NFC (the quick check answers yes).</summary>
    public static bool IsQuickNfc(ReadOnlySpan<char> s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c < 0x300) continue;
            if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                if (AstralNotQuick.Contains(char.ConvertToUtf32(c, s[i + 1]))) return false;
                i++;
            }
            else if ((BmpFlags[c] & FlagNotQuick) != 0)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>
    /// Normalization Form C (canonical decomposition, then canonical composition). Only the stretches around
    /// characters that fail the quick check are rebuilt, each from the stable starter before it to the next one.
    /// </summary>
    public static string Nfc(string s)
    {
        int i = NextNotQuick(s, 0);
        if (i < 0) return s;
        var sb = new StringBuilder(s.Length + 16);
        int pos = 0;
        while (i >= 0)
        {
            int start = i;
            while (start > pos && !IsStableStarter(s, start)) start--;
            int end = i + 1;
            while (end < s.Length && !IsStableStarter(s, end)) end++;
            sb.Append(s, pos, start - pos);
            sb.Append(Normalize(s.Substring(start, end - start), compose: true));
            pos = end;
            i = NextNotQuick(s, end);
        }
        sb.Append(s, pos, s.Length - pos);
        return sb.ToString();
    }

    /// <summary>Index of the first character at or after <paramref name="from"/> that fails the NFC quick check, or -1.</summary>
    private static int NextNotQuick(string s, int from)
    {
        for (int i = from; i < s.Length; i++)
        {
            char c = s[i];
            if (c < 0x300) continue;
            if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                if (AstralNotQuick.Contains(char.ConvertToUtf32(c, s[i + 1]))) return i;
                i++;
            }
            else if ((BmpFlags[c] & FlagNotQuick) != 0)
            {
                return i;
            }
        }
        return -1;
    }

    /// <summary>
    /// Whether the character starting at <paramref name="k"/> passes the quick check: a starter that nothing before it
    /// combines with and that reordering never crosses, so normalization can restart there.
    /// </summary>
    private static bool IsStableStarter(string s, int k)
    {
        char c = s[k];
        if (char.IsLowSurrogate(c)) return false;
        if (char.IsHighSurrogate(c) && k + 1 < s.Length && char.IsLowSurrogate(s[k + 1]))
            return !AstralNotQuick.Contains(char.ConvertToUtf32(c, s[k + 1]));
        return (BmpFlags[c] & FlagNotQuick) == 0;
    }

    /// <summary>Normalization Form D (canonical decomposition).</summary>
    public static string Nfd(string s)
    {
        foreach (char c in s)
        {
            if (c >= 0xC0) return Normalize(s, compose: false);
        }
        return s;
    }

    private static string Normalize(string s, bool compose)
    {
        int[] buffer = ArrayPool<int>.Shared.Rent(s.Length * 4 + 8);
        try
        {
            int n = 0;
            for (int i = 0; i < s.Length; i++)
            {
                int cp = s[i];
                if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
                    cp = char.ConvertToUtf32(s[i], s[++i]);
                if (n + 4 > buffer.Length) Grow(ref buffer);
                if (cp >= SBase && cp < SBase + SCount)
                {
                    int sIndex = cp - SBase;
                    buffer[n++] = LBase + sIndex / NCount;
                    buffer[n++] = VBase + sIndex % NCount / TCount;
                    int t = sIndex % TCount;
                    if (t != 0) buffer[n++] = TBase + t;
                }
                else if (cp >= 0xC0 && Decompositions.TryGetValue(cp, out var d))
                {
                    while (n + d.Length > buffer.Length) Grow(ref buffer);
                    DecompositionValues.AsSpan(d.Offset, d.Length).CopyTo(buffer.AsSpan(n));
                    n += d.Length;
                }
                else
                {
                    buffer[n++] = cp;
                }
            }

            // Canonical ordering: stable sort of every run of non-starters by combining class.
            for (int i = 1; i < n; i++)
            {
                int cc = CombiningClass(buffer[i]);
                if (cc == 0) continue;
                int j = i;
                int cp = buffer[i];
                while (j > 0 && CombiningClass(buffer[j - 1]) > cc)
                {
                    buffer[j] = buffer[j - 1];
                    j--;
                }
                buffer[j] = cp;
            }

            if (compose) n = Compose(buffer, n);

            var sb = new StringBuilder(n + 8);
            for (int i = 0; i < n; i++)
            {
                int cp = buffer[i];
                if (cp <= 0xFFFF) sb.Append((char)cp);
                else sb.Append(char.ConvertFromUtf32(cp));
            }
            return sb.ToString();
        }
        finally
        {
            ArrayPool<int>.Shared.Return(buffer);
        }
    }

    private static void Grow(ref int[] buffer)
    {
        var bigger = ArrayPool<int>.Shared.Rent(buffer.Length * 2);
        buffer.AsSpan().CopyTo(bigger);
        ArrayPool<int>.Shared.Return(buffer);
        buffer = bigger;
    }

    /// <summary>Canonical composition in place of a canonically ordered, decomposed sequence; returns the new length.</summary>
    private static int Compose(int[] buffer, int n)
    {
        if (n == 0) return 0;
        int starterPos = 0;
        int starter = buffer[0];
        int lastClass = CombiningClass(starter);
        if (lastClass != 0) lastClass = 256; // a leading non-starter blocks everything after it
        int outLen = 1;
        for (int i = 1; i < n; i++)
        {
            int ch = buffer[i];
            int chClass = CombiningClass(ch);
            if ((lastClass < chClass || lastClass == 0) && TryCompose(starter, ch, out int composite))
            {
                buffer[starterPos] = composite;
                starter = composite;
                continue;
            }
            if (chClass == 0)
            {
                starterPos = outLen;
                starter = ch;
            }
            lastClass = chClass;
            buffer[outLen++] = ch;
        }
        return outLen;
    }

    private static bool TryCompose(int a, int b, out int composite)
    {
        if (a >= LBase && a < LBase + LCount && b >= VBase && b < VBase + VCount)
        {
            composite = SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
            return true;
        }
        if (a >= SBase && a < SBase + SCount && (a - SBase) % TCount == 0 && b > TBase && b < TBase + TCount)
        {
            composite = a + (b - TBase);
            return true;
        }
        return Compositions.TryGetValue(Pair(a, b), out composite);
    }
}
