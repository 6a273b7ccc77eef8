using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using Mamba.Compute;
using Mamba.Model;

namespace Mamba.Bench;

/// <summary>
/// The CUDA backend's ops at the Mamba-130m shape (hidden 768, d_inner 1536, state 16, dt_rank 48, conv 4, vocab
/// 50280) in f32 and bf16, with layer 0 of the random 130m weights and the tensor dtypes the model uses (weights and
/// activations in <see cref="DType"/>; residual stream, norm weights, conv weights, A, D, dt bias, states and logits
/// f32). Prefill ops run at batch 8 × 2048 tokens (the issue-6 reference shape), decode ops at batch 1.
/// </summary>
/// <remarks>
/// Each invocation queues <see cref="Launches"/> launches of the op back to back on the backend's stream and then
/// calls <see cref="IMambaBackend.Synchronize"/>, so the mean (per launch, through OperationsPerInvoke) is real GPU
/// time: the kernel's time where it is longer than the host's launch cost (P/Invoke, shape checks, launch), the
/// launch cost otherwise (the µs-scale decode ops, which the model's captured decode graph replays without it).
/// Ops that update in place (residual += delta, the decode states) keep doing so; their values stay finite.
/// </remarks>
[Config(typeof(Config))]
[BenchmarkCategory("Gpu")]
public class CudaOpBenchmarks
{
    /// <summary>Launches queued per invocation before the one Synchronize.</summary>
    public const int Launches = 16;

    private const int Batch = 8, Length = 2048, Rows = Batch * Length;
    private const float Epsilon = 1e-5f;

    private readonly List<DeviceTensor> _owned = [];
    private IMambaBackend _gpu = null!;
    private int _d, _e, _n, _r, _k, _v;

    // Layer 0's parameters (only those the case needs are uploaded).
    private DeviceTensor _norm = null!, _inProj = null!, _conv = null!, _convBias = null!, _xProj = null!, _outProj = null!, _lmHead = null!;
    private SsmParameters _ssm = null!;

    // Prefill activations [8, 2048, C].
    private DeviceTensor _x = null!, _residual = null!, _delta = null!, _normed = null!, _xz = null!, _u = null!, _dbc = null!, _y = null!, _ssmState = null!, _convState = null!;

    // Decode activations [1, 1, C] and states [1, E, K], [1, E, N].
    private DeviceTensor _h1 = null!, _a1 = null!, _xz1 = null!, _u1 = null!, _dbc1 = null!, _y1 = null!, _out1 = null!, _last1 = null!, _logits1 = null!,
        _convState1 = null!, _ssmState1 = null!;

    /// <summary>Storage dtype of weights and activations.</summary>
    [Params(DType.F32, DType.BF16)]
    public DType DType { get; set; }

    private void Open()
    {
        _gpu = GpuBench.Backend;
        var c = GpuBench.Model130m.Config;
        (_d, _e, _n, _r, _k, _v) = (c.HiddenSize, c.IntermediateSize, c.StateSize, c.TimeStepRank, c.ConvKernel, c.VocabSize);
    }

    private DeviceTensor Own(DeviceTensor t)
    {
        _owned.Add(t);
        return t;
    }

    private DeviceTensor Put(float[] data, DType dtype, params int[] shape) => Own(_gpu.Upload(data, dtype, shape));

    /// <summary>Filler values in [−scale, scale) of <paramref name="dtype"/>.</summary>
    private DeviceTensor Fill(DType dtype, float scale, params int[] shape) =>
        Put(GpuBench.Filler(shape.Aggregate(1L, (a, b) => a * b), scale), dtype, shape);

    private DeviceTensor Empty(DType dtype, params int[] shape) => Own(_gpu.Allocate(dtype, shape));

