using System.Buffers.Binary;
using System.IO.Compression;
using System.IO.Hashing;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;

namespace Mamba.IO;

/// <summary>
/// A restricted reader for PyTorch's zip checkpoint format (<c>torch.save</c>, e.g. <c>pytorch_model.bin</c>):
/// a zip holding <c>&lt;prefix&gt;/data.pkl</c> (a pickle of the state dict) and one <c>&lt;prefix&gt;/data/&lt;key&gt;</c>
/// file per storage. The pickle is decoded by a small interpreter that understands only the opcodes tensor
/// checkpoints use and never executes anything: globals resolve only to an allow-list of inert placeholders,
/// and any other global (<c>os.system</c>, <c>builtins.eval</c>, ...) is rejected as soon as it is read.
/// Only contiguous, row-major tensors in little-endian files are supported. Reads are serialised internally.
/// </summary>
public sealed class TorchCheckpoint : IDisposable
{
    /// <summary>Largest accepted <c>data.pkl</c>; a state-dict pickle is a few hundred bytes per tensor.</summary>
    public const long MaxPickleBytes = 256L << 20;

    private readonly FileStream _stream;
    private readonly ZipArchive _zip;
    private readonly Dictionary<string, TorchTensor> _tensors;
    private readonly object _gate = new();
    private readonly HashSet<string> _crcChecked = new(StringComparer.Ordinal);
    private bool _disposed;

    /// <summary>The path the checkpoint was opened from.</summary>
    public string FilePath { get; }

    /// <summary>The tensor names, in the order the checkpoint lists them.</summary>
    public IReadOnlyCollection<string> TensorNames { get; }

    private TorchCheckpoint(string path, FileStream stream, ZipArchive zip, Dictionary<string, TorchTensor> tensors, List<string> order)
    {
        FilePath = path;
        _stream = stream;
        _zip = zip;
        _tensors = tensors;
        TensorNames = order.AsReadOnly();
    }

