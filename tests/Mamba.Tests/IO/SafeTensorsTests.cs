using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Mamba.IO;

namespace Mamba.Tests.IO;

public class SafeTensorsTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "mamba-st-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private static string ModelFile(string model) => Path.Combine(TestFixtures.Model(model), "model", "model.safetensors");

    // ---------------------------------------------------------------- fixtures

    [TestCaseSource(typeof(TestFixtures), nameof(TestFixtures.ModelNames))]
    public void ReadsFixtureModelWithShapesFromItsConfig(string model)
    {
        string dir = Path.Combine(TestFixtures.Model(model), "model");
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "config.json")));
        var c = config.RootElement;
        long d = c.GetProperty("hidden_size").GetInt64();
        long vocab = c.GetProperty("vocab_size").GetInt64();
        long n = c.GetProperty("state_size").GetInt64();
        long inner = c.GetProperty("intermediate_size").GetInt64();
        long rank = c.GetProperty("time_step_rank").GetInt64();
        long k = c.GetProperty("conv_kernel").GetInt64();
        int layers = c.GetProperty("num_hidden_layers").GetInt32();
        bool bias = c.GetProperty("use_bias").GetBoolean();
        bool tied = c.GetProperty("tie_word_embeddings").GetBoolean();

        var expected = new Dictionary<string, long[]>
        {
            ["backbone.embeddings.weight"] = [vocab, d],
            ["backbone.norm_f.weight"] = [d],
        };
        for (int i = 0; i < layers; i++)
        {
            string p = $"backbone.layers.{i}.";
            expected[p + "norm.weight"] = [d];
            expected[p + "mixer.A_log"] = [inner, n];
            expected[p + "mixer.D"] = [inner];
            expected[p + "mixer.conv1d.weight"] = [inner, 1, k];
            expected[p + "mixer.conv1d.bias"] = [inner];
            expected[p + "mixer.dt_proj.weight"] = [inner, rank];
            expected[p + "mixer.dt_proj.bias"] = [inner];
            expected[p + "mixer.in_proj.weight"] = [2 * inner, d];
            expected[p + "mixer.out_proj.weight"] = [d, inner];
            expected[p + "mixer.x_proj.weight"] = [rank + 2 * n, inner];
            if (bias)
            {
                expected[p + "mixer.in_proj.bias"] = [2 * inner];
                expected[p + "mixer.out_proj.bias"] = [d];
            }
        }
        if (!tied)
            expected["lm_head.weight"] = [vocab, d];

        string dtype = model == "tiny-bf16" ? "BF16" : "F32";
        using var ckpt = SafeTensorsCheckpoint.Open(dir);
        Assert.That(ckpt.IsSharded, Is.False);
        Assert.That(ckpt.TensorNames, Is.EquivalentTo(expected.Keys));
        Assert.That(ckpt.StoredDType, Is.EqualTo(dtype));
        foreach (var (name, shape) in expected)
        {
            var info = ckpt.GetInfo(name);
            Assert.That(info.Shape, Is.EqualTo(shape), name);
            Assert.That(info.DType, Is.EqualTo(dtype), name);
            var values = ckpt.ReadFloat32(name);
            Assert.That(values, Has.Length.EqualTo(shape.Aggregate(1L, (a, b) => a * b)), name);
            Assert.That(values.All(float.IsFinite), Is.True, name);
            Assert.That(values.Any(v => v != 0) || name.EndsWith("bias", StringComparison.Ordinal), Is.True, name + " is all zeros");
        }
        Assert.That(ckpt.Files[0].Metadata["format"], Is.EqualTo("pt"));
    }

    [TestCase("tiny", 0.08932574838399887f, -0.12212304025888443f, -0.02489633485674858f)]
    [TestCase("tiny-untied-bias", -0.009634338319301605f, 0.17239432036876678f, 0.04482956975698471f)]
    [TestCase("small-long", -0.2015814334154129f, 0.023691946640610695f, -0.04694759473204613f)]
    [TestCase("tiny-bf16", -0.11328125f, 0.140625f, -0.1025390625f)]
    public void EmbeddingStartsWithKnownValues(string model, float a, float b, float c)
    {
        using var file = SafeTensorsFile.Open(ModelFile(model));
        var e = file.ReadFloat32("backbone.embeddings.weight");
        Assert.That(e[..3], Is.EqualTo(new[] { a, b, c }));
    }

    [Test]
    public void F64TensorsReadAsFloat32RoundedToNearest()
    {
        // PEFT writes the adapter of a float64 model as F64.
        double[] values = [1.0 / 3, -2.5, 1e-40, 123456789.123, double.NegativeInfinity];
        var path = Path.Combine(_dir, "f64.safetensors");
        SafeTensorsWriter.Write(path, [("w", "F64", [5], MemoryMarshal.AsBytes(values.AsSpan()).ToArray())]);
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.ReadFloat32("w"), Is.EqualTo(values.Select(v => (float)v).ToArray()));
    }

    [Test]
    public void Bf16UpcastMatchesScalarDecodingOfRawBytes()
    {
        using var file = SafeTensorsFile.Open(ModelFile("tiny-bf16"));
        foreach (var name in file.Tensors.Keys)
        {
            var raw = MemoryMarshal.Cast<byte, ushort>(file.ReadBytes(name));
            var expected = new float[raw.Length];
            for (int i = 0; i < raw.Length; i++)
                expected[i] = BitConverter.UInt32BitsToSingle((uint)raw[i] << 16);
            Assert.That(file.ReadFloat32(name), Is.EqualTo(expected), name);
            var span = new float[raw.Length];
            file.ReadFloat32(name, span);
            Assert.That(span, Is.EqualTo(expected), name);
        }
    }

    [Test]
    public void SpanReadRejectsWrongDestinationLength()
    {
        using var file = SafeTensorsFile.Open(ModelFile("tiny"));
        Assert.Throws<ArgumentException>(() => file.ReadFloat32("backbone.norm_f.weight", new float[63]));
    }

    [Test]
    public void UnknownTensorNameIsAFormatErrorNamingIt()
    {
        string path = ModelFile("tiny");
        using var ckpt = SafeTensorsCheckpoint.Open(Path.GetDirectoryName(path)!);
        var ex = Assert.Throws<MambaFormatException>(() => ckpt.ReadFloat32("backbone.nope"));
        Assert.That(ex!.EntryName, Is.EqualTo("backbone.nope"));
        Assert.That(ex.Message, Does.Contain("backbone.nope").And.Contain(path));
        Assert.That(ckpt.Contains("backbone.nope"), Is.False);
        Assert.That(ckpt.Contains("backbone.norm_f.weight"), Is.True);
    }

    // ---------------------------------------------------------------- writer round trips

    private static readonly float[] Specials =
    [
        0f, -0f, 1f, -1f, 1.00390625f /* 1+2^-8: tie → even (1) */, 1.01171875f /* 1+3·2^-8: tie → even (1+2^-6) */,
        3.14159265f, -2.7182817f, 1e-30f, 6.1e-5f, 65504f, 1e-8f, float.MaxValue, float.Epsilon,
        float.PositiveInfinity, float.NegativeInfinity, 123456.789f, -0.333333f,
    ];

    private static float[] RandomFloats(int n, int seed)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++)
            a[i] = (float)(rng.NextDouble() * 8 - 4);
        return a;
    }

    [TestCase("F32")]
    [TestCase("BF16")]
    [TestCase("F16")]
    public void WriterRoundTrips(string dtype)
    {
        var big = RandomFloats(1000, 1);
        var tensors = new Dictionary<string, (float[] data, long[] shape)>
        {
            ["z.last"] = (big, [10, 100]),
            ["a.first"] = (Specials, [Specials.Length]),
            ["m.scalar"] = ([42.5f], []),
            ["m.empty"] = ([], [0, 3]),
        };
        string path = Path.Combine(_dir, "rt.safetensors");
        SafeTensorsWriter.WriteFloat32(path, tensors, dtype, new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ü" });

        Func<float, float> expectedOf = dtype switch
        {
            "F32" => x => x,
            "BF16" => x => BitConverter.UInt32BitsToSingle((uint)SafeTensorsWriter.FloatToBf16(x) << 16),
            _ => x => (float)(Half)x,
        };

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Metadata, Is.EquivalentTo(new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ü" }));
        Assert.That(file.Tensors.Keys, Is.EquivalentTo(tensors.Keys));
        foreach (var (name, (data, shape)) in tensors)
        {
            Assert.That(file.Tensors[name].Shape, Is.EqualTo(shape), name);
            Assert.That(file.Tensors[name].DType, Is.EqualTo(dtype), name);
            Assert.That(file.ReadFloat32(name), Is.EqualTo(data.Select(expectedOf).ToArray()), name);
        }

        // Layout: header length makes the data 8-byte aligned, tensors are stored in name order.
        var bytes = File.ReadAllBytes(path);
        ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.That(headerLen % 8, Is.EqualTo(0UL));
        var ordered = file.Tensors.Values.OrderBy(t => t.DataStart).ThenBy(t => t.DataEnd).Select(t => t.Name).ToList();
        Assert.That(ordered.Where(n => file.Tensors[n].ByteLength > 0), Is.Ordered.Using((IComparer<string>)StringComparer.Ordinal));
        Assert.That(file.Tensors["a.first"].DataStart, Is.EqualTo(0));
    }

    [Test]
    public void Bf16RoundsToNearestEven()
    {
        Assert.Multiple(() =>
        {
            Assert.That(SafeTensorsWriter.FloatToBf16(1.0f), Is.EqualTo(0x3F80));
            Assert.That(SafeTensorsWriter.FloatToBf16(1.00390625f), Is.EqualTo(0x3F80));    // tie, lower is even
            Assert.That(SafeTensorsWriter.FloatToBf16(1.01171875f), Is.EqualTo(0x3F82));    // tie, upper is even
            Assert.That(SafeTensorsWriter.FloatToBf16(BitConverter.UInt32BitsToSingle(0x3F808001)), Is.EqualTo(0x3F81)); // just above the tie
            Assert.That(SafeTensorsWriter.FloatToBf16(-2.0f), Is.EqualTo(0xC000));
            Assert.That(SafeTensorsWriter.FloatToBf16(float.MaxValue), Is.EqualTo(0x7F80)); // overflows to +inf
            Assert.That(float.IsNaN(BitConverter.UInt32BitsToSingle((uint)SafeTensorsWriter.FloatToBf16(float.NaN) << 16)), Is.True);
        });
    }

    [Test]
    public void RawWriterAndIntegerReads()
    {
        string path = Path.Combine(_dir, "ints.safetensors");
        long[] i64 = [1, -2, long.MaxValue, long.MinValue];
        int[] i32 = [7, -8, int.MaxValue];
        SafeTensorsWriter.Write(path,
        [
            ("i64", "I64", [2, 2], MemoryMarshal.AsBytes(i64.AsSpan()).ToArray()),
            ("i32", "I32", [3], MemoryMarshal.AsBytes(i32.AsSpan()).ToArray()),
            ("u8", "U8", [2], [1, 2]),
        ]);
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.ReadInt64("i64"), Is.EqualTo(i64));
        Assert.That(file.ReadInt64("i32"), Is.EqualTo(new long[] { 7, -8, int.MaxValue }));
        Assert.That(file.ReadBytes("u8"), Is.EqualTo(new byte[] { 1, 2 }));
        var ex = Assert.Throws<MambaFormatException>(() => file.ReadFloat32("i64"));
        Assert.That(ex!.EntryName, Is.EqualTo("i64"));
        Assert.That(ex.Message, Does.Contain("I64").And.Contain(path));
        Assert.Throws<MambaFormatException>(() => file.ReadInt64("u8"));
    }

    [Test]
    public void WriterRejectsInconsistentInput()
    {
        string path = Path.Combine(_dir, "bad.safetensors");
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Write(path, [("a", "F32", [2], new byte[7])]));
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Write(path, [("a", "F99", [1], new byte[4])]));
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Write(path, [("a", "F32", [1], new byte[4]), ("a", "F32", [1], new byte[4])]));
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.WriteFloat32(path,
            new Dictionary<string, (float[], long[])> { ["a"] = (new float[3], [2]) }));
        Assert.That(File.Exists(path), Is.False);
    }

    // ---------------------------------------------------------------- sharded checkpoints

    private string WriteSharded(string? overrideIndex = null)
    {
        var t1 = new Dictionary<string, (float[] data, long[] shape)>
        {
            ["backbone.embeddings.weight"] = (RandomFloats(12, 2), [4, 3]),
            ["backbone.norm_f.weight"] = (RandomFloats(3, 3), [3]),
        };
        var t2 = new Dictionary<string, (float[] data, long[] shape)>
        {
            ["lm_head.weight"] = (RandomFloats(12, 4), [4, 3]),
        };
        SafeTensorsWriter.WriteFloat32(Path.Combine(_dir, "model-00001-of-00002.safetensors"), t1, "BF16");
        SafeTensorsWriter.WriteFloat32(Path.Combine(_dir, "model-00002-of-00002.safetensors"), t2, "F32");
        string index = overrideIndex ?? """
            {"metadata": {"total_size": 120},
             "weight_map": {
               "backbone.embeddings.weight": "model-00001-of-00002.safetensors",
               "backbone.norm_f.weight": "model-00001-of-00002.safetensors",
               "lm_head.weight": "model-00002-of-00002.safetensors"}}
            """;
        File.WriteAllText(Path.Combine(_dir, SafeTensorsCheckpoint.IndexFileName), index);
        return Path.Combine(_dir, SafeTensorsCheckpoint.IndexFileName);
    }

    [Test]
    public void ReadsShardedCheckpointThroughIndex()
    {
        WriteSharded();
        using var ckpt = SafeTensorsCheckpoint.Open(_dir);
        Assert.That(ckpt.IsSharded, Is.True);
        Assert.That(ckpt.Files, Has.Count.EqualTo(2));
        Assert.That(ckpt.TensorNames, Is.EquivalentTo(new[] { "backbone.embeddings.weight", "backbone.norm_f.weight", "lm_head.weight" }));
        Assert.That(ckpt.StoredDType, Is.EqualTo("BF16"));
        Assert.That(ckpt.GetInfo("lm_head.weight").DType, Is.EqualTo("F32"));
        Assert.That(ckpt.ReadFloat32("lm_head.weight"), Is.EqualTo(RandomFloats(12, 4)));
        var expectedNorm = RandomFloats(3, 3).Select(x => BitConverter.UInt32BitsToSingle((uint)SafeTensorsWriter.FloatToBf16(x) << 16));
        Assert.That(ckpt.ReadFloat32("backbone.norm_f.weight"), Is.EqualTo(expectedNorm));
        Assert.That(Path.GetFileName(ckpt.FileOf("lm_head.weight").FilePath), Is.EqualTo("model-00002-of-00002.safetensors"));
    }

    [TestCase("../model-00001-of-00002.safetensors")]
    [TestCase("/etc/passwd")]
    [TestCase("sub/model.safetensors")]
    [TestCase("..")]
    [TestCase("")]
    public void IndexWithPathTraversalIsRejected(string shard)
    {
        string index = WriteSharded(JsonSerializer.Serialize(new { weight_map = new Dictionary<string, string> { ["lm_head.weight"] = shard } }));
        var ex = Assert.Throws<MambaFormatException>(() => SafeTensorsCheckpoint.Open(_dir));
        Assert.That(ex!.Message, Does.Contain("not a plain file name").And.Contain(index));
        Assert.That(ex.EntryName, Is.EqualTo("lm_head.weight"));
    }

    [Test]
    public void IndexNamingMissingShardIsRejected()
    {
        WriteSharded("""{"weight_map": {"lm_head.weight": "model-00009-of-00009.safetensors"}}""");
        var ex = Assert.Throws<MambaFormatException>(() => SafeTensorsCheckpoint.Open(_dir));
        Assert.That(ex!.Message, Does.Contain("model-00009-of-00009.safetensors"));
    }

    [Test]
    public void IndexNamingTensorAbsentFromShardIsRejected()
    {
        WriteSharded("""{"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}""");
        var ex = Assert.Throws<MambaFormatException>(() => SafeTensorsCheckpoint.Open(_dir));
        Assert.That(ex!.EntryName, Is.EqualTo("lm_head.weight"));
        Assert.That(ex.Message, Does.Contain("model-00001-of-00002.safetensors"));
    }

    [TestCase("[]")]
    [TestCase("{}")]
    [TestCase("""{"weight_map": []}""")]
    [TestCase("""{"weight_map": {"a": 3}}""")]
    [TestCase("not json")]
    public void MalformedIndexIsRejected(string index)
    {
        string path = WriteSharded(index);
        var ex = Assert.Throws<MambaFormatException>(() => SafeTensorsCheckpoint.Open(_dir));
        Assert.That(ex!.Message, Does.Contain(path));
    }

    [Test]
    public void EmptyFolderIsRejected()
    {
        var ex = Assert.Throws<MambaFormatException>(() => SafeTensorsCheckpoint.Open(_dir));
        Assert.That(ex!.Message, Does.Contain("model.safetensors"));
    }

    // ---------------------------------------------------------------- hostile and broken files

    private string WriteRaw(string header, byte[]? data = null, ulong? headerLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        return WriteRaw(h, data, headerLength);
    }

    private string WriteRaw(byte[] header, byte[]? data = null, ulong? headerLength = null)
    {
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".safetensors");
        var bytes = new byte[8 + header.Length + (data?.Length ?? 0)];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data?.CopyTo(bytes, 8 + header.Length);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static MambaFormatException Rejects(string path, string? tensor = null, string? messagePart = null)
    {
        var ex = Assert.Throws<MambaFormatException>(() => SafeTensorsFile.Open(path).Dispose())!;
        Assert.That(ex.FilePath, Is.EqualTo(path));
        Assert.That(ex.Message, Does.Contain(path));
        if (tensor is not null)
        {
            Assert.That(ex.EntryName, Is.EqualTo(tensor));
            Assert.That(ex.Message, Does.Contain(tensor));
        }
        if (messagePart is not null)
            Assert.That(ex.Message, Does.Contain(messagePart));
        return ex;
    }

    [Test]
    public void TruncatedRealFileIsRejectedAtEveryCut()
    {
        var bytes = File.ReadAllBytes(ModelFile("tiny"));
        long headerLen = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var cuts = new SortedSet<long> { 0, 1, 4, 7, 8, 9, 10, 100, headerLen / 2, headerLen, headerLen + 7, headerLen + 8, headerLen + 9, headerLen + 12 };
        for (long c = headerLen + 8; c < bytes.Length; c += 9973)
            cuts.Add(c);
        cuts.Add(bytes.Length - 4);
        cuts.Add(bytes.Length - 1);
        foreach (var cut in cuts)
        {
            string path = Path.Combine(_dir, $"cut{cut}.safetensors");
            File.WriteAllBytes(path, bytes[..(int)cut]);
            Rejects(path);
        }
        // Extra bytes after the last tensor are rejected too.
        string longer = Path.Combine(_dir, "longer.safetensors");
        File.WriteAllBytes(longer, [.. bytes, 0, 0, 0, 0]);
        Rejects(longer, messagePart: "extra or missing bytes");
    }

    [TestCase(1UL << 62)]
    [TestCase(ulong.MaxValue)]
    [TestCase(200_000_000UL)]
    [TestCase(3UL)] // shorter than the real header: garbage JSON
    public void HeaderLengthOutOfRangeIsRejected(ulong length)
    {
        Rejects(WriteRaw("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", new byte[4], length));
    }

    [Test]
    public void HeaderLengthJustPastTheFileIsRejected()
    {
        const string header = """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""";
        Rejects(WriteRaw(header, new byte[4], (ulong)header.Length + 5), messagePart: "past the end");
    }

    [TestCase("garbage")]
    [TestCase("{\"a\": ")]
    [TestCase("[1,2,3]")]
    [TestCase("\"str\"")]
    [TestCase("")]
    [TestCase("{\"a\": 1}")]
    [TestCase("{\"__metadata__\": {\"k\": 1}}")]
    [TestCase("{\"__metadata__\": []}")]
    public void GarbageHeaderIsRejected(string header) => Rejects(WriteRaw(header));

    [Test]
    public void InvalidUtf8HeaderIsRejected() =>
        Rejects(WriteRaw([(byte)'{', (byte)'"', 0xFF, 0xFE, (byte)'"', (byte)':', (byte)'1', (byte)'}']), messagePart: "UTF-8");

    [Test]
    public void ValidMinimalFileIsAccepted()
    {
        // Guards the hostile cases below: the same shape of file, made consistent, opens.
        var data = MemoryMarshal.AsBytes(new float[] { 1.5f, -2f }.AsSpan()).ToArray();
        using var file = SafeTensorsFile.Open(WriteRaw("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   """, data));
        Assert.That(file.ReadFloat32("t"), Is.EqualTo(new[] { 1.5f, -2f }));
    }

    [TestCase("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}}""", "past")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", "past")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,9223372036854775807]}}""", "past")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}""", "non-negative")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}""", "increasing")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}}""", "two integers")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}""", "two integers")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,"8"]}}""", "two integers")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}}""", "two integers")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,1e30]}}""", "two integers")]
    [TestCase("""{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", "needs 12")]
    [TestCase("""{"t":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}}""", "needs 4")]
    [TestCase("""{"t":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}}""", "unknown dtype")]
    [TestCase("""{"t":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}""", "unknown dtype")]
    [TestCase("""{"t":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}""", "dtype")]
    [TestCase("""{"t":{"shape":[2],"data_offsets":[0,8]}}""", "dtype")]
    [TestCase("""{"t":{"dtype":"F32","data_offsets":[0,8]}}""", "shape")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2]}}""", "data_offsets")]
    [TestCase("""{"t":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}""", "shape")]
    [TestCase("""{"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", "negative")]
    [TestCase("""{"t":{"dtype":"F32","shape":[-1,-2],"data_offsets":[0,8]}}""", "negative")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}""", "integer")]
    [TestCase("""{"t":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}}""", "integer")]
    [TestCase("""{"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}""", "too many elements")]
    [TestCase("""{"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}}""", "too many elements")]
    [TestCase("""{"t":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,8]}}""", "needs")]
    [TestCase("""{"t":[1,2]}""", "object")]
    [TestCase("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", "twice")]
    public void InconsistentEntryIsRejectedNamingTheTensor(string header, string messagePart)
    {
        Rejects(WriteRaw(header, new byte[8]), "t", messagePart);
    }

    [Test]
    public void OverlappingTensorsAreRejected()
    {
        const string header = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""";
        var ex = Rejects(WriteRaw(header, new byte[12]), "b", "overlap");
        Assert.That(ex.Message, Does.Contain("'a'"));
    }

    [Test]
    public void FullyAliasedTensorsAreRejected()
    {
        const string header = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""";
        Rejects(WriteRaw(header, new byte[8]), messagePart: "overlap");
    }

    [Test]
    public void GapBetweenTensorsIsRejected()
    {
        const string header = """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""";
        Rejects(WriteRaw(header, new byte[12]), "b", "gap");
    }

    [Test]
    public void FileShorterThanEightBytesIsRejected()
    {
        string path = Path.Combine(_dir, "short.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        Rejects(path, messagePart: "too short");
        File.WriteAllBytes(path, []);
        Rejects(path, messagePart: "too short");
    }

    [Test]
    public void MissingFileIsAFormatError()
    {
        string path = Path.Combine(_dir, "absent.safetensors");
        var ex = Assert.Throws<MambaFormatException>(() => SafeTensorsFile.Open(path));
        Assert.That(ex!.Message, Does.Contain(path));
    }

    [Test]
    public void RandomCorruptionNeverCrashes()
    {
        // Flip bytes of the header of a real file: every outcome must be a clean open or a MambaFormatException.
        var original = File.ReadAllBytes(ModelFile("tiny"));
        int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(original);
        var rng = new Random(1234);
        string path = Path.Combine(_dir, "fuzz.safetensors");
        int rejected = 0;
        for (int iter = 0; iter < 300; iter++)
        {
            var bytes = (byte[])original.Clone();
            for (int k = 0; k < 1 + iter % 4; k++)
                bytes[rng.Next(0, headerEnd)] = (byte)rng.Next(256);
            File.WriteAllBytes(path, bytes);
            try
            {
                using var f = SafeTensorsFile.Open(path);
                foreach (var name in f.Tensors.Keys)
                    if (SafeTensorsDTypes.IsReadableAsFloat32(f.Tensors[name].DType))
                        _ = f.ReadFloat32(name);
            }
            catch (MambaFormatException)
            {
                rejected++;
            }
        }
        Assert.That(rejected, Is.GreaterThan(100));
    }
}
