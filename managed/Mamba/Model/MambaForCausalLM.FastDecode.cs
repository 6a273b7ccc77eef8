using Mamba.Compute;
using Mamba.Compute.Cuda;
using Mamba.Native;

namespace Mamba.Model;

public sealed partial class MambaForCausalLM
{
    /// <summary>Environment variable that, set to 1, turns the captured decode step off (the op-by-op path runs).</summary>
    internal const string DisableGraphsVariable = "MAMBA_DISABLE_CUDA_GRAPHS";

    /// <summary>
    /// Environment variable choosing how batch-1 greedy steps run on CUDA: 1 = the fused decode kernel, 0 = the captured
    /// graph. Unset: the fused kernel for 16-bit activations (measured faster on the H200: 0.52 against 0.61 ms/token for
    /// 130m bf16) and the graph for F32 (0.67 against 0.63). Both give the same bits (bench/RESULTS.md).
    /// </summary>
    internal const string FusedDecodeVariable = "MAMBA_FUSED_DECODE";

    private static readonly bool GraphsDisabledByEnvironment = Environment.GetEnvironmentVariable(DisableGraphsVariable) == "1";
    private static readonly string? FusedEnvironment = Environment.GetEnvironmentVariable(FusedDecodeVariable);
    private bool? _useFusedDecode;

    private readonly object _decodeGate = new();
    private IFastDecodeStep? _decodeGraph;
    private WeakReference<MambaCache>? _decodeCandidate;
    private bool _decodeGraphFailed;
    private bool _fusedDecodeFailed;

    /// <summary>True runs batch-1 fast steps as the fused decode kernel instead of the captured graph (same bits either way).</summary>
    internal bool UseFusedDecode
    {
        get => _useFusedDecode ?? (FusedEnvironment == "1" || (FusedEnvironment != "0" && ActivationDType != DType.F32));
        set => _useFusedDecode = value;
    }

    /// <summary>How many decode steps ran as the fused batch-1 kernel (also counted in <see cref="FastDecodeSteps"/>).</summary>
    internal long FusedDecodeSteps { get; private set; }

    /// <summary>Why the fused decode kernel was not used, when it was refused (null while it works or was not tried).</summary>
    internal string? FusedDecodeUnavailableReason { get; private set; }

    /// <summary>
    /// False runs every greedy decode step op by op (tests compare the two paths; both give the same bits).
    /// </summary>
    internal bool UseFastDecode { get; set; } = !GraphsDisabledByEnvironment;

    /// <summary>How many decode steps ran as a graph replay (tests check the fast path was taken).</summary>
    internal long FastDecodeSteps { get; private set; }

    /// <summary>How many graphs were captured.</summary>
    internal int FastDecodeCaptures { get; private set; }

