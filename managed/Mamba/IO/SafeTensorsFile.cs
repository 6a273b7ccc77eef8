using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Unicode;

namespace Mamba.IO;

/// <summary>
/// One tensor entry of a safetensors header.
/// </summary>
/// <param name="Name">The tensor name (the header key).</param>
/// <param name="DType">The element type exactly as the file spells it: F32, F16, BF16, I64, I32, ...</param>
/// <param name="Shape">The dimensions, outermost first; empty for a scalar.</param>
/// <param name="DataStart">First byte of the tensor, relative to the start of the data section.</param>
/// <param name="DataEnd">One past the last byte of the tensor, relative to the start of the data section.</param>
public sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long DataStart, long DataEnd)
{
    /// <summary>The number of elements (the product of <see cref="Shape"/>; 1 for a scalar).</summary>
    public long ElementCount => SafeTensorsDTypes.ElementCount(Shape);

    /// <summary>The number of bytes the tensor occupies.</summary>
    public long ByteLength => DataEnd - DataStart;
}

/// <summary>The element types the safetensors format defines, with their sizes.</summary>
public static class SafeTensorsDTypes
{
    // Sub-byte types (F4, F6_*) are deliberately absent: their byte length is not count × size and no Mamba checkpoint uses them.
    private static readonly Dictionary<string, int> Sizes = new(StringComparer.Ordinal)
    {
        ["BOOL"] = 1, ["U8"] = 1, ["I8"] = 1, ["F8_E5M2"] = 1, ["F8_E4M3"] = 1, ["F8_E8M0"] = 1,
        ["I16"] = 2, ["U16"] = 2, ["F16"] = 2, ["BF16"] = 2,
        ["I32"] = 4, ["U32"] = 4, ["F32"] = 4,
        ["I64"] = 8, ["U64"] = 8, ["F64"] = 8,
    };

    /// <summary>Bytes per element of <paramref name="dtype"/>, or 0 when it is not a known safetensors dtype.</summary>
    public static int SizeOf(string dtype) => Sizes.TryGetValue(dtype, out var size) ? size : 0;

    /// <summary>True for the floating-point dtypes <see cref="SafeTensorsFile.ReadFloat32(string)"/> can upcast: F32, F16, BF16.</summary>
    public static bool IsReadableAsFloat32(string dtype) => dtype is "F32" or "F16" or "BF16" or "F64";

    /// <summary>The product of <paramref name="shape"/> (1 for a scalar); throws <see cref="OverflowException"/> on overflow.</summary>
    public static long ElementCount(ReadOnlySpan<long> shape)
    {
        long count = 1;
        foreach (var d in shape)
            count = checked(count * d);
        return count;
    }

    /// <summary>The safetensors spelling of a <see cref="Mamba.DType"/>: F32, BF16, F16.</summary>
    public static string ToSafeTensorsName(this DType dtype) => dtype switch
    {
        DType.F32 => "F32",
        DType.BF16 => "BF16",
        _ => "F16",
    };
}