    /// <summary>Opens a <c>torch.save</c> zip checkpoint and validates every tensor against its storage.</summary>
    /// <exception cref="MambaFormatException">Unreadable, truncated, hostile or unsupported content.</exception>
    public static TorchCheckpoint Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        JsonFile.RefuseSpecialFile(path, "checkpoint");
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new MambaFormatException($"cannot open checkpoint: {e.Message}", path, null, e);
        }

        ZipArchive? zip = null;
        try
        {
            try
            {
                zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true);
                _ = zip.Entries.Count; // forces the central directory to be read now
            }
            catch (InvalidDataException e)
            {
                throw new MambaFormatException(
                    $"not a readable zip archive (truncated, corrupt, or the legacy pre-1.6 torch format, which is not supported): {e.Message}", path, null, e);
            }

            var (tensors, order) = Load(zip, stream.Length, path);
            return new TorchCheckpoint(path, stream, zip, tensors, order);
        }
        catch (Exception e)
        {
            zip?.Dispose();
            stream.Dispose();
            if (e is MambaFormatException)
                throw;
            if (e is InvalidDataException or IOException or UnauthorizedAccessException)
                throw new MambaFormatException($"cannot read checkpoint: {e.Message}", path, null, e);
            throw;
        }
    }

    private static (Dictionary<string, TorchTensor>, List<string>) Load(ZipArchive zip, long fileLength, string path)
    {
        // torch.save writes "<archive name>/data.pkl"; the prefix is the archive name (often the file's stem).
        var pickles = zip.Entries.Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal)
                                             && e.FullName.IndexOf('/') == e.FullName.Length - "/data.pkl".Length).ToList();
        if (pickles.Count == 0)
            throw new MambaFormatException("zip holds no '<prefix>/data.pkl' (not a torch.save checkpoint)", path);
        if (pickles.Count > 1)
            throw new MambaFormatException($"zip holds {pickles.Count} '<prefix>/data.pkl' entries; expected one", path);
        var pklEntry = pickles[0];
        string prefix = pklEntry.FullName[..^"data.pkl".Length]; // keeps the trailing '/'

        var byteOrder = zip.GetEntry(prefix + "byteorder");
        if (byteOrder is not null)
        {
            var text = Encoding.ASCII.GetString(ReadEntry(byteOrder, 16, fileLength, path)).Trim();
            if (text != "little")
                throw new MambaFormatException($"byteorder is '{text}'; only little-endian checkpoints are supported", path, prefix + "byteorder");
        }

        byte[] pickle = ReadEntry(pklEntry, MaxPickleBytes, fileLength, path);
        var machine = new PickleMachine(pickle, path);
        object? root = machine.Run();

        if (root is not PickleMachine.PyDict dict)
            throw new MambaFormatException($"the pickled object is a {PickleMachine.Describe(root)}, not a state dict", path);

        var tensors = new Dictionary<string, TorchTensor>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var (key, value) in dict.Items)
        {
            if (key is not string name)
                throw new MambaFormatException($"state dict key {PickleMachine.Describe(key)} is not a string", path);
            if (value is not PickleMachine.TensorDesc desc)
                throw new MambaFormatException($"state dict value is a {PickleMachine.Describe(value)}, not a tensor", path, name);
            tensors[name] = Validate(name, desc, zip, prefix, fileLength, path);
            order.Add(name);
        }
        return (tensors, order);
    }

    private static TorchTensor Validate(string name, PickleMachine.TensorDesc desc, ZipArchive zip, string prefix, long fileLength, string path)
    {
        var storage = desc.Storage;
        string entryName = prefix + "data/" + storage.Key;
        var entry = zip.GetEntry(entryName)
            ?? throw new MambaFormatException($"storage '{storage.Key}' is missing from the zip (no '{entryName}')", path, name);
        CheckEntrySizes(entry, fileLength, path);

        if (desc.Size.Length != desc.Stride.Length)
            throw new MambaFormatException($"size has {desc.Size.Length} dimensions but stride has {desc.Stride.Length}", path, name);
        if (desc.Size.Any(d => d < 0))
            throw new MambaFormatException($"negative dimension in size ({string.Join(", ", desc.Size)})", path, name);
        if (desc.StorageOffset < 0)
            throw new MambaFormatException($"negative storage offset {desc.StorageOffset}", path, name);

        long numel, storageBytes, endElement;
        try
        {
            numel = SafeTensorsDTypes.ElementCount(desc.Size);
            storageBytes = checked(storage.Numel * storage.ElementSize);
            endElement = checked(desc.StorageOffset + numel);
            _ = checked(endElement * storage.ElementSize);
        }
        catch (OverflowException)
        {
            throw new MambaFormatException($"size ({string.Join(", ", desc.Size)}) or storage offset overflows", path, name);
        }
        if (endElement > storage.Numel)
            throw new MambaFormatException(
                $"tensor needs elements [{desc.StorageOffset}, {endElement}) but storage '{storage.Key}' holds {storage.Numel}", path, name);
        if (storageBytes > entry.Length)
            throw new MambaFormatException(
                $"storage '{storage.Key}' declares {storage.Numel} {storage.DType} elements ({storageBytes} bytes) but its file holds {entry.Length} bytes", path, name);

        if (numel > 0)
        {
            long expected = 1;
            for (int d = desc.Size.Length - 1; d >= 0; d--)
            {
                if (desc.Size[d] != 1 && desc.Stride[d] != expected)
                    throw new MambaFormatException(
                        $"tensor is not contiguous (size ({string.Join(", ", desc.Size)}), stride ({string.Join(", ", desc.Stride)})); only row-major contiguous tensors are supported",
                        path, name);
                expected = checked(expected * desc.Size[d]);
            }
        }
        return new TorchTensor(name, storage.DType, storage.ElementSize, desc.Size, desc.StorageOffset, numel, entry);
    }

    /// <summary>Guards allocations against lying zip directories: sizes must fit the file and a plausible compression ratio.</summary>
    private static void CheckEntrySizes(ZipArchiveEntry entry, long fileLength, string path)
    {
        if (entry.CompressedLength > fileLength || entry.Length < 0 || entry.CompressedLength < 0)
            throw new MambaFormatException($"zip entry '{entry.FullName}' claims {entry.CompressedLength} bytes in a {fileLength}-byte file", path);
        // Deflate cannot expand data more than ~1032:1.
        if (entry.Length > checked(entry.CompressedLength * 1100L + 4096))
            throw new MambaFormatException($"zip entry '{entry.FullName}' claims an implausible size of {entry.Length} bytes", path);
    }

    private static byte[] ReadEntry(ZipArchiveEntry entry, long limit, long fileLength, string path)
    {
        CheckEntrySizes(entry, fileLength, path);
        if (entry.Length > limit)
            throw new MambaFormatException($"zip entry '{entry.FullName}' is {entry.Length} bytes, more than the {limit}-byte limit", path);
        var buffer = new byte[entry.Length];
        try
        {
            using var s = entry.Open();
            s.ReadExactly(buffer);
            CheckCrc(entry, Crc32.HashToUInt32(buffer), path, null);
        }
        catch (EndOfStreamException e)
        {
            throw new MambaFormatException($"zip entry '{entry.FullName}' is shorter than its declared {entry.Length} bytes (truncated?)", path, null, e);
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            throw new MambaFormatException($"cannot read zip entry '{entry.FullName}': {e.Message}", path, null, e);
        }
        return buffer;
    }

    /// <summary>True when the checkpoint holds <paramref name="name"/>.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The shape of <paramref name="name"/>.</summary>
    /// <exception cref="MambaFormatException">No such tensor.</exception>
    public long[] GetShape(string name) => (long[])Get(name).Shape.Clone();

    /// <summary>The element type of <paramref name="name"/> in safetensors spelling: F32, F16, BF16, I64, I32 (or F64, U8, I8, I16, BOOL).</summary>
    /// <exception cref="MambaFormatException">No such tensor.</exception>
    public string GetDType(string name) => Get(name).DType;

    /// <summary>Reads a F32, F16 or BF16 tensor as float32.</summary>
    /// <exception cref="MambaFormatException">No such tensor, a non-float dtype, or truncated storage data.</exception>
    public float[] ReadFloat32(string name)
    {
        var t = Get(name);
        if (!SafeTensorsDTypes.IsReadableAsFloat32(t.DType))
            throw new MambaFormatException($"tensor has dtype {t.DType}, which cannot be read as float32 (expected F32, F16 or BF16)", FilePath, name);
        if (t.Numel > Array.MaxLength)
            throw new MambaFormatException($"tensor has {t.Numel} elements, more than one array can hold", FilePath, name);
        var result = GC.AllocateUninitializedArray<float>((int)t.Numel);
        if (t.DType == "F32")
        {
            ReadRaw(t, MemoryMarshal.AsBytes(result.AsSpan()));
            return result;
        }
        var halves = new ushort[t.Numel];
        ReadRaw(t, MemoryMarshal.AsBytes(halves.AsSpan()));
        if (t.DType == "BF16")
            SafeTensorsFile.Bf16ToFloat32(halves, result);
        else
            TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<ushort, Half>(halves), result);
        return result;
    }

    /// <summary>Reads an I64 or I32 tensor as int64.</summary>
    /// <exception cref="MambaFormatException">No such tensor, a dtype other than I64/I32, or truncated storage data.</exception>
    public long[] ReadInt64(string name)
    {
        var t = Get(name);
        if (t.DType is not ("I64" or "I32"))
            throw new MambaFormatException($"tensor has dtype {t.DType}, which cannot be read as int64 (expected I64 or I32)", FilePath, name);
        if (t.Numel > Array.MaxLength)
            throw new MambaFormatException($"tensor has {t.Numel} elements, more than one array can hold", FilePath, name);
        var result = new long[t.Numel];
        if (t.DType == "I64")
        {
            ReadRaw(t, MemoryMarshal.AsBytes(result.AsSpan()));
            return result;
        }
        var ints = new int[t.Numel];
        ReadRaw(t, MemoryMarshal.AsBytes(ints.AsSpan()));
        for (int i = 0; i < ints.Length; i++)
            result[i] = ints[i];
        return result;
    }

    private TorchTensor Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!_tensors.TryGetValue(name, out var t))
            throw new MambaFormatException("no such tensor in the checkpoint", FilePath, name);
        return t;
    }

    /// <summary>
    /// The zip's CRC-32 of an entry must match its bytes: torch.save writes it, and a damaged storage would otherwise
    /// load as silently wrong weights (issue 17).
    /// </summary>
    private static void CheckCrc(ZipArchiveEntry entry, uint actual, string path, string? tensor)
    {
        if (actual != entry.Crc32)
            throw new MambaFormatException(
                $"zip entry '{entry.FullName}' fails its CRC-32 check (stored {entry.Crc32:x8}, computed {actual:x8}): the file is damaged", path, tensor);
    }

    /// <summary>Checks the CRC-32 of a storage entry once, reading it whole (for a tensor that views only part of it).</summary>
    private void CheckWholeEntryCrc(TorchTensor t)
    {
        var crc = new Crc32();
        var chunk = new byte[1 << 16];
        using (var s = t.Entry.Open())
        {
            int n;
            while ((n = s.Read(chunk)) > 0) crc.Append(chunk.AsSpan(0, n));
        }
        CheckCrc(t.Entry, crc.GetCurrentHashAsUInt32(), FilePath, t.Name);
    }

    private void ReadRaw(TorchTensor t, Span<byte> destination)
    {
        long skip = t.StorageOffset * t.ElementSize;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            try
            {
                // A tensor that is its whole storage (every tensor of a state dict) is checked on the bytes read;
                // any other view checks the whole entry first, once.
                bool whole = skip == 0 && destination.Length == t.Entry.Length;
                bool check = !_crcChecked.Contains(t.Entry.FullName);
                if (check && !whole)
                {
                    CheckWholeEntryCrc(t);
                    _crcChecked.Add(t.Entry.FullName);
                }
                using var s = t.Entry.Open();
                if (s.CanSeek)
                    s.Seek(skip, SeekOrigin.Begin);
                else
                {
                    Span<byte> scratch = stackalloc byte[4096];
                    while (skip > 0)
                    {
                        int n = s.Read(scratch[..(int)Math.Min(scratch.Length, skip)]);
                        if (n == 0)
                            throw new EndOfStreamException();
                        skip -= n;
                    }
                }
                s.ReadExactly(destination);
                if (check && whole)
                {
                    CheckCrc(t.Entry, Crc32.HashToUInt32(destination), FilePath, t.Name);
                    _crcChecked.Add(t.Entry.FullName);
                }
            }
            catch (EndOfStreamException e)
            {
                throw new MambaFormatException($"storage file '{t.Entry.FullName}' ends before the tensor's data (truncated?)", FilePath, t.Name, e);
            }
            catch (Exception e) when (e is InvalidDataException or IOException)
            {
                throw new MambaFormatException($"cannot read storage file '{t.Entry.FullName}': {e.Message}", FilePath, t.Name, e);
            }
        }
    }

    /// <summary>Closes the zip file.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
            _zip.Dispose();
            _stream.Dispose();
        }
    }

    private sealed record TorchTensor(string Name, string DType, int ElementSize, long[] Shape, long StorageOffset, long Numel, ZipArchiveEntry Entry);
}