    private void LoadSsm()
    {
        var w0 = GpuBench.Model130m;
        var a = new float[w0[ParameterId.ALog, 0].Length];
        for (int j = 0; j < a.Length; j++) a[j] = -MathF.Exp(w0[ParameterId.ALog, 0][j]); // A = −exp(A_log), as the model uploads it
        _ssm = new SsmParameters(Put(w0[ParameterId.DtProjWeight, 0], DType, _e, _r), Put(w0[ParameterId.DtProjBias, 0], DType.F32, _e), Put(a, DType.F32, _e, _n), Put(w0[ParameterId.D, 0], DType.F32, _e));
    }

    private void LoadConv()
    {
        var w0 = GpuBench.Model130m;
        _conv = Put(w0[ParameterId.ConvWeight, 0], DType.F32, _e, _k);
        _convBias = Put(w0.Values.TryGet(ParameterId.ConvBias, 0) ?? new float[_e], DType.F32, _e);
    }

    /// <summary>Selective scan inputs at [8, 2048]: u, dbc (δ̃, B, C), xz (z half used), y, and the final state.</summary>
    [GlobalSetup(Target = nameof(SelectiveScan))]
    public void SetupScan()
    {
        Open();
        LoadSsm();
        _u = Fill(DType, 1f, Batch, Length, _e);
        _dbc = Fill(DType, 1f, Batch, Length, _r + 2 * _n);
        _xz = Fill(DType, 1f, Batch, Length, 2 * _e);
        _y = Empty(DType, Batch, Length, _e);
        _ssmState = Empty(DType.F32, Batch, _e, _n);
    }

    /// <summary>Selective scan forward, B 8, L 2048, E 1536, N 16: Δ = softplus(W_dt·δ̃ + b) fused in, D skip, SiLU(z) gate, final state written (as a prefill into a cache).</summary>
    [Benchmark(OperationsPerInvoke = Launches)]
    public void SelectiveScan()
    {
        for (int i = 0; i < Launches; i++) _gpu.SelectiveScan(_ssm, _u, _dbc, _xz, _y, _ssmState);
        _gpu.Synchronize();
    }

    /// <summary>Causal conv inputs at [8, 2048]: xz (x half used), u, the conv state.</summary>
    [GlobalSetup(Target = nameof(CausalConv1d))]
    public void SetupConv()
    {
        Open();
        LoadConv();
        _xz = Fill(DType, 1f, Batch, Length, 2 * _e);
        _u = Empty(DType, Batch, Length, _e);
        _convState = Empty(DType.F32, Batch, _e, _k); // written as by a prefill into a cache
    }

    /// <summary>Causal depthwise conv1d (K 4) + bias + SiLU forward over (8, 1536, 2048), last K inputs written to the conv state.</summary>
    [Benchmark(OperationsPerInvoke = Launches)]
    public void CausalConv1d()
    {
        for (int i = 0; i < Launches; i++) _gpu.CausalConv1d(_xz, _conv, _convBias, null, _u, _convState);
        _gpu.Synchronize();
    }

    /// <summary>Add + RMSNorm inputs: residual (f32) and delta [8·2048, 768], output in the activation dtype.</summary>
    [GlobalSetup(Target = nameof(AddRmsNorm))]
    public void SetupNorm()
    {
        Open();
        _norm = Put(GpuBench.Model130m[ParameterId.Norm, 0], DType.F32, _d);
        _residual = Fill(DType.F32, 1f, Rows, _d);
        _delta = Fill(DType, 0.01f, Rows, _d);
        _normed = Empty(DType, Rows, _d);
    }

    /// <summary>residual += delta, then RMSNorm(residual)·weight over 8·2048 rows × 768 (the pre-norm of every block).</summary>
    [Benchmark(OperationsPerInvoke = Launches)]
    public void AddRmsNorm()
    {
        for (int i = 0; i < Launches; i++) _gpu.AddRmsNorm(_residual, _delta, _norm, Epsilon, _normed);
        _gpu.Synchronize();
    }

    /// <summary>in_proj GEMM inputs: x [8·2048, 768], weight [3072, 768], y [8·2048, 3072].</summary>
    [GlobalSetup(Target = nameof(InProjGemm))]
    public void SetupGemm()
    {
        Open();
        _inProj = Put(GpuBench.Model130m[ParameterId.InProjWeight, 0], DType, 2 * _e, _d);
        _x = Fill(DType, 1f, Batch, Length, _d);
        _xz = Empty(DType, Batch, Length, 2 * _e);
    }