    /// <summary>
    /// A backend-specific greedy decode step (one token per row on a filled cache, argmax into
    /// <paramref name="result"/>), e.g. a captured CUDA graph. Returns false when none applies, and the
    /// generic op-by-op path runs instead; both must give the same tokens.
    /// </summary>
    /// <remarks>
    /// On CUDA the whole step (embedding, 24 × [add+RMSNorm, in_proj, conv update, x_proj, dt_proj + state
    /// update, out_proj], norm_f, lm_head, argmax) is captured once per cache as a CUDA graph and replayed with
    /// one library call: ids in, graph, B chosen ids out. The graph issues the same backend ops, with the same
    /// shapes, as <see cref="Run"/>, so it gives the same bits. The first step on a new cache runs op by op
    /// (it loads every kernel and cuBLAS algorithm eagerly, outside any capture); the next one captures.
    /// One graph per model: a step on another cache replaces it. The cache's tensors keep their addresses for
    /// the cache's lifetime (Reset and Restore overwrite them in place), which is what the graph relies on.
    /// </remarks>
    private bool TryFastDecode(int[] ids, MambaCache cache, int[] result)
    {
        if (!UseFastDecode || _decodeGraphFailed || Backend is not CudaBackend cuda || !cuda.IsOpen) return false;
        if (_layers.Length == 0 || ids.Length != cache.BatchSize || cache.Conv(0).IsDisposed) return false;
        int vocab = Config.VocabSize;
        foreach (var id in ids)
            if ((uint)id >= (uint)vocab) return false; // the generic path reports it
        lock (_decodeGate)
        {
            var graph = _decodeGraph;
            if (graph is not null && (graph.IsDisposed || !ReferenceEquals(graph.Cache, cache)))
            {
                graph.Dispose();
                _decodeGraph = graph = null;
            }
            if (graph is null)
            {
                if (_decodeCandidate is null || !_decodeCandidate.TryGetTarget(out var seen) || !ReferenceEquals(seen, cache))
                {
                    // First step on this cache: op by op (warms every kernel and cuBLAS algorithm outside a capture).
                    _decodeCandidate = new WeakReference<MambaCache>(cache);
                    return false;
                }
                if (ids.Length == 1 && UseFusedDecode && !_fusedDecodeFailed)
                {
                    graph = FusedDecodePlan.TryCreate(this, cuda, cache, out var reason);
                    if (graph is null)
                    {
                        // A plan the library refuses (unsupported shape/device) is remembered; the captured graph runs instead.
                        _fusedDecodeFailed = true;
                        FusedDecodeUnavailableReason = reason;
                    }
                }
                graph ??= DecodeGraph.TryCapture(this, cuda, cache);
                if (graph is null)
                {
                    _decodeGraphFailed = true; // something in the step cannot be captured here: stay on the generic path
                    return false;
                }
                _decodeGraph = graph;
                _decodeCandidate = null;
                FastDecodeCaptures++;
            }
            graph.Launch(ids, result);
            FastDecodeSteps++;
            if (graph is FusedDecodePlan) FusedDecodeSteps++;
            return true;
        }
    }

    /// <summary>Frees the captured decode graph (and its buffers), if any.</summary>
    internal void ReleaseFastDecode()
    {
        lock (_decodeGate)
        {
            _decodeGraph?.Dispose();
            _decodeGraph = null;
            _decodeCandidate = null;
        }
    }

    /// <summary>A backend-specific greedy decode step bound to one cache.</summary>
    private interface IFastDecodeStep : IDisposable
    {
        MambaCache Cache { get; }
        bool IsDisposed { get; }
        void Launch(int[] ids, int[] result);
    }

    /// <summary>
    /// The fused batch-1 decode kernel (<c>mamba_decode_plan_*</c>): one cooperative launch per step that runs every
    /// layer, norm_f, lm_head and argmax; same bits as the op-by-op step. Bound to one cache's state tensors.
    /// </summary>
    private sealed class FusedDecodePlan : IFastDecodeStep
    {
        private readonly CudaBackend _backend;
        private MambaDecodePlanHandle? _plan;

        private FusedDecodePlan(CudaBackend backend, MambaCache cache, MambaDecodePlanHandle plan)
        {
            _backend = backend;
            Cache = cache;
            _plan = plan;
        }

        public MambaCache Cache { get; }

        public bool IsDisposed { get; private set; }