/// <summary>
/// A pickle interpreter for tensor checkpoints. It builds inert values (strings, numbers, tuples, lists, dicts,
/// storage and tensor descriptors) and nothing else: there is no code path that imports or calls anything.
/// Globals outside a fixed allow-list are rejected when read; every length, memo index and stack access is checked.
/// </summary>
internal sealed class PickleMachine
{
    private const int MaxStack = 1 << 20;
    private const int MaxMarks = 1 << 16;
    private const int MaxMemo = 1 << 22;
    private const int MaxGlobalLine = 256;

    private readonly byte[] _data;
    private readonly string _path;
    private int _pos;
    private readonly List<object?> _stack = [];
    private readonly List<int> _marks = [];
    private readonly Dictionary<long, object?> _memo = [];
    private static readonly UTF8Encoding StrictUtf8 = new(false, true);

    /// <summary>A Python global from the allow-list.</summary>
    internal sealed record PyGlobal(string Module, string Name, GlobalKind Kind, string? DType = null, int ElementSize = 0)
    {
        public string FullName => Module + "." + Name;
    }

    internal enum GlobalKind { OrderedDict, RebuildTensorV2, RebuildParameter, StorageType, DTypeObject }

    /// <summary>A Python tuple (distinct from a list).</summary>
    internal sealed record PyTuple(object?[] Items);