    /// <summary>in_proj Linear, 16384 × 768 → 3072 (77 GFLOP).</summary>
    [Benchmark(OperationsPerInvoke = Launches)]
    public void InProjGemm()
    {
        for (int i = 0; i < Launches; i++) _gpu.Linear(_x, _inProj, null, _xz);
        _gpu.Synchronize();
    }

    /// <summary>The decode GEMVs' inputs at batch 1 (x of lm_head is the f32 output of norm_f, its logits are f32).</summary>
    [GlobalSetup(Targets = [nameof(GemvInProj), nameof(GemvOutProj), nameof(GemvLmHead)])]
    public void SetupGemv()
    {
        Open();
        var w = GpuBench.Model130m;
        _inProj = Put(w[ParameterId.InProjWeight, 0], DType, 2 * _e, _d);
        _outProj = Put(w[ParameterId.OutProjWeight, 0], DType, _d, _e);
        _lmHead = Put(w[ParameterId.LmHead], DType, _v, _d);
        _a1 = Fill(DType, 1f, 1, 1, _d);
        _xz1 = Empty(DType, 1, 1, 2 * _e);
        _y1 = Fill(DType, 1f, 1, 1, _e);
        _out1 = Empty(DType, 1, 1, _d);
        _last1 = Fill(DType.F32, 1f, 1, 1, _d);
        _logits1 = Empty(DType.F32, 1, 1, _v);
    }

    /// <summary>in_proj GEMV at batch 1: 1 × 768 → 3072.</summary>
    [Benchmark(OperationsPerInvoke = Launches)]
    public void GemvInProj()
    {
        for (int i = 0; i < Launches; i++) _gpu.Linear(_a1, _inProj, null, _xz1);
        _gpu.Synchronize();
    }

    /// <summary>out_proj GEMV at batch 1: 1 × 1536 → 768.</summary>
    [Benchmark(OperationsPerInvoke = Launches)]
    public void GemvOutProj()
    {
        for (int i = 0; i < Launches; i++) _gpu.Linear(_y1, _outProj, null, _out1);
        _gpu.Synchronize();
    }

    /// <summary>lm_head GEMV at batch 1: 1 × 768 (f32) → 50280 (f32) logits, weight in the activation dtype.</summary>
    [Benchmark(OperationsPerInvoke = Launches)]
    public void GemvLmHead()
    {
        for (int i = 0; i < Launches; i++) _gpu.Linear(_last1, _lmHead, null, _logits1);
        _gpu.Synchronize();
    }

    /// <summary>One layer's decode-step inputs at batch 1: weights of layer 0, the step activations and the two states.</summary>
    [GlobalSetup(Targets = [nameof(DecodeConvStep), nameof(DecodeStateStep), nameof(DecodeLayerStep)])]
    public void SetupDecode()
    {
        Open();
        var w0 = GpuBench.Model130m;
        LoadSsm();
        LoadConv();
        _norm = Put(w0[ParameterId.Norm, 0], DType.F32, _d);
        _inProj = Put(w0[ParameterId.InProjWeight, 0], DType, 2 * _e, _d);
        _xProj = Put(w0[ParameterId.XProjWeight, 0], DType, _r + 2 * _n, _e);
        _outProj = Put(w0[ParameterId.OutProjWeight, 0], DType, _d, _e);
        _h1 = Fill(DType.F32, 1f, 1, 1, _d);
        _a1 = Empty(DType, 1, 1, _d);
        _xz1 = Fill(DType, 1f, 1, 1, 2 * _e);
        _u1 = Fill(DType, 1f, 1, 1, _e);
        _dbc1 = Fill(DType, 1f, 1, 1, _r + 2 * _n);
        _y1 = Empty(DType, 1, 1, _e);
        _out1 = Fill(DType, 0.01f, 1, 1, _d);
        _convState1 = Fill(DType.F32, 1f, 1, _e, _k);
        _ssmState1 = Fill(DType.F32, 1f, 1, _e, _n);
    }