/// <summary>
/// A read-only, memory-mapped safetensors file (an 8-byte little-endian header length, a UTF-8 JSON header,
/// then the raw tensor bytes). Every header field is validated on <see cref="Open"/>, so a hostile or truncated
/// file fails with a <see cref="MambaFormatException"/> there rather than later. Reads are thread-safe;
/// <see cref="Dispose"/> is not concurrent with reads.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>Largest accepted JSON header (the reference implementation uses the same 100 MB limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base;           // start of the mapped file
    private readonly long _dataOffset; // 8 + header length
    private readonly long _fileLength;
    private readonly Dictionary<string, SafeTensorInfo> _tensors;
    private bool _disposed;

    /// <summary>The path the file was opened from.</summary>
    public string FilePath { get; }

    /// <summary>The tensors, by name.</summary>
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors => _tensors;

    /// <summary>The optional <c>__metadata__</c> string map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Length in bytes of the data section (the file after the header).</summary>
    public long DataLength => _fileLength - _dataOffset;

    private SafeTensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePtr, long fileLength,
        long dataOffset, Dictionary<string, SafeTensorInfo> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        FilePath = path;
        _map = map;
        _view = view;
        _base = basePtr;
        _fileLength = fileLength;
        _dataOffset = dataOffset;
        _tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>Opens and validates a safetensors file.</summary>
    /// <exception cref="MambaFormatException">The file is missing, unreadable, truncated, malformed or inconsistent.</exception>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        JsonFile.RefuseSpecialFile(path, "safetensors file");
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new MambaFormatException($"cannot open safetensors file: {e.Message}", path, null, e);
        }

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        bool acquired = false;
        try
        {
            long fileLength = stream.Length;
            // Checked before mapping: an empty file cannot be mapped, and anything under 8 bytes has no header length.
            if (fileLength < 8)
                throw new MambaFormatException($"file is {fileLength} bytes long, too short for a safetensors header (8 bytes)", path);

            map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* ptr = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref ptr);
            acquired = true;
            ptr += view.PointerOffset;

            ulong headerLength = BitConverter.IsLittleEndian ? *(ulong*)ptr : BinaryPrimitives.ReverseEndianness(*(ulong*)ptr);
            if (headerLength > MaxHeaderBytes)
                throw new MambaFormatException($"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit", path);
            if (headerLength > (ulong)(fileLength - 8))
                throw new MambaFormatException($"header length {headerLength} runs past the end of the {fileLength}-byte file (truncated?)", path);

            long dataOffset = 8 + (long)headerLength;
            var header = new ReadOnlySpan<byte>(ptr + 8, (int)headerLength);
            var (tensors, metadata) = ParseHeader(header, fileLength - dataOffset, path);
            return new SafeTensorsFile(path, map, view, ptr - view.PointerOffset, fileLength, dataOffset, tensors, metadata);
        }
        catch (Exception e)
        {
            if (acquired)
                view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map?.Dispose();
            stream.Dispose();
            if (e is MambaFormatException)
                throw;
            if (e is IOException or UnauthorizedAccessException)
                throw new MambaFormatException($"cannot read safetensors file: {e.Message}", path, null, e);
            throw;
        }
    }

    private static (Dictionary<string, SafeTensorInfo>, IReadOnlyDictionary<string, string>) ParseHeader(
        ReadOnlySpan<byte> header, long dataLength, string path)
    {
        if (!Utf8.IsValid(header))
            throw new MambaFormatException("header is not valid UTF-8", path);

        JsonDocument doc;
        try
        {
            // JsonDocument needs memory it may keep; the header is at most 100 MB and already bounded by the file length.
            doc = JsonDocument.Parse(header.ToArray(), new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new MambaFormatException($"header is not valid JSON: {e.Message}", path, null, e);
        }

        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new MambaFormatException($"header must be a JSON object, not {root.ValueKind}", path);
            // Every name and string must be valid UTF-16 (an escaped unpaired surrogate is valid JSON that System.Text.Json
            // will not return as a string); duplicates are reported below with their own messages.
            JsonFile.CheckTree(root, (entry, message) => new MambaFormatException($"header: {message}", path, entry.Length == 0 ? null : entry), duplicates: false);

            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            IReadOnlyDictionary<string, string> metadata = new Dictionary<string, string>();
            bool sawMetadata = false;
            foreach (var prop in root.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (sawMetadata)
                        throw new MambaFormatException("header has two __metadata__ entries", path, "__metadata__");
                    sawMetadata = true;
                    metadata = ParseMetadata(prop.Value, path);
                    continue;
                }
                if (tensors.ContainsKey(prop.Name))
                    throw new MambaFormatException("tensor is listed twice in the header", path, prop.Name);
                tensors.Add(prop.Name, ParseEntry(prop.Name, prop.Value, dataLength, path));
            }

            CheckLayout(tensors.Values, dataLength, path);
            return (tensors, metadata);
        }
    }

    private static Dictionary<string, string> ParseMetadata(JsonElement value, string path)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new MambaFormatException($"__metadata__ must be an object of strings, not {value.ValueKind}", path, "__metadata__");
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in value.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
                throw new MambaFormatException($"__metadata__ value '{p.Name}' must be a string, not {p.Value.ValueKind}", path, "__metadata__");
            result[p.Name] = p.Value.GetString()!;
        }
        return result;
    }

    private static SafeTensorInfo ParseEntry(string name, JsonElement entry, long dataLength, string path)
    {
        if (entry.ValueKind != JsonValueKind.Object)
            throw new MambaFormatException($"tensor entry must be an object, not {entry.ValueKind}", path, name);

        if (!entry.TryGetProperty("dtype", out var dtypeEl))
            throw new MambaFormatException("tensor entry has no 'dtype'", path, name);
        if (dtypeEl.ValueKind != JsonValueKind.String)
            throw new MambaFormatException($"'dtype' must be a string, not {dtypeEl.ValueKind}", path, name);
        string dtype = dtypeEl.GetString()!;
        int elementSize = SafeTensorsDTypes.SizeOf(dtype);
        if (elementSize == 0)
            throw new MambaFormatException($"unknown dtype '{Truncate(dtype)}'", path, name);

        if (!entry.TryGetProperty("shape", out var shapeEl))
            throw new MambaFormatException("tensor entry has no 'shape'", path, name);
        if (shapeEl.ValueKind != JsonValueKind.Array)
            throw new MambaFormatException($"'shape' must be an array, not {shapeEl.ValueKind}", path, name);
        int rank = shapeEl.GetArrayLength();
        if (rank > 64)
            throw new MambaFormatException($"'shape' has {rank} dimensions (at most 64 are accepted)", path, name);
        var shape = new long[rank];
        int i = 0;
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim))
                throw new MambaFormatException($"shape[{i}] must be an integer, not '{Truncate(d.GetRawText())}'", path, name);
            if (dim < 0)
                throw new MambaFormatException($"shape[{i}] is negative ({dim})", path, name);
            shape[i++] = dim;
        }

        long count, byteLength;
        try
        {
            count = SafeTensorsDTypes.ElementCount(shape);
            byteLength = checked(count * elementSize);
        }
        catch (OverflowException)
        {
            throw new MambaFormatException($"shape [{string.Join(", ", shape)}] has too many elements", path, name);
        }

        if (!entry.TryGetProperty("data_offsets", out var offsetsEl))
            throw new MambaFormatException("tensor entry has no 'data_offsets'", path, name);
        if (offsetsEl.ValueKind != JsonValueKind.Array || offsetsEl.GetArrayLength() != 2)
            throw new MambaFormatException("'data_offsets' must be an array of two integers", path, name);
        var begin = offsetsEl[0];
        var end = offsetsEl[1];
        if (begin.ValueKind != JsonValueKind.Number || !begin.TryGetInt64(out long start) ||
            end.ValueKind != JsonValueKind.Number || !end.TryGetInt64(out long stop))
            throw new MambaFormatException("'data_offsets' must be an array of two integers", path, name);
        if (start < 0 || stop < start)
            throw new MambaFormatException($"data_offsets [{start}, {stop}] must be non-negative and increasing", path, name);
        if (stop > dataLength)
            throw new MambaFormatException($"data_offsets [{start}, {stop}] run past the {dataLength}-byte data section (truncated?)", path, name);
        if (stop - start != byteLength)
            throw new MambaFormatException(
                $"data_offsets [{start}, {stop}] hold {stop - start} bytes but shape [{string.Join(", ", shape)}] of {dtype} needs {byteLength}",
                path, name);

        return new SafeTensorInfo(name, dtype, shape, start, stop);
    }

    /// <summary>Tensors must tile the data section exactly: no overlap, no gap, no trailing bytes (as the reference implementation requires).</summary>
    private static void CheckLayout(IEnumerable<SafeTensorInfo> tensors, long dataLength, string path)
    {
        var sorted = tensors.OrderBy(t => t.DataStart).ThenBy(t => t.DataEnd).ToList();
        long expected = 0;
        SafeTensorInfo? previous = null;
        foreach (var t in sorted)
        {
            if (t.DataStart < expected)
                throw new MambaFormatException(
                    $"data_offsets [{t.DataStart}, {t.DataEnd}] overlap tensor '{previous!.Name}' [{previous.DataStart}, {previous.DataEnd}]", path, t.Name);
            if (t.DataStart > expected)
                throw new MambaFormatException(
                    $"data_offsets [{t.DataStart}, {t.DataEnd}] leave a gap of {t.DataStart - expected} unused bytes before the tensor", path, t.Name);
            expected = t.DataEnd;
            previous = t;
        }
        if (expected != dataLength)
            throw new MambaFormatException(
                $"tensors cover {expected} bytes but the data section holds {dataLength} (extra or missing bytes)", path);
    }

    private static string Truncate(string s) => s.Length <= 64 ? s : s[..64] + "...";

    /// <summary>True when the file holds a tensor called <paramref name="name"/>.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The header entry of <paramref name="name"/>.</summary>
    /// <exception cref="MambaFormatException">No such tensor.</exception>
    public SafeTensorInfo GetInfo(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!_tensors.TryGetValue(name, out var info))
            throw new MambaFormatException("no such tensor in the file", FilePath, name);
        return info;
    }

    /// <summary>Reads a F32, F16 or BF16 tensor as float32 (16-bit types are upcast exactly).</summary>
    /// <exception cref="MambaFormatException">No such tensor, or its dtype is not a float type, or it is too large for one array.</exception>
    public float[] ReadFloat32(string name)
    {
        var info = GetFloatInfo(name);
        long count = info.ElementCount;
        if (count > Array.MaxLength)
            throw new MambaFormatException($"tensor has {count} elements, more than one array can hold", FilePath, name);
        var result = GC.AllocateUninitializedArray<float>((int)count);
        ReadFloat32(name, result);
        return result;
    }

    /// <summary>Reads a F32, F16, BF16 or F64 tensor as float32 (F64 rounded to nearest) into <paramref name="destination"/>, whose length must equal the element count.</summary>
    /// <exception cref="MambaFormatException">No such tensor, or its dtype is not a float type.</exception>
    /// <exception cref="ArgumentException"><paramref name="destination"/> has the wrong length.</exception>
    public void ReadFloat32(string name, Span<float> destination)
    {
        var info = GetFloatInfo(name);
        long count = info.ElementCount;
        if (destination.Length != count)
            throw new ArgumentException($"destination holds {destination.Length} floats but tensor '{name}' has {count}", nameof(destination));
        byte* src = DataPointer(info);
        // Chunked so no span over the mapped bytes exceeds int.MaxValue bytes.
        const int Chunk = 1 << 24;
        for (long done = 0; done < count; done += Chunk)
        {
            int n = (int)Math.Min(Chunk, count - done);
            var dst = destination.Slice((int)done, n);
            switch (info.DType)
            {
                case "F32":
                    new ReadOnlySpan<float>(src + done * 4, n).CopyTo(dst);
                    break;
                case "BF16":
                    Bf16ToFloat32(new ReadOnlySpan<ushort>(src + done * 2, n), dst);
                    break;
                case "F64":
                    // Rounded to nearest (PEFT saves adapters of a float64 model as F64).
                    var wide = new ReadOnlySpan<double>(src + done * 8, n);
                    for (int i = 0; i < n; i++) dst[i] = (float)wide[i];
                    break;
                default:
                    TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src + done * 2, n), dst);
                    break;
            }
        }
    }

    /// <summary>Reads an I64 or I32 tensor as 64-bit integers.</summary>
    /// <exception cref="MambaFormatException">No such tensor, or its dtype is not I64/I32.</exception>
    public long[] ReadInt64(string name)
    {
        var info = GetInfo(name);
        if (info.DType is not ("I64" or "I32"))
            throw new MambaFormatException($"tensor has dtype {info.DType}, which cannot be read as int64 (expected I64 or I32)", FilePath, name);
        long count = info.ElementCount;
        if (count > Array.MaxLength)
            throw new MambaFormatException($"tensor has {count} elements, more than one array can hold", FilePath, name);
        var result = new long[count];
        byte* src = DataPointer(info);
        if (info.DType == "I64")
            new ReadOnlySpan<byte>(src, checked((int)info.ByteLength)).CopyTo(MemoryMarshal.AsBytes(result.AsSpan()));
        else
        {
            var ints = new ReadOnlySpan<int>(src, (int)count);
            for (int i = 0; i < ints.Length; i++)
                result[i] = ints[i];
        }
        return result;
    }

    /// <summary>Copies the raw little-endian bytes of a tensor (any dtype).</summary>
    /// <exception cref="MambaFormatException">No such tensor, or it exceeds 2 GB.</exception>
    public byte[] ReadBytes(string name)
    {
        var info = GetInfo(name);
        if (info.ByteLength > Array.MaxLength)
            throw new MambaFormatException($"tensor is {info.ByteLength} bytes, more than one array can hold", FilePath, name);
        return new ReadOnlySpan<byte>(DataPointer(info), (int)info.ByteLength).ToArray();
    }

    private SafeTensorInfo GetFloatInfo(string name)
    {
        var info = GetInfo(name);
        if (!SafeTensorsDTypes.IsReadableAsFloat32(info.DType))
            throw new MambaFormatException($"tensor has dtype {info.DType}, which cannot be read as float32 (expected F32, F16, BF16 or F64)", FilePath, name);
        return info;
    }

    private byte* DataPointer(SafeTensorInfo info)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        // Offsets were validated against the file length in Open; this is a belt-and-braces check.
        if (info.DataEnd > DataLength)
            throw new MambaFormatException("tensor data runs past the end of the file", FilePath, info.Name);
        return _base + _dataOffset + info.DataStart;
    }

    /// <summary>bf16 → f32 is exact: the bf16 bits are the top half of the f32 bits.</summary>
    internal static void Bf16ToFloat32(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && source.Length >= Vector<ushort>.Count)
        {
            var srcV = MemoryMarshal.Cast<ushort, Vector<ushort>>(source);
            var dstU = MemoryMarshal.Cast<float, uint>(destination);
            int step = Vector<ushort>.Count;
            for (int v = 0; v < srcV.Length; v++)
            {
                Vector.Widen(srcV[v], out Vector<uint> lo, out Vector<uint> hi);
                (lo << 16).CopyTo(dstU.Slice(v * step));
                (hi << 16).CopyTo(dstU.Slice(v * step + step / 2));
            }
            i = srcV.Length * step;
        }
        for (; i < source.Length; i++)
            destination[i] = BitConverter.UInt32BitsToSingle((uint)source[i] << 16);
    }

    /// <summary>Unmaps the file.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}