    /// <summary>A Python dict, insertion-ordered; keys are limited to strings, integers, booleans and None.</summary>
    internal sealed class PyDict
    {
        private readonly Dictionary<object, int> _index = [];
        public List<(object? Key, object? Value)> Items { get; } = [];

        public void Set(object? key, object? value)
        {
            object k = key ?? NoneKey;
            if (_index.TryGetValue(k, out int i))
                Items[i] = (key, value);
            else
            {
                _index[k] = Items.Count;
                Items.Add((key, value));
            }
        }

        private static readonly object NoneKey = new();
    }

    /// <summary>A storage referenced by a persistent id ('storage', type, key, location, numel).</summary>
    internal sealed record StorageRef(string Key, string DType, int ElementSize, long Numel);

    /// <summary>The result of <c>torch._utils._rebuild_tensor_v2</c>, not yet validated against the zip.</summary>
    internal sealed record TensorDesc(StorageRef Storage, long StorageOffset, long[] Size, long[] Stride);

    private static readonly Dictionary<string, PyGlobal> Allowed = BuildAllowList();

    private static Dictionary<string, PyGlobal> BuildAllowList()
    {
        var list = new List<PyGlobal>
        {
            new("collections", "OrderedDict", GlobalKind.OrderedDict),
            new("torch._utils", "_rebuild_tensor_v2", GlobalKind.RebuildTensorV2),
            new("torch._utils", "_rebuild_parameter", GlobalKind.RebuildParameter),
            new("torch", "FloatStorage", GlobalKind.StorageType, "F32", 4),
            new("torch", "HalfStorage", GlobalKind.StorageType, "F16", 2),
            new("torch", "BFloat16Storage", GlobalKind.StorageType, "BF16", 2),
            new("torch", "LongStorage", GlobalKind.StorageType, "I64", 8),
            new("torch", "IntStorage", GlobalKind.StorageType, "I32", 4),
            new("torch", "DoubleStorage", GlobalKind.StorageType, "F64", 8),
            new("torch", "ShortStorage", GlobalKind.StorageType, "I16", 2),
            new("torch", "CharStorage", GlobalKind.StorageType, "I8", 1),
            new("torch", "ByteStorage", GlobalKind.StorageType, "U8", 1),
            new("torch", "BoolStorage", GlobalKind.StorageType, "BOOL", 1),
            new("torch", "float32", GlobalKind.DTypeObject, "F32", 4),
            new("torch", "float16", GlobalKind.DTypeObject, "F16", 2),
            new("torch", "bfloat16", GlobalKind.DTypeObject, "BF16", 2),
            new("torch", "int64", GlobalKind.DTypeObject, "I64", 8),
            new("torch", "int32", GlobalKind.DTypeObject, "I32", 4),
        };
        return list.ToDictionary(g => g.FullName, StringComparer.Ordinal);
    }

