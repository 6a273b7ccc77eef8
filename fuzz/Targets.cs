using System.IO.Compression;
using Mamba.Generation;
using Mamba.IO;
using Mamba.Tokenization;

namespace Mamba.Fuzzing;

/// <summary>
/// The fuzz targets, shared by the SharpFuzz harness (fuzz/Mamba.Fuzz) and the test that replays fuzz/findings: each
/// writes the input where the public reader expects a file and reads it as a user would. Success and the documented
/// exceptions (<see cref="MambaFormatException"/>, which <see cref="MambaConfigException"/> derives from, and for
/// tokenizer.json <see cref="NotSupportedException"/> for an unsupported tokenizer kind) are the contract.
/// </summary>
public static class Targets
{
    /// <summary>The target names: config, generation_config, tokenizer, safetensors, pytorch, pytorch_pickle.</summary>
    /// <remarks>
    /// pytorch_pickle takes the input as the <c>data.pkl</c> of a checkpoint whose zip the target builds around it
    /// (with valid CRC-32s and storages "0" to "3" of 64 bytes each): a mutation of a whole checkpoint almost always
    /// fails the zip's CRC-32 before the pickle interpreter runs, so this target is what fuzzes the interpreter.
    /// </remarks>
    public static readonly string[] Names = ["config", "generation_config", "tokenizer", "safetensors", "pytorch", "pytorch_pickle"];

    /// <summary>Whether <paramref name="e"/> is a documented outcome of reading a file of <paramref name="target"/>.</summary>
    public static bool IsDocumented(string target, Exception e) =>
        e is MambaFormatException || (target == "tokenizer" && e is NotSupportedException);

    /// <summary>Reads <paramref name="input"/> as the file of <paramref name="target"/>; returns the exception it threw, or null.</summary>
    public static Exception? Run(string target, byte[] input, string workDirectory)
    {
        string file = target switch
        {
            "config" => "config.json",
            "generation_config" => "generation_config.json",
            "tokenizer" => "tokenizer.json",
            "safetensors" => "model.safetensors",
            "pytorch" or "pytorch_pickle" => "pytorch_model.bin",
            _ => throw new ArgumentException($"unknown target '{target}'", nameof(target)),
        };
        var path = Path.Combine(workDirectory, file);
        File.WriteAllBytes(path, target == "pytorch_pickle" ? CheckpointAround(input) : input);
        try
        {
            switch (target)
            {
                case "config":
                    MambaConfig.FromFile(path);
                    break;
                case "generation_config":
                    GenerationOptions.FromGenerationConfig(path);
                    break;
                case "tokenizer":
                {
                    var tokenizer = MambaTokenizer.FromFile(path);
                    var ids = tokenizer.Encode("abc ab\u00e9 hello <|endoftext|> The quick brown fox");
                    tokenizer.Decode(ids);
                    tokenizer.Decode([0, 1, 2, 9, 10, 11, 1000, 50276], skipSpecialTokens: true);
                    var streaming = tokenizer.CreateStreamingDecoder();
                    foreach (var id in ids) streaming.Append(id);
                    streaming.Flush();
                    break;
                }
                case "safetensors":
                {
                    using var st = SafeTensorsFile.Open(path);
                    foreach (var (name, info) in st.Tensors)
                        if (SafeTensorsDTypes.IsReadableAsFloat32(info.DType)) st.ReadFloat32(name);
                    break;
                }
                case "pytorch" or "pytorch_pickle":
                {
                    using var checkpoint = TorchCheckpoint.Open(path);
                    foreach (var name in checkpoint.TensorNames)
                        if (SafeTensorsDTypes.IsReadableAsFloat32(checkpoint.GetDType(name))) checkpoint.ReadFloat32(name);
                    break;
                }
            }
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }

    /// <summary>A torch.save zip (stored entries, valid CRC-32s) holding <paramref name="pickle"/> as archive/data.pkl.</summary>
    private static byte[] CheckpointAround(byte[] pickle)
    {
        using var buffer = new MemoryStream();
        using (var zip = new ZipArchive(buffer, ZipArchiveMode.Create, leaveOpen: true))
        {
            void Add(string name, ReadOnlySpan<byte> data)
            {
                using var s = zip.CreateEntry(name, CompressionLevel.NoCompression).Open();
                s.Write(data);
            }
            Add("archive/data.pkl", pickle);
            Add("archive/byteorder", "little"u8);
            var storage = new byte[64];
            for (int i = 0; i < storage.Length; i++) storage[i] = (byte)(i * 37 + 11);
            for (int key = 0; key < 4; key++) Add($"archive/data/{key}", storage);
            Add("archive/version", "3\n"u8);
        }
        return buffer.ToArray();
    }
}