        /// <summary>The plan, or null with the reason when this model or device is not covered.</summary>
        public static FusedDecodePlan? TryCreate(MambaForCausalLM m, CudaBackend backend, MambaCache cache, out string? reason)
        {
            reason = null;
            var c = m.Config;
            var dt = m.ActivationDType;
            static IntPtr P(DeviceTensor? t) => t is null ? IntPtr.Zero : ((CudaTensor)t).Pointer;
            bool Is(DeviceTensor? t, DType d) => t is null || (t is CudaTensor && t.DType == d);
            bool ok = Is(m._embeddings, dt) && Is(m._lmHead, dt) && Is(m._normF, DType.F32);
            var layers = new DecodeLayerDesc[m._layers.Length];
            for (int i = 0; i < layers.Length && ok; i++)
            {
                var L = m._layers[i];
                ok = Is(L.Norm, DType.F32) && Is(L.InProj, dt) && Is(L.InProjBias, DType.F32) && Is(L.Conv, DType.F32) && Is(L.ConvBias, DType.F32)
                    && Is(L.XProj, dt) && Is(L.Ssm.DtProjWeight, dt) && Is(L.Ssm.DtProjBias, DType.F32) && Is(L.Ssm.A, DType.F32)
                    && Is(L.Ssm.D, DType.F32) && Is(L.OutProj, dt) && Is(L.OutProjBias, DType.F32)
                    && cache.Conv(i) is CudaTensor && Is(cache.Ssm(i), DType.F32) && cache.Conv(i).DType == cache.Conv(0).DType;
                if (!ok) break;
                layers[i] = new DecodeLayerDesc
                {
                    NormWeight = P(L.Norm), InProjWeight = P(L.InProj), InProjBias = P(L.InProjBias), ConvWeight = P(L.Conv), ConvBias = P(L.ConvBias),
                    ConvState = P(cache.Conv(i)), XProjWeight = P(L.XProj), DtProjWeight = P(L.Ssm.DtProjWeight), DtProjBias = P(L.Ssm.DtProjBias),
                    A = P(L.Ssm.A), D = P(L.Ssm.D), SsmState = P(cache.Ssm(i)), OutProjWeight = P(L.OutProj), OutProjBias = P(L.OutProjBias),
                };
            }
            if (!ok)
            {
                reason = "the model's tensors are not in the layout the fused kernel reads (matrices in the activation dtype, vectors in F32)";
                return null;
            }
            var model = new DecodeModelDesc
            {
                NumLayers = layers.Length, Hidden = c.HiddenSize, Inner = c.IntermediateSize, State = c.StateSize, Rank = c.TimeStepRank,
                ConvKernel = c.ConvKernel, Vocab = c.VocabSize, DType = (int)dt, ConvStateDType = (int)(layers.Length > 0 ? cache.Conv(0).DType : DType.F32),
                Eps = (float)c.LayerNormEpsilon, Embedding = P(m._embeddings), NormF = P(m._normF), LmHead = P(m._lmHead),
            };
            try
            {
                var handle = backend.CreateDecodePlan(ref model, layers);
                var plan = new FusedDecodePlan(backend, cache, handle);
                backend.AddDependent(plan);
                return plan;
            }
            catch (MambaException ex)
            {
                reason = ex.Message;
                return null;
            }
        }

        public void Launch(int[] ids, int[] result)
        {
            ObjectDisposedException.ThrowIf(IsDisposed || _plan is null, this);
            result[0] = _backend.DecodePlanStep(_plan!, ids[0]);
        }

        public void Dispose()
        {
            if (IsDisposed) return;
            IsDisposed = true;
            _backend.RemoveDependent(this);
            _plan?.Dispose();
            _plan = null;
        }
    }

    /// <summary>One captured greedy decode step for one cache: the graph and every buffer it reads or writes.</summary>
    private sealed class DecodeGraph : IFastDecodeStep
    {
        private readonly CudaBackend _backend;
        private readonly List<DeviceTensor> _buffers = new();
        private CudaTensor _ids = null!;
        private CudaTensor _chosen = null!;
        private MambaGraphHandle? _graph;

        private DecodeGraph(CudaBackend backend, MambaCache cache)
        {
            _backend = backend;
            Cache = cache;
        }

        public MambaCache Cache { get; }

        public bool IsDisposed { get; private set; }