    public PickleMachine(byte[] data, string path)
    {
        _data = data;
        _path = path;
    }

    private MambaFormatException Error(string message, int at = -1) =>
        new($"data.pkl offset {(at < 0 ? _pos : at)}: {message}", _path);

    /// <summary>Runs the pickle to its STOP opcode and returns the top-level object.</summary>
    public object? Run()
    {
        while (_pos < _data.Length)
        {
            int at = _pos;
            byte op = _data[_pos++];
            switch (op)
            {
                case 0x80: // PROTO
                {
                    int proto = ReadByte();
                    if (proto > 5)
                        throw Error($"unsupported pickle protocol {proto}", at);
                    break;
                }
                case 0x95: // FRAME: a length hint only; the frame's opcodes follow inline
                {
                    ulong len = ReadUInt64();
                    if (len > (ulong)(_data.Length - _pos))
                        throw Error($"frame of {len} bytes runs past the end of the pickle (truncated?)", at);
                    break;
                }
                case (byte)'.': // STOP
                    if (_stack.Count == 0)
                        throw Error("STOP with an empty stack", at);
                    return _stack[^1];
                case (byte)'(': // MARK
                    if (_marks.Count >= MaxMarks)
                        throw Error("too many nested MARKs", at);
                    _marks.Add(_stack.Count);
                    break;
                case (byte)'}': Push(new PyDict()); break;          // EMPTY_DICT
                case (byte)']': Push(new List<object?>()); break;   // EMPTY_LIST
                case (byte)')': Push(new PyTuple([])); break;       // EMPTY_TUPLE
                case (byte)'t': Push(new PyTuple(PopMark(at).ToArray())); break; // TUPLE
                case 0x85: Push(new PyTuple([Pop(at)])); break;    // TUPLE1
                case 0x86: // TUPLE2
                {
                    var b = Pop(at); var a = Pop(at);
                    Push(new PyTuple([a, b]));
                    break;
                }
                case 0x87: // TUPLE3
                {
                    var c = Pop(at); var b = Pop(at); var a = Pop(at);
                    Push(new PyTuple([a, b, c]));
                    break;
                }
                case (byte)'X': Push(ReadString(ReadUInt32(), at)); break;   // BINUNICODE
                case 0x8c: Push(ReadString((ulong)ReadByte(), at)); break;         // SHORT_BINUNICODE
                case 0x8d: Push(ReadString(ReadUInt64(), at)); break;         // BINUNICODE8
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break; // BININT
                case (byte)'K': Push((long)ReadByte()); break;                                     // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break; // BININT2
                case 0x8a: // LONG1: little-endian two's complement of n bytes
                {
                    int n = ReadByte();
                    if (n > 8)
                        throw Error($"LONG1 of {n} bytes does not fit in 64 bits", at);
                    var bytes = Take(n);
                    long v = 0;
                    for (int i = n - 1; i >= 0; i--)
                        v = (v << 8) | bytes[i];
                    if (n is > 0 and < 8 && (bytes[n - 1] & 0x80) != 0)
                        v -= 1L << (8 * n);
                    Push(v);
                    break;
                }
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break; // BINFLOAT
                case 0x88: Push(true); break;   // NEWTRUE
                case 0x89: Push(false); break;  // NEWFALSE
                case (byte)'N': Push(null); break; // NONE
                case (byte)'q': Memoize(ReadByte(), at); break;   // BINPUT
                case (byte)'r': Memoize(ReadUInt32(), at); break; // LONG_BINPUT
                case 0x94: Memoize(_memo.Count, at); break;       // MEMOIZE
                case (byte)'h': Push(Recall(ReadByte(), at)); break;   // BINGET
                case (byte)'j': Push(Recall(ReadUInt32(), at)); break; // LONG_BINGET
                case (byte)'s': // SETITEM
                {
                    var value = Pop(at); var key = Pop(at);
                    DictAt(_stack.Count - 1, at).Set(CheckKey(key, at), value);
                    break;
                }
                case (byte)'u': // SETITEMS
                {
                    var items = PopMark(at);
                    if (items.Count % 2 != 0)
                        throw Error("SETITEMS with an odd number of items", at);
                    var dict = DictAt(_stack.Count - 1, at);
                    for (int i = 0; i < items.Count; i += 2)
                        dict.Set(CheckKey(items[i], at), items[i + 1]);
                    break;
                }
                case (byte)'a': // APPEND
                {
                    var value = Pop(at);
                    ListAt(_stack.Count - 1, at).Add(value);
                    break;
                }
                case (byte)'e': // APPENDS
                {
                    var items = PopMark(at);
                    ListAt(_stack.Count - 1, at).AddRange(items);
                    break;
                }
                case (byte)'c': // GLOBAL "module\nname\n"
                {
                    string module = ReadLine(at);
                    string name = ReadLine(at);
                    Push(Resolve(module, name, at));
                    break;
                }
                case 0x93: // STACK_GLOBAL
                {
                    var name = Pop(at); var module = Pop(at);
                    if (module is not string m || name is not string n)
                        throw Error("STACK_GLOBAL needs two strings", at);
                    Push(Resolve(m, n, at));
                    break;
                }
                case (byte)'R': // REDUCE
                {
                    var args = Pop(at); var callable = Pop(at);
                    Push(Reduce(callable, args, at));
                    break;
                }
                case (byte)'Q': // BINPERSID
                    Push(PersistentLoad(Pop(at), at));
                    break;
                case (byte)'b': // BUILD: state on an OrderedDict (e.g. _metadata) or tensor is irrelevant here; discarded
                {
                    Pop(at);
                    if (_stack.Count == 0)
                        throw Error("BUILD with nothing to build", at);
                    if (_stack[^1] is not (PyDict or TensorDesc))
                        throw Error($"BUILD on a {Describe(_stack[^1])} is not supported", at);
                    break;
                }
                default:
                    throw Error($"unsupported pickle opcode 0x{op:x2} ('{(op is >= 0x20 and < 0x7f ? (char)op : '?')}')", at);
            }
        }
        throw Error("pickle ends without a STOP opcode (truncated?)");
    }

