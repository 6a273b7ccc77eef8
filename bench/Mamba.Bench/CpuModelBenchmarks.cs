using BenchmarkDotNet.Attributes;
using Mamba.Compute.Cpu;
using Mamba.Model;

namespace Mamba.Bench;

/// <summary>
/// End-to-end CPU figures on a Mamba-130m-shaped model with random weights (hidden 768, 24 layers,
/// vocab 50280, state 16): prefill of 1 × 512 tokens (last-position logits, as generation does) and one
/// batch-1 decode step after it.
/// </summary>
[Config(typeof(InProcessConfig))]
public class CpuModelBenchmarks
{
    private MambaForCausalLM _model = null!;
    private MambaCache _cache = null!;
    private int[,] _prompt = null!;
    private int[,] _next = null!;

    [Params(512)]
    public int PromptTokens { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var config = MambaConfig.Preset("130m");
        _model = new MambaForCausalLM(MambaInitializer.Create(config, seed: 1), new CpuBackend());
        var rng = new Random(2);
        _prompt = new int[1, PromptTokens];
        for (int t = 0; t < PromptTokens; t++) _prompt[0, t] = rng.Next(config.VocabSize);
        _next = new int[,] { { 42 } };
        _cache = _model.CreateCache(1);
        _model.Forward(_prompt, new ForwardOptions { Cache = _cache, LogitsToKeep = 1 });
    }

    /// <summary>1 × PromptTokens prefill into a fresh cache.</summary>
    [Benchmark]
    public float Prefill()
    {
        using var cache = _model.CreateCache(1);
        return _model.Forward(_prompt, new ForwardOptions { Cache = cache, LogitsToKeep = 1 }).Logits.Data[0];
    }

    /// <summary>One decode step (batch 1) on the filled cache.</summary>
    [Benchmark]
    public float DecodeStep() => _model.Forward(_next, new ForwardOptions { Cache = _cache, LogitsToKeep = 1 }).Logits.Data[0];

    [GlobalCleanup]
    public void Cleanup()
    {
        _cache.Dispose();
        _model.Dispose();
    }
}