        public static DecodeGraph? TryCapture(MambaForCausalLM model, CudaBackend backend, MambaCache cache)
        {
            var g = new DecodeGraph(backend, cache);
            bool capturing = false;
            try
            {
                g.Record(model, cache, () =>
                {
                    backend.BeginCapture();
                    capturing = true;
                });
                g._graph = backend.EndCapture();
                capturing = false;
                backend.AddDependent(g);
                return g;
            }
            catch (Exception ex) when (ex is MambaException or ArgumentException or InvalidOperationException)
            {
                if (capturing) backend.AbortCapture();
                g.Dispose();
                return null;
            }
        }

        private CudaTensor Buffer(DType dtype, params int[] shape)
        {
            var t = _backend.AllocateUninitialized(dtype, shape);
            _buffers.Add(t);
            return t;
        }

        /// <summary>
        /// Allocates the step's buffers, then (between <paramref name="begin"/> and the caller's end of capture)
        /// queues exactly the ops of <see cref="MambaForCausalLM.Run"/> for a decode step with argmax output.
        /// </summary>
        private void Record(MambaForCausalLM m, MambaCache cache, Action begin)
        {
            var c = m.Config;
            var be = _backend;
            int batch = cache.BatchSize, d = c.HiddenSize, e = c.IntermediateSize, v = c.VocabSize;
            var dt = m.ActivationDType;
            _ids = Buffer(DType.F32, batch);      // int32 storage
            _chosen = Buffer(DType.F32, batch);   // int32 storage
            var h = Buffer(DType.F32, batch, 1, d);
            var a = Buffer(dt, batch, 1, d);
            var xz = Buffer(dt, batch, 1, 2 * e);
            var u = Buffer(dt, batch, 1, e);
            var dbc = Buffer(dt, batch, 1, c.TimeStepRank + 2 * c.StateSize);
            var y = Buffer(dt, batch, 1, e);
            var output = Buffer(dt, batch, 1, d);
            var last = Buffer(DType.F32, batch, 1, d);
            // The lm_head of an F32 activation on 16-bit weights rounds x to the weight dtype first (mamba_linear's
            // mixed path: convert into a context workspace, then the 16-bit GEMM). The graph does the same two
            // launches on its own buffer, so no context workspace (which may move when it grows) is baked in.
            var lmIn = m._lmHead.DType == DType.F32 ? last : Buffer(m._lmHead.DType, batch, 1, d);
            var logits = Buffer(DType.F32, batch, 1, v);
            be.Synchronize();
            begin();
            float eps = (float)c.LayerNormEpsilon;
            be.EmbeddingFromDevice(m._embeddings, _ids, batch, h);
            for (int i = 0; i < m._layers.Length; i++)
            {
                var L = m._layers[i];
                be.AddRmsNorm(h, i == 0 ? null : output, L.Norm, eps, a);
                be.Linear(a, L.InProj, L.InProjBias, xz);
                be.CausalConv1dStep(xz, L.Conv, L.ConvBias, cache.Conv(i), u);
                be.Linear(u, L.XProj, null, dbc);
                be.SelectiveStateStep(L.Ssm, u, dbc, xz, cache.Ssm(i), y);
                be.Linear(y, L.OutProj, L.OutProjBias, output);
            }
            be.AddRmsNorm(h, output, m._normF, eps, last);
            if (!ReferenceEquals(lmIn, last)) be.Copy(last, lmIn);
            be.Linear(lmIn, m._lmHead, null, logits);
            be.ArgMaxToDevice(logits, _chosen);
        }

        public void Launch(int[] ids, int[] result)
        {
            ObjectDisposedException.ThrowIf(IsDisposed || _graph is null, this);
            _backend.LaunchGraph(_graph!, ids, _ids, result, _chosen);
        }

        public void Dispose()
        {
            if (IsDisposed) return;
            IsDisposed = true;
            _backend.RemoveDependent(this);
            _graph?.Dispose();
            _graph = null;
            foreach (var t in _buffers) t.Dispose();
            _buffers.Clear();
        }
    }
}
