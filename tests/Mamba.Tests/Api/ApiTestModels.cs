using Mamba.Model;

namespace Mamba.Tests.Api;

/// <summary>
/// Models the API tests load once: an untrained model the tests make themselves (the shape of a small Mamba with the
/// real GPT-NeoX vocabulary and tokenizer, so text round-trips; written by init-model's code, like `mamba init-model`)
/// and the tiny fixture. The shipped default model is trained and larger; tests do not depend on its weights.
/// </summary>
internal static class ApiTestModels
{
    private static readonly Lazy<string> UntrainedDirectory = new(CreateUntrained);
    private static readonly Lazy<MambaModel> DefaultModel = new(() => MambaModel.Load(DefaultDirectory, new MambaModelOptions { Backend = BackendPreference.Cpu }));
    private static readonly Lazy<MambaModel> TinyModel = new(() => MambaModel.Load(Path.Combine(TestFixtures.Model("tiny"), "model"), new MambaModelOptions { Backend = BackendPreference.Cpu }));

    /// <summary>The untrained test model's folder (config.json, model.safetensors in bf16, tokenizer.json, generation_config.json).</summary>
    public static string DefaultDirectory => UntrainedDirectory.Value;

    /// <summary>The untrained test model: random weights, but the real tokenizer and a 50,280-row vocabulary (3 rows beyond the tokenizer's ids, as the published checkpoints).</summary>
    public static MambaModel Default => DefaultModel.Value;

    /// <summary>The tiny fixture model (vocab 512, no tokenizer).</summary>
    public static MambaModel Tiny => TinyModel.Value;

    private static string CreateUntrained()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"mamba-untrained-{Environment.ProcessId}");
        var config = new MambaConfig { VocabSize = 50280, HiddenSize = 32, NumHiddenLayers = 2, StateSize = 16 } with
        {
            TorchDType = "bfloat16",
            ExtraKeys = new Dictionary<string, System.Text.Json.Nodes.JsonNode?> { ["mamba_dotnet_untrained"] = true },
        };
        Mamba.Cli.Commands.InitModelCommand.Write(dir, MambaInitializer.Create(config, seed: 0), DType.BF16, TestFixtures.Tokenizer("tokenizer.json"));
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
        return dir;
    }
}
