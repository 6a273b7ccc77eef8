namespace Mamba.Tests.Api;

/// <summary>Models the API tests load once: the bundled default model (real GPT-NeoX vocabulary and tokenizer) and the tiny fixture.</summary>
internal static class ApiTestModels
{
    private static readonly Lazy<MambaModel> DefaultModel = new(() => MambaModel.Load(DefaultDirectory, new MambaModelOptions { Backend = BackendPreference.Cpu }));
    private static readonly Lazy<MambaModel> TinyModel = new(() => MambaModel.Load(Path.Combine(TestFixtures.Model("tiny"), "model"), new MambaModelOptions { Backend = BackendPreference.Cpu }));

    public static string DefaultDirectory => Path.Combine(AppContext.BaseDirectory, "default-model");

    /// <summary>The bundled default model: untrained, but with the real tokenizer, so text round-trips.</summary>
    public static MambaModel Default => DefaultModel.Value;

    /// <summary>The tiny fixture model (vocab 512, no tokenizer).</summary>
    public static MambaModel Tiny => TinyModel.Value;
}