/// <summary>
/// Writes safetensors files: tensors sorted by name, laid out back to back, header padded with spaces to a
/// multiple of 8 bytes (so the data section is 8-byte aligned). Writes go to a temporary file that replaces
/// <c>path</c> only when complete.
/// </summary>
public static class SafeTensorsWriter
{
    /// <summary>Writes raw tensors. Each <c>data</c> holds the little-endian bytes, exactly element count × dtype size long.</summary>
    /// <exception cref="ArgumentException">Unknown dtype, negative dimension, wrong byte count or duplicate name.</exception>
    public static void Write(string path, IEnumerable<(string name, string dtype, long[] shape, byte[] data)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);

        var list = tensors.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, dtype, shape, data) in list)
        {
            ArgumentNullException.ThrowIfNull(name);
            if (name == "__metadata__")
                throw new ArgumentException("'__metadata__' is reserved and cannot name a tensor", nameof(tensors));
            if (!names.Add(name))
                throw new ArgumentException($"tensor '{name}' appears twice", nameof(tensors));
            int size = SafeTensorsDTypes.SizeOf(dtype);
            if (size == 0)
                throw new ArgumentException($"tensor '{name}': unknown dtype '{dtype}'", nameof(tensors));
            if (shape.Any(d => d < 0))
                throw new ArgumentException($"tensor '{name}': negative dimension in shape [{string.Join(", ", shape)}]", nameof(tensors));
            long expected = checked(SafeTensorsDTypes.ElementCount(shape) * size);
            if (data.LongLength != expected)
                throw new ArgumentException($"tensor '{name}': {data.LongLength} bytes given, shape and dtype need {expected}", nameof(tensors));
        }
        list.Sort((a, b) => string.CompareOrdinal(a.name, b.name));

        var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                    json.WriteString(k, v);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, dtype, shape, data) in list)
            {
                json.WriteStartObject(name);
                json.WriteString("dtype", dtype);
                json.WriteStartArray("shape");
                foreach (var d in shape)
                    json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + data.LongLength);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += data.LongLength;
            }
            json.WriteEndObject();
        }
        // Pad with spaces (valid JSON whitespace) so the data section starts 8-byte aligned.
        while (buffer.Length % 8 != 0)
            buffer.WriteByte((byte)' ');

        string full = Path.GetFullPath(path);
        string temp = full + ".tmp-" + Environment.ProcessId + "-" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                Span<byte> lengthBytes = stackalloc byte[8];
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(lengthBytes, (ulong)buffer.Length);
                file.Write(lengthBytes);
                buffer.Position = 0;
                buffer.CopyTo(file);
                foreach (var t in list)
                    file.Write(t.data);
                file.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>
    /// Writes float32 tensors stored as <paramref name="dtype"/> ("F32", "BF16" or "F16"); narrowing rounds to nearest even.
    /// </summary>
    /// <exception cref="ArgumentException">Unknown dtype, or an array whose length does not match its shape.</exception>
    public static void WriteFloat32(string path, IReadOnlyDictionary<string, (float[] data, long[] shape)> tensors,
        string dtype = "F32", IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        if (dtype is not ("F32" or "BF16" or "F16"))
            throw new ArgumentException($"dtype must be F32, BF16 or F16, not '{dtype}'", nameof(dtype));
        var raw = new List<(string, string, long[], byte[])>(tensors.Count);
        foreach (var (name, (data, shape)) in tensors)
        {
            long count = SafeTensorsDTypes.ElementCount(shape);
            if (data.LongLength != count)
                throw new ArgumentException($"tensor '{name}': {data.Length} floats given, shape [{string.Join(", ", shape)}] needs {count}", nameof(tensors));
            raw.Add((name, dtype, shape, Encode(data, dtype)));
        }
        Write(path, raw, metadata);
    }

    /// <summary>Encodes floats as little-endian F32, BF16 or F16 bytes.</summary>
    internal static byte[] Encode(ReadOnlySpan<float> data, string dtype)
    {
        switch (dtype)
        {
            case "F32":
                return MemoryMarshal.AsBytes(data).ToArray();
            case "BF16":
            {
                var bits = new ushort[data.Length];
                for (int i = 0; i < data.Length; i++)
                    bits[i] = FloatToBf16(data[i]);
                return MemoryMarshal.AsBytes(bits.AsSpan()).ToArray();
            }
            case "F16":
            {
                var halves = new Half[data.Length];
                TensorPrimitives.ConvertToHalf(data, halves); // IEEE round-to-nearest-even
                return MemoryMarshal.AsBytes(halves.AsSpan()).ToArray();
            }
            default:
                throw new ArgumentException($"dtype must be F32, BF16 or F16, not '{dtype}'", nameof(dtype));
        }
    }

    /// <summary>float32 → bfloat16 bits with round-to-nearest-even; NaN stays a (quiet) NaN of the same sign.</summary>
    public static ushort FloatToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
            return (ushort)((bits >> 16) | 0x0040);
        uint rounding = 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)((bits + rounding) >> 16);
    }
}
