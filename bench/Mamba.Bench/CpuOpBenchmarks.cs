using BenchmarkDotNet.Attributes;
using Mamba.Compute;
using Mamba.Compute.Cpu;

namespace Mamba.Bench;

/// <summary>The CPU backend's ops at Mamba-130m shapes, batch 1 × L tokens.</summary>
[Config(typeof(InProcessConfig))]
public class CpuOpBenchmarks
{
    private const int D = 768, E = 1536, N = 16, R = 48, K = 4;
    private readonly CpuBackend _cpu = new();
    private DeviceTensor _a = null!, _inProj = null!, _xz = null!, _u = null!, _dbc = null!, _y = null!, _conv = null!, _convBias = null!, _norm = null!, _residual = null!;
    private SsmParameters _ssm = null!;

    [Params(512)]
    public int Tokens { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        DeviceTensor Rand(params int[] shape)
        {
            var data = new float[shape.Aggregate(1, (x, y) => x * y)];
            for (int i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() - 0.5);
            return _cpu.Upload(data, DType.F32, shape);
        }
        _a = Rand(1, Tokens, D);
        _residual = Rand(1, Tokens, D);
        _norm = Rand(D);
        _inProj = Rand(2 * E, D);
        _xz = Rand(1, Tokens, 2 * E);
        _u = Rand(1, Tokens, E);
        _dbc = Rand(1, Tokens, R + 2 * N);
        _y = _cpu.Allocate(DType.F32, 1, Tokens, E);
        _conv = Rand(E, K);
        _convBias = Rand(E);
        var a = new float[E * N];
        for (int i = 0; i < a.Length; i++) a[i] = -(i % N + 1);
        _ssm = new SsmParameters(Rand(E, R), Rand(E), _cpu.Upload(a, DType.F32, E, N), Rand(E));
    }

    /// <summary>in_proj: [L, 768] × [3072, 768]ᵀ (2.4 GFLOP at L = 512).</summary>
    [Benchmark] public void InProjGemm() => _cpu.Linear(_a, _inProj, null, _xz);

    /// <summary>Causal conv + SiLU over [L, 1536].</summary>
    [Benchmark] public void CausalConv1d() => _cpu.CausalConv1d(_xz, _conv, _convBias, null, _u, null);

    /// <summary>Selective scan (Δ projection, softplus, D skip, gating) over [L, 1536] with N = 16.</summary>
    [Benchmark] public void SelectiveScan() => _cpu.SelectiveScan(_ssm, _u, _dbc, _xz, _y, null);

    private float[] _delta = null!;

    [GlobalSetup(Target = nameof(DeltaSoftplusOnly))]
    public void SetupDelta()
    {
        Setup();
        _delta = new float[Tokens * E];
    }

    /// <summary>Δ = softplus(δ̃·W_dtᵀ + b) as a separate GEMM + bias/softplus pass: the unfused form, to compare with the Δ that <see cref="SelectiveScan"/> computes inside the scan.</summary>
    [Benchmark]
    public void DeltaSoftplusOnly()
    {
        CpuGemm.Linear(((CpuTensor)_dbc).Data, R + 2 * N, ((CpuTensor)_ssm.DtProjWeight).Data, default, _delta, Tokens, E, R, new ParallelOptions());
        CpuMath.AddBiasSoftplusRows(_delta, ((CpuTensor)_ssm.DtProjBias).Data);
    }

    /// <summary>Residual add + RMSNorm over [L, 768].</summary>
    [Benchmark] public void AddRmsNorm() => _cpu.AddRmsNorm(_residual, _a, _norm, 1e-5f, _a);
}
