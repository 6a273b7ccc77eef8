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
    /// <summary>The target names: config, generation_config, tokenizer, safetensors, pytorch.</summary>
    public static readonly string[] Names = ["config", "generation_config", "tokenizer", "safetensors", "pytorch"];

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
            "pytorch" => "pytorch_model.bin",
            _ => throw new ArgumentException($"unknown target '{target}'", nameof(target)),
        };
        var path = Path.Combine(workDirectory, file);
        File.WriteAllBytes(path, input);
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
                case "pytorch":
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
}
