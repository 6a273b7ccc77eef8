using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using Mamba.Compute;
using Mamba.Compute.Cuda;
using Mamba.Model;

namespace Mamba.Bench;

/// <summary>
/// End-to-end CUDA figures on the random Mamba-130m model (`mamba bench --config 130m`: <see cref="MambaInitializer"/>,
/// seed 1) in f32 and bf16: prefill of 1 × 2048 and 8 × 2048 tokens into a cache with the argmax of the last position
/// on the device (what `mamba bench` and generation do), and greedy decoding at batch 1, with the captured decode
/// graph (the default) and op by op. Each invocation ends with <see cref="CudaBackend.Synchronize"/>.
/// </summary>
[Config(typeof(Config))]
[BenchmarkCategory("Gpu")]
public class CudaModelBenchmarks
{
    /// <summary>Prompt length of the prefill cases.</summary>
    public const int PromptTokens = 2048;

    /// <summary>Greedy tokens per decode invocation (the mean is per token).</summary>
    public const int DecodeTokens = 32;

    private IMambaBackend _gpu = null!;
    private MambaForCausalLM _model = null!;
    private MambaCache _cache = null!;
    private int[,] _prompt = null!;
    private readonly int[,] _step = new int[1, 1];
    private int[] _next = [];

    /// <summary>Storage dtype of weights and activations (the residual stream and logits stay f32).</summary>
    [Params(DType.F32, DType.BF16)]
    public DType DType { get; set; }

    private void Load(int batch, int promptTokens)
    {
        _gpu = GpuBench.Backend;
        _model = new MambaForCausalLM(GpuBench.Model130m, _gpu, DType);
        _cache = _model.CreateCache(batch);
        var rng = new Random(7);
        _prompt = new int[batch, promptTokens];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < promptTokens; t++) _prompt[b, t] = rng.Next(_model.Config.VocabSize);
        _next = _model.ForwardArgMax(_prompt, _cache); // loads every kernel and cuBLAS algorithm once
        _gpu.Synchronize();
    }

    /// <summary>The model and a batch-1 cache.</summary>
    [GlobalSetup(Target = nameof(Prefill1x2048))]
    public void SetupPrefill1() => Load(1, PromptTokens);

    /// <summary>1 × 2048 prefill into the reset cache; argmax of the last position.</summary>
    [Benchmark]
    public int Prefill1x2048() => Prefill();

    /// <summary>The model and a batch-8 cache.</summary>
    [GlobalSetup(Target = nameof(Prefill8x2048))]
    public void SetupPrefill8() => Load(8, PromptTokens);

    /// <summary>8 × 2048 prefill into the reset cache; argmax of the last position of each row.</summary>
    [Benchmark]
    public int Prefill8x2048() => Prefill();

    private int Prefill()
    {
        _cache.Reset();
        var next = _model.ForwardArgMax(_prompt, _cache);
        _gpu.Synchronize();
        return next[0];
    }

    /// <summary>The model, a batch-1 cache filled by a 16-token prompt, and two steps (the second captures the decode graph).</summary>
    [GlobalSetup(Target = nameof(GreedyDecode32))]
    public void SetupDecode()
    {
        Load(1, 16);
        Decode(2);
        if (_model.FastDecodeCaptures == 0)
            Console.WriteLine("// warning: the decode graph was not captured; GreedyDecode32 measures the op-by-op path");
    }

    /// <summary>32 greedy decode steps at batch 1 on the filled cache, each token fed back (mean per token).</summary>
    [Benchmark(OperationsPerInvoke = DecodeTokens)]
    public int GreedyDecode32() => Decode(DecodeTokens);

    /// <summary>As <see cref="SetupDecode"/> with the captured graph turned off (MAMBA_DISABLE_CUDA_GRAPHS=1 does the same).</summary>
    [GlobalSetup(Target = nameof(GreedyDecode32OpByOp))]
    public void SetupDecodeOpByOp()
    {
        Load(1, 16);
        _model.UseFastDecode = false;
        Decode(2);
    }

    /// <summary>As <see cref="GreedyDecode32"/>, every step issuing its ~150 ops one by one (mean per token).</summary>
    [Benchmark(OperationsPerInvoke = DecodeTokens)]
    public int GreedyDecode32OpByOp() => Decode(DecodeTokens);

    private int Decode(int steps)
    {
        for (int s = 0; s < steps; s++)
        {
            _step[0, 0] = _next[0];
            _next = _model.ForwardArgMax(_step, _cache);
        }
        _gpu.Synchronize();
        return _next[0];
    }

    /// <summary>Frees the cache and the model's weights (the shared backend stays open for the next case).</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        if (_model is not null && _model.FastDecodeSteps > 0)
            Console.WriteLine($"// {DType}: {_model.FastDecodeSteps} decode steps replayed a captured graph");
        _cache?.Dispose();
        _model?.Dispose();
    }

    /// <summary>Tokens per operation, for the Rate column.</summary>
    internal static Work? WorkOf(BenchmarkCase benchmarkCase) => benchmarkCase.Descriptor.WorkloadMethod.Name switch
    {
        nameof(Prefill1x2048) => Work.Tokens(PromptTokens),
        nameof(Prefill8x2048) => Work.Tokens(8 * PromptTokens),
        nameof(GreedyDecode32) or nameof(GreedyDecode32OpByOp) => Work.Tokens(1),
        _ => null,
    };

    private sealed class Config : GpuConfig
    {
        public Config() : base(WorkOf) { }
    }
}