    private PyGlobal Resolve(string module, string name, int at)
    {
        string full = module + "." + name;
        if (!Allowed.TryGetValue(full, out var g))
            throw Error($"pickle references global '{full}', which is not allowed (only tensor-rebuild globals are accepted; nothing was executed)", at);
        return g;
    }

    private object Reduce(object? callable, object? args, int at)
    {
        if (callable is not PyGlobal g)
            throw Error($"REDUCE on a {Describe(callable)}, which is not callable", at);
        if (args is not PyTuple t)
            throw Error($"REDUCE arguments for '{g.FullName}' are a {Describe(args)}, not a tuple", at);
        var a = t.Items;
        switch (g.Kind)
        {
            case GlobalKind.OrderedDict:
                if (a.Length != 0)
                    throw Error("collections.OrderedDict is only supported with no arguments", at);
                return new PyDict();
            case GlobalKind.RebuildTensorV2:
            {
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                if (a.Length is not (6 or 7))
                    throw Error($"_rebuild_tensor_v2 takes 6 or 7 arguments, got {a.Length}", at);
                if (a[0] is not StorageRef storage)
                    throw Error($"_rebuild_tensor_v2 storage is a {Describe(a[0])}, not a persistent storage", at);
                if (a[1] is not long offset)
                    throw Error("_rebuild_tensor_v2 storage_offset is not an integer", at);
                var size = IntTuple(a[2], "size", at);
                var stride = IntTuple(a[3], "stride", at);
                return new TensorDesc(storage, offset, size, stride);
            }
            case GlobalKind.RebuildParameter:
                // (data, requires_grad, backward_hooks): a Parameter is its data tensor here.
                if (a.Length != 3 || a[0] is not TensorDesc data)
                    throw Error("_rebuild_parameter expects (tensor, requires_grad, backward_hooks)", at);
                return data;
            default:
                throw Error($"'{g.FullName}' cannot be called", at);
        }
    }