    /// <summary>Conv decode step at batch 1: shift the [1, 1536, 4] window, take the new x, bias + SiLU.</summary>
    [Benchmark(OperationsPerInvoke = Launches)]
    public void DecodeConvStep()
    {
        for (int i = 0; i < Launches; i++) _gpu.CausalConv1dStep(_xz1, _conv, _convBias, _convState1, _u1);
        _gpu.Synchronize();
    }

    /// <summary>Selective state update at batch 1 ([1, 1536, 16] state, Δ projection fused in).</summary>
    [Benchmark(OperationsPerInvoke = Launches)]
    public void DecodeStateStep()
    {
        for (int i = 0; i < Launches; i++) _gpu.SelectiveStateStep(_ssm, _u1, _dbc1, _xz1, _ssmState1, _y1);
        _gpu.Synchronize();
    }

    /// <summary>
    /// One whole layer of a decode step at batch 1, op by op as the model issues it: add + RMSNorm, in_proj, conv step,
    /// x_proj, state step, out_proj (the captured decode graph replays 24 of these plus embedding, norm_f, lm_head, argmax).
    /// </summary>
    [Benchmark(OperationsPerInvoke = Launches)]
    public void DecodeLayerStep()
    {
        for (int i = 0; i < Launches; i++)
        {
            _gpu.AddRmsNorm(_h1, _out1, _norm, Epsilon, _a1);
            _gpu.Linear(_a1, _inProj, null, _xz1);
            _gpu.CausalConv1dStep(_xz1, _conv, _convBias, _convState1, _u1);
            _gpu.Linear(_u1, _xProj, null, _dbc1);
            _gpu.SelectiveStateStep(_ssm, _u1, _dbc1, _xz1, _ssmState1, _y1);
            _gpu.Linear(_y1, _outProj, null, _out1);
        }
        _gpu.Synchronize();
    }

    /// <summary>Frees this case's tensors (the shared backend stays open for the next case).</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }

    /// <summary>The minimum bytes each op must move (or the FLOP of the GEMM), for the Rate column.</summary>
    internal static Work? WorkOf(BenchmarkCase benchmarkCase)
    {
        var c = MambaConfig.Preset("130m");
        double d = c.HiddenSize, e = c.IntermediateSize, n = c.StateSize, r = c.TimeStepRank, k = c.ConvKernel, v = c.VocabSize;
        double s = benchmarkCase.Parameters["DType"] is DType dt ? dt.SizeInBytes() : 4, m = Rows;
        return benchmarkCase.Descriptor.WorkloadMethod.Name switch
        {
            nameof(SelectiveScan) => Work.Bytes(m * s * (3 * e + r + 2 * n)),                  // u, z, y, dbc
            nameof(CausalConv1d) => Work.Bytes(m * s * 2 * e),                                 // x in, u out
            nameof(AddRmsNorm) => Work.Bytes(m * d * (2 * 4 + 2 * s)),                          // residual f32 in and out, delta in, output out
            nameof(InProjGemm) => Work.Flop(2 * m * 2 * e * d),
            nameof(GemvInProj) => Work.Bytes(2 * e * d * s),                                    // the weight dominates
            nameof(GemvOutProj) => Work.Bytes(d * e * s),
            nameof(GemvLmHead) => Work.Bytes(v * d * s + v * 4),
            nameof(DecodeConvStep) => Work.Bytes(e * k * 4 * 3 + 2 * e * s),                    // state in and out, weight; x, u
            nameof(DecodeStateStep) => Work.Bytes(e * n * 4 * 3 + e * r * s + 4 * e * s),       // state in and out, A; W_dt; u, z, y, dbc
            nameof(DecodeLayerStep) => Work.Bytes((2 * e * d + (r + 2 * n) * e + e * r + d * e) * s + e * (k + n) * 4 * 2),
            _ => null,
        };
    }

    private sealed class Config : GpuConfig
    {
        public Config() : base(WorkOf) { }
    }
}
