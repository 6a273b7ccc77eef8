using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Mamba.Tokenization;

namespace Mamba.Training;

/// <summary>
/// The training corpus as one stream of token ids in a binary cache file (<c>&lt;output&gt;/data-cache/tokens.bin</c>,
/// int32 little-endian): every document's tokens followed by EOS, in the order of the files. A first pass tokenizes
/// the files piece by piece and appends to the cache; sequences are then read by offset, so neither the text nor the
/// tokens are ever held whole in memory. The cache is reused when its fingerprint (files, sizes, times, tokenizer,
/// text field, EOS) matches, so a resumed run does not tokenize again.
/// <para>
/// Packing: sequence i is tokens [i·L, (i+1)·L) with L = max_length; labels are the same ids (the model shifts), so a
/// sequence has L − 1 targets; the tail shorter than L is dropped. Validation: with fraction f &gt; 0, every k-th
/// sequence (k = max(2, round(1/f)), indices k−1, 2k−1, …) is held out; the rest train.
/// </para>
/// </summary>
internal sealed class TokenDataset : IDisposable
{
    private readonly FileStream _stream;
    private readonly int[] _train;
    private readonly int[] _validation;

    private TokenDataset(string path, long tokenCount, int maxLength, double validationSplit)
    {
        CachePath = path;
        TokenCount = tokenCount;
        MaxLength = maxLength;
        long sequences = tokenCount / maxLength;
        if (sequences > int.MaxValue) throw new MambaFormatException($"{sequences} sequences are more than this trainer indexes", path);
        int k = validationSplit > 0 ? Math.Max(2, (int)Math.Round(1 / validationSplit)) : 0;
        var train = new List<int>();
        var validation = new List<int>();
        for (int i = 0; i < sequences; i++)
            (k > 0 && i % k == k - 1 ? validation : train).Add(i);
        _train = train.ToArray();
        _validation = validation.ToArray();
        _stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.RandomAccess);
    }

    /// <summary>The cache file.</summary>
    public string CachePath { get; }

    /// <summary>Tokens in the cache.</summary>
    public long TokenCount { get; }

    /// <summary>Tokens per sequence.</summary>
    public int MaxLength { get; }

    /// <summary>Sequence indices used for training.</summary>
    public IReadOnlyList<int> TrainSequences => _train;

    /// <summary>Sequence indices held out for evaluation.</summary>
    public IReadOnlyList<int> ValidationSequences => _validation;

    /// <summary>
    /// Tokenizes <paramref name="files"/> into the cache under <paramref name="cacheDir"/> (or reuses it) and opens it.
    /// Throws <see cref="MambaFormatException"/> when the data cannot fill one training sequence.
    /// </summary>
    public static TokenDataset Build(IReadOnlyList<string> files, string textField, MambaTokenizer tokenizer, string tokenizerPath,
        int eosTokenId, int maxLength, double validationSplit, string cacheDir, CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(cacheDir);
        var binPath = Path.Combine(cacheDir, "tokens.bin");
        var metaPath = Path.Combine(cacheDir, "tokens.json");
        var fingerprint = Fingerprint(files, textField, tokenizerPath, eosTokenId);
        long count = TryReuse(binPath, metaPath, fingerprint) ?? Tokenize(files, textField, tokenizer, eosTokenId, binPath, metaPath, fingerprint, cancellationToken);
        var dataset = new TokenDataset(binPath, count, maxLength, validationSplit);
        if (dataset._train.Length == 0)
        {
            dataset.Dispose();
            throw new MambaFormatException(count < maxLength
                ? $"the data has {count} tokens, fewer than one sequence of max_length {maxLength}: add text or lower --max-length"
                : $"the data has {count} tokens, {count / maxLength} sequence(s) of max_length {maxLength}, none left for training after the validation split",
                files.Count == 1 ? files[0] : string.Join(", ", files));
        }
        return dataset;
    }

    /// <summary>Reads sequence <paramref name="index"/> into row <paramref name="row"/> of <paramref name="destination"/>.</summary>
    public void ReadSequence(int index, int[,] destination, int row)
    {
        var bytes = new byte[MaxLength * sizeof(int)];
        lock (_stream)
        {
            _stream.Position = (long)index * MaxLength * sizeof(int);
            _stream.ReadExactly(bytes);
        }
        for (int t = 0; t < MaxLength; t++) destination[row, t] = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(t * sizeof(int)));
    }

    /// <summary>A batch [indices.Count, MaxLength] of the given sequences.</summary>
    public int[,] ReadBatch(IReadOnlyList<int> indices)
    {
        var batch = new int[indices.Count, MaxLength];
        for (int b = 0; b < indices.Count; b++) ReadSequence(indices[b], batch, b);
        return batch;
    }

    /// <inheritdoc />
    public void Dispose() => _stream.Dispose();

    private static string Fingerprint(IReadOnlyList<string> files, string textField, string tokenizerPath, int eos)
    {
        var text = new StringBuilder();
        text.Append("v1|").Append(textField).Append('|').Append(eos).Append('|');
        foreach (var f in files)
        {
            var info = new FileInfo(f);
            if (!info.Exists) throw new FileNotFoundException($"data file not found: {f}", f);
            text.Append(info.FullName).Append('|').Append(info.Length).Append('|').Append(info.LastWriteTimeUtc.Ticks).Append('|');
        }
        text.Append(Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(tokenizerPath))));
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    private static long? TryReuse(string binPath, string metaPath, string fingerprint)
    {
        if (!File.Exists(binPath) || !File.Exists(metaPath)) return null;
        try
        {
            var meta = JsonNode.Parse(File.ReadAllText(metaPath))!.AsObject();
            long tokens = meta["tokens"]!.GetValue<long>();
            if (meta["fingerprint"]?.GetValue<string>() != fingerprint || new FileInfo(binPath).Length != tokens * sizeof(int)) return null;
            return tokens;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException or FormatException)
        {
            return null;
        }
    }

    private static long Tokenize(IReadOnlyList<string> files, string textField, MambaTokenizer tokenizer, int eos,
        string binPath, string metaPath, string fingerprint, CancellationToken cancellationToken)
    {
        File.Delete(metaPath);
        var temporary = binPath + ".tmp";
        long count = 0;
        using (var output = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
        {
            var scratch = new byte[sizeof(int)];
            void Put(int id)
            {
                BinaryPrimitives.WriteInt32LittleEndian(scratch, id);
                output.Write(scratch);
                count++;
            }
            foreach (var file in files)
                foreach (var piece in DocumentReader.Read(file, textField, cancellationToken))
                {
                    foreach (var id in tokenizer.Encode(piece.Text)) Put(id);
                    if (piece.EndOfDocument) Put(eos);
                }
        }
        File.Move(temporary, binPath, overwrite: true);
        var meta = new JsonObject { ["fingerprint"] = fingerprint, ["tokens"] = count, ["dtype"] = "int32", ["files"] = new JsonArray(files.Select(f => (JsonNode?)Path.GetFullPath(f)).ToArray()) };
        File.WriteAllText(metaPath, meta.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        return count;
    }
}