    private long[] IntTuple(object? value, string what, int at)
    {
        if (value is not PyTuple t)
            throw Error($"_rebuild_tensor_v2 {what} is a {Describe(value)}, not a tuple", at);
        if (t.Items.Length > 64)
            throw Error($"_rebuild_tensor_v2 {what} has {t.Items.Length} dimensions (at most 64)", at);
        var result = new long[t.Items.Length];
        for (int i = 0; i < result.Length; i++)
            result[i] = t.Items[i] is long v ? v : throw Error($"_rebuild_tensor_v2 {what}[{i}] is not an integer", at);
        return result;
    }

    private StorageRef PersistentLoad(object? pid, int at)
    {
        if (pid is not PyTuple { Items.Length: 5 } t || t.Items[0] is not "storage")
            throw Error($"unsupported persistent id {Describe(pid)} (expected ('storage', type, key, location, numel))", at);
        if (t.Items[1] is not PyGlobal { Kind: GlobalKind.StorageType or GlobalKind.DTypeObject } type)
            throw Error($"persistent id storage type is a {Describe(t.Items[1])}, not a known torch storage type", at);
        if (t.Items[2] is not string key || !IsSafeKey(key))
            throw Error($"persistent id storage key {Describe(t.Items[2])} is not a plain name", at);
        if (t.Items[3] is not string)
            throw Error("persistent id location is not a string", at);
        if (t.Items[4] is not long numel || numel < 0)
            throw Error($"persistent id element count {Describe(t.Items[4])} is not a non-negative integer", at);
        return new StorageRef(key, type.DType!, type.ElementSize, numel);
    }

