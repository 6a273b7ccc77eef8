using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using Mamba.IO;

namespace Mamba.Tests.IO;

public class TorchCheckpointTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "mamba-pt-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private static string OriginalFile => Path.Combine(TestFixtures.Model("tiny-original"), "pytorch_model.bin");

    // ---------------------------------------------------------------- the real fixture

    [Test]
    public void TinyOriginalEqualsTinySafeTensorsExactly()
    {
        using var pt = TorchCheckpoint.Open(OriginalFile);
        using var st = SafeTensorsCheckpoint.Open(Path.Combine(TestFixtures.Model("tiny"), "model"));

        static string Rename(string n) => n == "backbone.embedding.weight" ? "backbone.embeddings.weight" : n;
        var expectedNames = st.TensorNames.Append("lm_head.weight").ToHashSet();
        Assert.That(pt.TensorNames.Select(Rename), Is.EquivalentTo(expectedNames));
        Assert.That(pt.TensorNames.First(), Is.EqualTo("backbone.embedding.weight"), "pickle order is kept");

        foreach (var name in pt.TensorNames)
        {
            string stName = name == "lm_head.weight" ? "backbone.embeddings.weight" : Rename(name); // tied head
            Assert.That(pt.GetDType(name), Is.EqualTo("F32"), name);
            Assert.That(pt.GetShape(name), Is.EqualTo(st.GetInfo(stName).Shape), name);
            var a = pt.ReadFloat32(name);
            var b = st.ReadFloat32(stName);
            Assert.That(a, Has.Length.EqualTo(b.Length), name);
            Assert.That(MemoryMarshal.AsBytes(a.AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(b.AsSpan())), Is.True, name + " differs bit-for-bit");
        }
        Assert.That(pt.GetShape("backbone.layers.0.mixer.conv1d.weight"), Is.EqualTo(new long[] { 128, 1, 4 }));
    }

    [Test]
    public void UnknownTensorIsAFormatErrorNamingIt()
    {
        using var pt = TorchCheckpoint.Open(OriginalFile);
        var ex = Assert.Throws<MambaFormatException>(() => pt.ReadFloat32("nope.weight"));
        Assert.That(ex!.EntryName, Is.EqualTo("nope.weight"));
        Assert.That(ex.Message, Does.Contain(OriginalFile));
        Assert.Throws<MambaFormatException>(() => pt.GetShape("nope.weight"));
        Assert.That(pt.Contains("nope.weight"), Is.False);
    }

    // ---------------------------------------------------------------- hand-built checkpoints

    /// <summary>Emits pickle opcodes (protocol 2) for hand-built test checkpoints.</summary>
    public sealed class Pickle
    {
        private readonly List<byte> _b = [0x80, 2];
        public Pickle Op(params byte[] bytes) { _b.AddRange(bytes); return this; }
        public Pickle Op(char c) => Op((byte)c);
        public Pickle Global(string module, string name) { Op('c'); _b.AddRange(Encoding.ASCII.GetBytes($"{module}\n{name}\n")); return this; }
        public Pickle Str(string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s);
            Op('X'); _b.AddRange(BitConverter.GetBytes(bytes.Length)); _b.AddRange(bytes);
            return this;
        }
        public Pickle Int(int v) { Op('J'); _b.AddRange(BitConverter.GetBytes(v)); return this; }
        public Pickle Mark() => Op('(');
        public Pickle Tuple() => Op('t');
        public Pickle IntTuple(params int[] values) { Mark(); foreach (var v in values) Int(v); return Tuple(); }

        /// <summary>Pushes _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()).</summary>
        public Pickle Tensor(string storageType, string key, int numel, int offset, int[] size, int[] stride)
        {
            Global("torch._utils", "_rebuild_tensor_v2");
            Mark();
            Mark().Str("storage").Global("torch", storageType).Str(key).Str("cpu").Int(numel).Tuple().Op('Q');
            Int(offset).IntTuple(size).IntTuple(stride).Op(0x89).Global("collections", "OrderedDict").Op(')').Op('R');
            Tuple().Op('R');
            return this;
        }

        public byte[] Build() => [.. _b];
        public byte[] Stop() => [.. _b, (byte)'.'];
    }

    private string WriteZip(byte[] pickle, IReadOnlyDictionary<string, byte[]>? storages = null, string prefix = "archive", string? byteorder = "little")
    {
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".bin");
        using (var zip = new ZipArchive(File.Create(path), ZipArchiveMode.Create))
        {
            void Add(string name, byte[] data)
            {
                var e = zip.CreateEntry(name, CompressionLevel.NoCompression);
                using var s = e.Open();
                s.Write(data);
            }
            Add(prefix + "/data.pkl", pickle);
            if (byteorder is not null)
                Add(prefix + "/byteorder", Encoding.ASCII.GetBytes(byteorder));
            foreach (var (key, data) in storages ?? new Dictionary<string, byte[]>())
                Add(prefix + "/data/" + key, data);
            Add(prefix + "/version", "3\n"u8.ToArray());
        }
        return path;
    }

    private static byte[] Bytes<T>(params T[] values) where T : struct => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    private static Pickle StateDict() => new Pickle().Op('}').Mark();

    [Test]
    public void HandBuiltCheckpointWithOffsetsAndDtypesReads()
    {
        var bf16 = new ushort[] { 0x3F80, 0xC000, 0x4049, 0x0000, 0x7F80, 0x3E80 }; // 1, -2, 3.140625, 0, +inf, 0.25
        var pkl = StateDict()
            .Str("f32").Tensor("FloatStorage", "0", 8, 2, [2, 3], [3, 1])
            .Str("bf16").Tensor("BFloat16Storage", "1", 6, 1, [5], [1])
            .Str("f16").Tensor("HalfStorage", "2", 2, 0, [2, 1], [1, 7]) // stride of a size-1 dim is irrelevant
            .Str("i64").Tensor("LongStorage", "3", 3, 0, [3], [1])
            .Str("scalar").Tensor("FloatStorage", "0", 8, 7, [], [])
            .Op('u').Stop();
        var storages = new Dictionary<string, byte[]>
        {
            ["0"] = Bytes(9f, 9f, 1f, 2f, 3f, 4f, 5f, 6f),
            ["1"] = Bytes(bf16),
            ["2"] = Bytes((Half)0.5f, (Half)(-1.5f)),
            ["3"] = Bytes(5L, -6L, long.MaxValue),
        };
        using var pt = TorchCheckpoint.Open(WriteZip(pkl, storages));
        Assert.That(pt.TensorNames, Is.EqualTo(new[] { "f32", "bf16", "f16", "i64", "scalar" }));
        Assert.That(pt.ReadFloat32("f32"), Is.EqualTo(new[] { 1f, 2f, 3f, 4f, 5f, 6f }));
        Assert.That(pt.GetShape("f32"), Is.EqualTo(new long[] { 2, 3 }));
        Assert.That(pt.ReadFloat32("bf16"), Is.EqualTo(new[] { -2f, 3.140625f, 0f, float.PositiveInfinity, 0.25f }));
        Assert.That(pt.GetDType("bf16"), Is.EqualTo("BF16"));
        Assert.That(pt.ReadFloat32("f16"), Is.EqualTo(new[] { 0.5f, -1.5f }));
        Assert.That(pt.GetDType("f16"), Is.EqualTo("F16"));
        Assert.That(pt.ReadFloat32("scalar"), Is.EqualTo(new[] { 6f }));
        Assert.That(pt.GetDType("i64"), Is.EqualTo("I64"));
        Assert.That(pt.ReadInt64("i64"), Is.EqualTo(new[] { 5L, -6L, long.MaxValue }));
        var ex = Assert.Throws<MambaFormatException>(() => pt.ReadFloat32("i64"));
        Assert.That(ex!.EntryName, Is.EqualTo("i64"));
        Assert.That(ex.Message, Does.Contain("I64"));
    }

    [Test]
    public void RebuildParameterWrapperIsUnwrapped()
    {
        var pkl = StateDict().Str("p")
            .Global("torch._utils", "_rebuild_parameter").Mark()
            .Tensor("FloatStorage", "0", 2, 0, [2], [1]).Op(0x88).Global("collections", "OrderedDict").Op(')').Op('R')
            .Tuple().Op('R')
            .Op('u').Stop();
        using var pt = TorchCheckpoint.Open(WriteZip(pkl, new Dictionary<string, byte[]> { ["0"] = Bytes(7f, 8f) }));
        Assert.That(pt.ReadFloat32("p"), Is.EqualTo(new[] { 7f, 8f }));
    }

    // ---------------------------------------------------------------- hostile pickles

    [TestCase("os", "system")]
    [TestCase("builtins", "eval")]
    [TestCase("subprocess", "Popen")]
    [TestCase("torch", "load")]
    public void ForbiddenGlobalIsRejectedAndNothingRuns(string module, string name)
    {
        string marker = Path.Combine(_dir, "pwned");
        var pkl = new Pickle().Global(module, name).Str($"touch {marker}").Op(0x85).Op('R').Stop();
        string path = WriteZip(pkl);
        var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(path));
        Assert.That(ex!.Message, Does.Contain($"{module}.{name}").And.Contain(path));
        Assert.That(File.Exists(marker), Is.False);
    }

    [Test]
    public void ForbiddenStackGlobalIsRejected()
    {
        var pkl = new Pickle().Op(0x8c, 2).Op("os"u8.ToArray()).Op(0x8c, 6).Op("system"u8.ToArray()).Op(0x93)
            .Str("id").Op(0x85).Op('R').Stop();
        var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(WriteZip(pkl)));
        Assert.That(ex!.Message, Does.Contain("os.system"));
    }

    [Test]
    public void ForbiddenGlobalInsideAnotherwiseValidStateDictIsRejected()
    {
        var pkl = StateDict().Str("a").Tensor("FloatStorage", "0", 1, 0, [1], [1])
            .Str("b").Global("posix", "system").Str("id").Op(0x85).Op('R')
            .Op('u').Stop();
        var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(WriteZip(pkl, new Dictionary<string, byte[]> { ["0"] = Bytes(1f) })));
        Assert.That(ex!.Message, Does.Contain("posix.system"));
    }

    private static IEnumerable<TestCaseData> BadPersistentIds()
    {
        static Pickle Pid(Action<Pickle> tupleBody) =>
            StateDict().Str("t").Global("torch._utils", "_rebuild_tensor_v2").Mark()
                .Mark().Do(tupleBody).Tuple().Op('Q');
        yield return new TestCaseData(Pid(p => p.Str("storage").Global("torch", "FloatStorage").Str("../../etc/passwd").Str("cpu").Int(4))).SetName("TraversalKey");
        yield return new TestCaseData(Pid(p => p.Str("storage").Global("torch", "FloatStorage").Str("0").Str("cpu"))).SetName("FourItems");
        yield return new TestCaseData(Pid(p => p.Str("module").Global("torch", "FloatStorage").Str("0").Str("cpu").Int(4))).SetName("NotStorage");
        yield return new TestCaseData(Pid(p => p.Str("storage").Str("FloatStorage").Str("0").Str("cpu").Int(4))).SetName("TypeNotGlobal");
        yield return new TestCaseData(Pid(p => p.Str("storage").Global("collections", "OrderedDict").Str("0").Str("cpu").Int(4))).SetName("TypeNotStorage");
        yield return new TestCaseData(Pid(p => p.Str("storage").Global("torch", "FloatStorage").Int(0).Str("cpu").Int(4))).SetName("KeyNotString");
        yield return new TestCaseData(Pid(p => p.Str("storage").Global("torch", "FloatStorage").Str("0").Str("cpu").Int(-4))).SetName("NegativeNumel");
    }

    [TestCaseSource(nameof(BadPersistentIds))]
    public void BadPersistentIdIsRejected(Pickle pickle)
    {
        // The rest of the pickle is irrelevant: the persistent id must be rejected when it is loaded.
        string path = WriteZip(pickle.Op('.').Build(), new Dictionary<string, byte[]> { ["0"] = new byte[16] });
        var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(path));
        Assert.That(ex!.Message, Does.Contain("persistent id").And.Contain(path));
    }

    [Test]
    public void MissingStorageEntryIsRejectedNamingTheTensor()
    {
        var pkl = StateDict().Str("w").Tensor("FloatStorage", "5", 2, 0, [2], [1]).Op('u').Stop();
        var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(WriteZip(pkl)));
        Assert.That(ex!.EntryName, Is.EqualTo("w"));
        Assert.That(ex.Message, Does.Contain("archive/data/5"));
    }

    [TestCase(4, 0, new[] { 5 }, new[] { 1 }, "holds 4")]          // view past the storage
    [TestCase(4, 3, new[] { 2 }, new[] { 1 }, "holds 4")]          // offset + numel past the storage
    [TestCase(8, 0, new[] { 2 }, new[] { 1 }, "file holds 16")]    // storage larger than its file
    [TestCase(4, 0, new[] { 2, 2 }, new[] { 1, 2 }, "contiguous")] // transposed view
    [TestCase(4, 0, new[] { 2 }, new[] { 2 }, "contiguous")]
    [TestCase(4, 0, new[] { 2, 2 }, new[] { 2 }, "stride")]
    [TestCase(4, 0, new[] { -1 }, new[] { 1 }, "negative")]
    [TestCase(4, -1, new[] { 1 }, new[] { 1 }, "negative")]
    [TestCase(4, 0, new[] { 65536, 65536, 65536, 65536 }, new[] { 1, 1, 1, 1 }, "overflows")]
    public void InconsistentTensorViewIsRejectedNamingTheTensor(int numel, int offset, int[] size, int[] stride, string messagePart)
    {
        var pkl = StateDict().Str("w").Tensor("FloatStorage", "0", numel, offset, size, stride).Op('u').Stop();
        var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(WriteZip(pkl, new Dictionary<string, byte[]> { ["0"] = new byte[16] })));
        Assert.That(ex!.EntryName, Is.EqualTo("w"));
        Assert.That(ex.Message, Does.Contain(messagePart));
    }

    [TestCase(new byte[] { (byte)'R', (byte)'.' }, "underflow")]
    [TestCase(new byte[] { (byte)'h', 9, (byte)'.' }, "memo index 9")]
    [TestCase(new byte[] { (byte)'j', 255, 255, 255, 255, (byte)'.' }, "memo index")]
    [TestCase(new byte[] { (byte)'X', 255, 255, 255, 127, (byte)'a' }, "runs past")]
    [TestCase(new byte[] { 0x8d, 255, 255, 255, 255, 255, 255, 255, 255 }, "runs past")]
    [TestCase(new byte[] { (byte)'t', (byte)'.' }, "MARK")]
    [TestCase(new byte[] { (byte)'i', (byte)'.' }, "unsupported pickle opcode")]
    [TestCase(new byte[] { (byte)'N', (byte)'.' }, "not a state dict")]
    [TestCase(new byte[] { (byte)'}', (byte)'N', (byte)'K', 1, (byte)'s', (byte)'.' }, "key None")]
    [TestCase(new byte[] { (byte)'}', (byte)'X', 1, 0, 0, 0, (byte)'k', (byte)'K', 1, (byte)'s', (byte)'.' }, "not a tensor")]
    [TestCase(new byte[] { (byte)'}', (byte)'X', 2, 0, 0, 0, 0xC3, 0x28, (byte)'.' }, "UTF-8")]
    [TestCase(new byte[] { (byte)'c', (byte)'o', (byte)'s' }, "GLOBAL")]
    [TestCase(new byte[] { 0x8a, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1, (byte)'.' }, "64 bits")]
    public void MalformedPickleIsRejected(byte[] body, string messagePart)
    {
        string path = WriteZip([0x80, 2, .. body]);
        var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(path));
        Assert.That(ex!.Message, Does.Contain(messagePart).And.Contain(path));
    }

    [Test]
    public void BuildStateOnOrderedDictIsIgnoredButBuildOnOtherValuesIsRejected()
    {
        // OrderedDict() with a _metadata attribute pickles as REDUCE + BUILD({...}).
        var ok = new Pickle().Global("collections", "OrderedDict").Op(')').Op('R')
            .Op('}').Str("_metadata").Op('}').Op('s').Op('b')
            .Mark().Str("w").Tensor("FloatStorage", "0", 1, 0, [1], [1]).Op('u').Stop();
        using (var pt = TorchCheckpoint.Open(WriteZip(ok, new Dictionary<string, byte[]> { ["0"] = Bytes(3f) })))
            Assert.That(pt.ReadFloat32("w"), Is.EqualTo(new[] { 3f }));

        var bad = new Pickle().Str("x").Op('}').Op('b').Op('.').Build();
        var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(WriteZip(bad)));
        Assert.That(ex!.Message, Does.Contain("BUILD"));
    }

    [Test]
    public void TruncatedRealPickleIsRejectedAtEveryCut()
    {
        byte[] pkl, storage0;
        var storages = new Dictionary<string, byte[]>();
        using (var zip = ZipFile.OpenRead(OriginalFile))
        {
            pkl = ReadAll(zip.GetEntry("pytorch_model/data.pkl")!);
            foreach (var e in zip.Entries.Where(e => e.FullName.StartsWith("pytorch_model/data/", StringComparison.Ordinal)))
                storages[e.FullName["pytorch_model/data/".Length..]] = ReadAll(e);
            storage0 = storages["0"];
        }
        Assert.That(storage0, Has.Length.EqualTo(512 * 64 * 4));

        // The untouched pickle, re-zipped, opens: the cuts below fail because of the cut alone.
        using (var whole = TorchCheckpoint.Open(WriteZip(pkl, storages, "pytorch_model")))
            Assert.That(whole.TensorNames, Has.Count.EqualTo(23));

        for (int cut = 0; cut < pkl.Length; cut += cut < 300 ? 1 : 37)
        {
            string path = WriteZip(pkl[..cut], storages, "pytorch_model");
            var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(path), $"cut at {cut}");
            Assert.That(ex!.Message, Does.Contain(path));
            File.Delete(path);
        }
    }

    [Test]
    public void TruncatedZipIsRejectedAtEveryCut()
    {
        var bytes = File.ReadAllBytes(OriginalFile);
        var cuts = new List<int> { 0, 1, 3, 4, 30, 100, 1000, bytes.Length / 2, bytes.Length - 100, bytes.Length - 22, bytes.Length - 1 };
        for (int c = 0; c < bytes.Length; c += 17_011)
            cuts.Add(c);
        foreach (var cut in cuts)
        {
            string path = Path.Combine(_dir, $"cut{cut}.bin");
            File.WriteAllBytes(path, bytes[..cut]);
            var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(path), $"cut at {cut}");
            Assert.That(ex!.FilePath, Is.EqualTo(path));
        }
    }

    [Test]
    public void TruncatedStorageEntryIsRejectedNamingTheTensor()
    {
        var pkl = StateDict().Str("w").Tensor("FloatStorage", "0", 4, 0, [4], [1]).Op('u').Stop();
        var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(WriteZip(pkl, new Dictionary<string, byte[]> { ["0"] = new byte[10] })));
        Assert.That(ex!.EntryName, Is.EqualTo("w"));
    }

    [Test]
    public void BigEndianAndNonZipFilesAreRejected()
    {
        var pkl = StateDict().Op('u').Stop();
        var ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(WriteZip(pkl, byteorder: "big")));
        Assert.That(ex!.Message, Does.Contain("little-endian"));

        string legacy = Path.Combine(_dir, "legacy.bin");
        File.WriteAllBytes(legacy, [0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, (byte)'.']);
        ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(legacy));
        Assert.That(ex!.Message, Does.Contain("zip"));

        string noPickle = Path.Combine(_dir, "nopickle.zip");
        using (var zip = new ZipArchive(File.Create(noPickle), ZipArchiveMode.Create))
            zip.CreateEntry("readme.txt");
        ex = Assert.Throws<MambaFormatException>(() => TorchCheckpoint.Open(noPickle));
        Assert.That(ex!.Message, Does.Contain("data.pkl"));
    }

    private static byte[] ReadAll(ZipArchiveEntry e)
    {
        using var s = e.Open();
        using var m = new MemoryStream();
        s.CopyTo(m);
        return m.ToArray();
    }
}

internal static class PickleTestExtensions
{
    public static T Do<T>(this T value, Action<T> action)
    {
        action(value);
        return value;
    }
}
