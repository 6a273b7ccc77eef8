using System.Collections.Concurrent;
using System.Text;

namespace Mamba.Tokenization;

/// <summary>
/// Byte-level BPE: the ids of the 256 byte characters, the merge table (pair → rank and merged id) and a
/// bounded, thread-safe cache of word → ids. Merging follows the reference: repeatedly merge the adjacent pair
/// of lowest rank, the leftmost one on ties.
/// </summary>
internal sealed class BpeModel
{
    private readonly struct Merge(int rank, int newId)
    {
        public readonly int Rank = rank;
        public readonly int NewId = newId;
    }

    private const int CacheCapacity = 200_000;
    private const int MaxCachedWordLength = 256;
    private const int SimpleMergeLimit = 96;

    private readonly int[] _byteIds;
    private readonly int? _unkId;
    private readonly bool _ignoreMerges;
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabLookup;
    private readonly Dictionary<ulong, Merge> _merges;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheLookup;

    public BpeModel(Dictionary<string, int> vocab, List<(string Left, string Right)> merges, string? unkToken, bool ignoreMerges, string path)
    {
        _vocab = vocab;
        _vocabLookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _cacheLookup = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        _ignoreMerges = ignoreMerges;
        if (unkToken is not null)
        {
            if (!vocab.TryGetValue(unkToken, out int unk))
                throw new MambaFormatException($"unk_token '{unkToken}' is not in the vocabulary", path, "model.unk_token");
            _unkId = unk;
        }

        _byteIds = new int[256];
        for (int b = 0; b < 256; b++)
            _byteIds[b] = vocab.TryGetValue(ByteLevel.ByteToChar[b].ToString(), out int id) ? id : -1;

        _merges = new Dictionary<ulong, Merge>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (!vocab.TryGetValue(left, out int a))
                throw new MambaFormatException($"merge {rank} ('{left} {right}'): '{left}' is not in the vocabulary", path, $"model.merges[{rank}]");
            if (!vocab.TryGetValue(right, out int b))
                throw new MambaFormatException($"merge {rank} ('{left} {right}'): '{right}' is not in the vocabulary", path, $"model.merges[{rank}]");
            if (!vocab.TryGetValue(left + right, out int merged))
                throw new MambaFormatException($"merge {rank} ('{left} {right}'): '{left + right}' is not in the vocabulary", path, $"model.merges[{rank}]");
            _merges[Key(a, b)] = new Merge(rank, merged); // a repeated pair keeps its last rank, as the reference's map does
        }
    }

    /// <summary>Number of merges in the table.</summary>
    public int MergeCount => _merges.Count;

    private static ulong Key(int a, int b) => ((ulong)(uint)a << 32) | (uint)b;

    /// <summary>The ids of one pre-tokenized word (UTF-16 text, before the byte-level mapping).</summary>
    public int[] EncodeWord(ReadOnlySpan<char> word)
    {
        if (_cacheLookup.TryGetValue(word, out var cached))
            return cached;
        var ids = EncodeWordUncached(word);
        if (word.Length <= MaxCachedWordLength && _cache.Count < CacheCapacity)
            _cacheLookup.TryAdd(word, ids);
        return ids;
    }

    /// <summary>Encodes a word without the cache; <paramref name="forceHeap"/> takes the long-word merge path (tests compare both).</summary>
    internal int[] EncodeWordUncached(ReadOnlySpan<char> word, bool forceHeap = false)
    {
        int maxBytes = Encoding.UTF8.GetMaxByteCount(word.Length);
        byte[]? rented = null;
        Span<byte> bytes = maxBytes <= 1024 ? stackalloc byte[1024] : (rented = System.Buffers.ArrayPool<byte>.Shared.Rent(maxBytes));
        try
        {
            int nBytes = Encoding.UTF8.GetBytes(word, bytes);
            bytes = bytes[..nBytes];

            if (_ignoreMerges)
            {
                Span<char> mapped = nBytes <= 512 ? stackalloc char[nBytes] : new char[nBytes];
                for (int i = 0; i < nBytes; i++) mapped[i] = ByteLevel.ByteToChar[bytes[i]];
                if (_vocabLookup.TryGetValue(mapped, out int whole))
                    return [whole];
            }

            var symbols = new int[nBytes];
            int count = 0;
            for (int i = 0; i < nBytes; i++)
            {
                int id = _byteIds[bytes[i]];
                if (id >= 0)
                    symbols[count++] = id;
                else if (_unkId is int unk)
                    symbols[count++] = unk;
                // else: no unknown token, so the reference drops the byte
            }
            if (count <= SimpleMergeLimit && !forceHeap)
                return MergeSimple(symbols, count);
            return MergeWithHeap(symbols, count);
        }
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>Quadratic merge loop for short words: keeps the rank of every adjacent pair in an array.</summary>
    private int[] MergeSimple(int[] sym, int count)
    {
        if (count < 2) return count == sym.Length ? sym : sym[..count];
        Span<int> ranks = count <= 256 ? stackalloc int[count] : new int[count];
        Span<int> newIds = count <= 256 ? stackalloc int[count] : new int[count];
        for (int i = 0; i + 1 < count; i++) Lookup(sym[i], sym[i + 1], out ranks[i], out newIds[i]);
        while (count > 1)
        {
            int best = int.MaxValue, at = -1;
            for (int i = 0; i + 1 < count; i++)
            {
                if (ranks[i] < best) { best = ranks[i]; at = i; }
            }
            if (at < 0) break;
            sym[at] = newIds[at];
            int tail = count - at - 2;
            if (tail > 0)
            {
                Array.Copy(sym, at + 2, sym, at + 1, tail);
                ranks.Slice(at + 2, tail).CopyTo(ranks.Slice(at + 1));
                newIds.Slice(at + 2, tail).CopyTo(newIds.Slice(at + 1));
            }
            count--;
            if (at > 0) Lookup(sym[at - 1], sym[at], out ranks[at - 1], out newIds[at - 1]);
            if (at + 1 < count) Lookup(sym[at], sym[at + 1], out ranks[at], out newIds[at]);
            else ranks[at] = int.MaxValue;
        }
        return count == sym.Length ? sym : sym[..count];
    }

    private void Lookup(int a, int b, out int rank, out int newId)
    {
        if (_merges.TryGetValue(Key(a, b), out var m)) { rank = m.Rank; newId = m.NewId; }
        else { rank = int.MaxValue; newId = -1; }
    }

    /// <summary>The reference's priority-queue merge (by rank, then position) over a linked list, for long words.</summary>
    private int[] MergeWithHeap(int[] sym, int count)
    {
        if (count < 2) return count == sym.Length ? sym : sym[..count];
        var prev = new int[count];
        var next = new int[count];
        var alive = new bool[count];
        for (int i = 0; i < count; i++) { prev[i] = i - 1; next[i] = i + 1 < count ? i + 1 : -1; alive[i] = true; }
        var queue = new PriorityQueue<(int Pos, int NewId), long>();
        for (int i = 0; i + 1 < count; i++)
        {
            if (_merges.TryGetValue(Key(sym[i], sym[i + 1]), out var m))
                queue.Enqueue((i, m.NewId), ((long)m.Rank << 32) | (uint)i);
        }
        while (queue.TryDequeue(out var top, out _))
        {
            int pos = top.Pos;
            if (!alive[pos]) continue;
            int right = next[pos];
            if (right < 0) continue;
            if (!_merges.TryGetValue(Key(sym[pos], sym[right]), out var cur) || cur.NewId != top.NewId) continue;

            sym[pos] = top.NewId;
            alive[right] = false;
            int after = next[right];
            next[pos] = after;
            if (after >= 0) prev[after] = pos;

            int before = prev[pos];
            if (before >= 0 && _merges.TryGetValue(Key(sym[before], sym[pos]), out var mp))
                queue.Enqueue((before, mp.NewId), ((long)mp.Rank << 32) | (uint)before);
            if (after >= 0 && _merges.TryGetValue(Key(sym[pos], sym[after]), out var mn))
                queue.Enqueue((pos, mn.NewId), ((long)mn.Rank << 32) | (uint)pos);
        }
        var result = new List<int>(count);
        for (int i = 0; i >= 0; i = next[i]) result.Add(sym[i]);
        return [.. result];
    }

    /// <summary>Looks a token string up in the model vocabulary.</summary>
    public bool TryGetId(string token, out int id) => _vocab.TryGetValue(token, out id);

    /// <summary>The model vocabulary (token string → id).</summary>
    public IReadOnlyDictionary<string, int> Vocab => _vocab;
}