    /// <summary>Storage keys become zip entry names, so only short plain names are accepted (no '/', no "..").</summary>
    private static bool IsSafeKey(string key) =>
        key.Length is > 0 and <= 64 && key != "." && key != ".." && key.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.');

    private object? CheckKey(object? key, int at) =>
        key is null or string or long or bool ? key : throw Error($"dict key of type {Describe(key)} is not supported", at);

    private PyDict DictAt(int index, int at) =>
        index >= 0 && _stack[index] is PyDict d ? d : throw Error("SETITEM(S) target is not a dict", at);

    private List<object?> ListAt(int index, int at) =>
        index >= 0 && _stack[index] is List<object?> l ? l : throw Error("APPEND(S) target is not a list", at);

    private void Push(object? value)
    {
        if (_stack.Count >= MaxStack)
            throw Error("pickle stack grows too deep");
        _stack.Add(value);
    }

    private object? Pop(int at)
    {
        int floor = _marks.Count > 0 ? _marks[^1] : 0;
        if (_stack.Count <= floor)
            throw Error("pickle stack underflow", at);
        var v = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return v;
    }

    private List<object?> PopMark(int at)
    {
        if (_marks.Count == 0)
            throw Error("no MARK to pop to", at);
        int mark = _marks[^1];
        _marks.RemoveAt(_marks.Count - 1);
        if (mark > _stack.Count)
            throw Error("MARK is above the stack top", at);
        var items = _stack.GetRange(mark, _stack.Count - mark);
        _stack.RemoveRange(mark, _stack.Count - mark);
        return items;
    }

    private void Memoize(long index, int at)
    {
        if (_stack.Count == 0)
            throw Error("memo store with an empty stack", at);
        if (!_memo.ContainsKey(index) && _memo.Count >= MaxMemo)
            throw Error("memo grows too large", at);
        _memo[index] = _stack[^1];
    }

    private object? Recall(long index, int at) =>
        _memo.TryGetValue(index, out var v) ? v : throw Error($"memo index {index} was never stored", at);

    private ReadOnlySpan<byte> Take(long n)
    {
        if (n < 0 || n > _data.Length - _pos)
            throw Error($"needs {n} more bytes but only {_data.Length - _pos} remain (truncated?)");
        var span = _data.AsSpan(_pos, (int)n);
        _pos += (int)n;
        return span;
    }

    private int ReadByte() => Take(1)[0];

    private uint ReadUInt32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));

    private ulong ReadUInt64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));

    private string ReadString(ulong length, int at)
    {
        if (length > (ulong)(_data.Length - _pos))
            throw Error($"string of {length} bytes runs past the end of the pickle (truncated?)", at);
        try
        {
            return StrictUtf8.GetString(Take((long)length));
        }
        catch (DecoderFallbackException)
        {
            throw Error("string is not valid UTF-8", at);
        }
    }

    private string ReadLine(int at)
    {
        int end = Array.IndexOf(_data, (byte)'\n', _pos, Math.Min(MaxGlobalLine, _data.Length - _pos));
        if (end < 0)
            throw Error("GLOBAL name is unterminated or too long", at);
        var bytes = _data.AsSpan(_pos, end - _pos);
        foreach (var b in bytes)
            if (b is < 0x20 or >= 0x7f)
                throw Error("GLOBAL name is not printable ASCII", at);
        _pos = end + 1;
        return Encoding.ASCII.GetString(bytes);
    }

    /// <summary>A short, safe description of a decoded value for error messages.</summary>
    internal static string Describe(object? value) => value switch
    {
        null => "None",
        string s => $"string '{(s.Length > 40 ? s[..40] + "..." : s)}'",
        long l => $"integer {l}",
        bool b => b ? "True" : "False",
        double => "float",
        PyTuple t => $"tuple of {t.Items.Length}",
        List<object?> => "list",
        PyDict => "dict",
        PyGlobal g => $"global '{g.FullName}'",
        StorageRef => "storage",
        TensorDesc => "tensor",
        _ => value.GetType().Name,
    };
}
