using Mamba.Model;
using Mamba.Native;

namespace Mamba.Compute.Cuda;

internal sealed partial class CudaBackend : IGreedyDecodeAccelerator
{
    /// <summary>Environment variable that, set to 1, turns the fast decode step off (every step runs op by op).</summary>
    internal const string DisableGraphsVariable = "MAMBA_DISABLE_CUDA_GRAPHS";

    /// <summary>
    /// Environment variable choosing how batch-1 greedy steps run: 1 = the fused decode kernel, 0 = the captured graph.
    /// Unset: the fused kernel for 16-bit activations (measured faster on the H200: 0.414 against 0.61 ms/token for
    /// 130m bf16, bench/RESULTS.md) and the graph for F32 (0.67 against 0.63). Both give the same bits.
    /// </summary>
    internal const string FusedDecodeVariable = "MAMBA_FUSED_DECODE";

    private static readonly bool GraphsDisabledByEnvironment = Environment.GetEnvironmentVariable(DisableGraphsVariable) == "1";
    private static readonly string? FusedEnvironment = Environment.GetEnvironmentVariable(FusedDecodeVariable);

    /// <inheritdoc />
    public IGreedyDecodeStep? TryCreateGreedyStep(GreedyStepRequest request, out string? reason, out string? fusedRefusal)
    {
        ArgumentNullException.ThrowIfNull(request);
        fusedRefusal = null;
        if (GraphsDisabledByEnvironment)
        {
            reason = $"{DisableGraphsVariable}=1";
            return null;
        }
        if (!IsOpen)
        {
            reason = "the CUDA context is closed";
            return null;
        }
        bool fused = request.PreferFused ?? (FusedEnvironment == "1" || (FusedEnvironment != "0" && request.ActivationDType != DType.F32));
        IGreedyDecodeStep? step = null;
        if (request.BatchSize == 1 && fused && request.AllowFused)
            step = FusedDecodePlan.TryCreate(this, request, out fusedRefusal);
        reason = null;
        step ??= DecodeGraph.TryCapture(this, request, out reason);
        return step;
    }

    /// <summary>
    /// The fused batch-1 decode kernel (<c>mamba_decode_plan_*</c>): one cooperative launch per step that runs every
    /// layer, norm_f, lm_head and argmax; same bits as the op-by-op step. Bound to one cache's state tensors.
    /// </summary>
    private sealed class FusedDecodePlan : IGreedyDecodeStep
    {
        private readonly CudaBackend _backend;
        private MambaDecodePlanHandle? _plan;

        private FusedDecodePlan(CudaBackend backend, MambaDecodePlanHandle plan)
        {
            _backend = backend;
            _plan = plan;
        }

        public bool IsDisposed { get; private set; }

        public string Path => "fused";

        /// <summary>The plan, or null with the reason when this model or device is not covered.</summary>
        public static FusedDecodePlan? TryCreate(CudaBackend backend, GreedyStepRequest request, out string? reason)
        {
            reason = null;
            var c = request.Config;
            var dt = request.ActivationDType;
            var parameters = request.Parameters;
            static IntPtr P(DeviceTensor? t) => t is null ? IntPtr.Zero : ((CudaTensor)t).Pointer;
            // The kernel reads matrices in the activation dtype and every vector (and A) in F32: the table's forms.
            bool Fits(DeviceTensor? t, ParameterForm form) => t is null || (t is CudaTensor && t.DType == (form == ParameterForm.Matrix ? dt : DType.F32));
            bool ok = Fits(parameters.TryGet(ParameterId.Embeddings), ParameterForm.Matrix) && Fits(parameters.TryGet(ParameterId.LmHead), ParameterForm.Matrix)
                && Fits(parameters.TryGet(ParameterId.NormF), ParameterForm.Vector);
            // Array elements are not constructed: each gets its own struct_size from the constructor.
            var layers = Enumerable.Range(0, c.NumHiddenLayers).Select(_ => new DecodeLayerDesc()).ToArray();
            for (int i = 0; i < layers.Length && ok; i++)
            {
                var conv = request.ConvStates[i];
                ok = conv is CudaTensor && conv.DType == request.ConvStates[0].DType && request.SsmStates[i] is CudaTensor && request.SsmStates[i].DType == DType.F32;
                ref var layer = ref layers[i];
                layer.ConvState = P(conv);
                layer.SsmState = P(request.SsmStates[i]);
                foreach (var spec in MambaParameterTable.LayerSpecs)
                {
                    var t = parameters.TryGet(spec.Id, i);
                    ok &= Fits(t, spec.Form);
                    if (ok) SetField(ref layer, spec.Id, P(t));
                }
            }
            if (!ok)
            {
                reason = "the model's tensors are not in the layout the fused kernel reads (matrices in the activation dtype, vectors in F32)";
                return null;
            }
            var model = new DecodeModelDesc
            {
                NumLayers = layers.Length, Hidden = c.HiddenSize, Inner = c.IntermediateSize, State = c.StateSize, Rank = c.TimeStepRank,
                ConvKernel = c.ConvKernel, Vocab = c.VocabSize, DType = (int)dt, ConvStateDType = (int)(layers.Length > 0 ? request.ConvStates[0].DType : DType.F32),
                Eps = (float)c.LayerNormEpsilon, Embedding = P(parameters[ParameterId.Embeddings]), NormF = P(parameters[ParameterId.NormF]),
                LmHead = P(parameters[ParameterId.LmHead]),
            };
            try
            {
                var handle = backend.CreateDecodePlan(ref model, layers);
                var plan = new FusedDecodePlan(backend, handle);
                backend.AddDependent(plan);
                return plan;
            }
            // Out of memory is no refusal (a later step may build the plan): it fails the call, and nothing is remembered.
            catch (MambaException ex) when (ex is not MambaOutOfMemoryException)
            {
                reason = ex.Message;
                return null;
            }
        }

        /// <summary>The descriptor field of a block parameter (the C struct's names, one per table entry).</summary>
        private static void SetField(ref DecodeLayerDesc layer, ParameterId id, IntPtr pointer)
        {
            switch (id)
            {
                case ParameterId.Norm: layer.NormWeight = pointer; break;
                case ParameterId.InProjWeight: layer.InProjWeight = pointer; break;
                case ParameterId.InProjBias: layer.InProjBias = pointer; break;
                case ParameterId.ConvWeight: layer.ConvWeight = pointer; break;
                case ParameterId.ConvBias: layer.ConvBias = pointer; break;
                case ParameterId.XProjWeight: layer.XProjWeight = pointer; break;
                case ParameterId.DtProjWeight: layer.DtProjWeight = pointer; break;
                case ParameterId.DtProjBias: layer.DtProjBias = pointer; break;
                case ParameterId.ALog: layer.A = pointer; break;
                case ParameterId.D: layer.D = pointer; break;
                case ParameterId.OutProjWeight: layer.OutProjWeight = pointer; break;
                case ParameterId.OutProjBias: layer.OutProjBias = pointer; break;
                default: throw new ArgumentOutOfRangeException(nameof(id), id, "not a block parameter of the fused decode kernel");
            }
        }

        public void Launch(ReadOnlySpan<int> ids, Span<int> result)
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

    /// <summary>
    /// One captured greedy decode step for one cache: ids in a device buffer → embedding → the model's step body (its
    /// blocks, norm_f, lm_head: the same ops as the op-by-op step, so the same bits) → device argmax, replayed with one
    /// library call. The graph bakes in every address: the cache's tensors keep theirs for the cache's lifetime (Reset and
    /// Restore overwrite in place), and the body's buffers live as long as the graph.
    /// </summary>
    private sealed class DecodeGraph : IGreedyDecodeStep
    {
        private readonly CudaBackend _backend;
        private readonly List<DeviceTensor> _buffers = new();
        private CudaTensor _ids = null!;
        private CudaTensor _chosen = null!;
        private MambaGraphHandle? _graph;

        private DecodeGraph(CudaBackend backend) => _backend = backend;

        public bool IsDisposed { get; private set; }

        public string Path => "graph";

        public static DecodeGraph? TryCapture(CudaBackend backend, GreedyStepRequest request, out string? reason)
        {
            reason = null;
            var g = new DecodeGraph(backend);
            bool capturing = false;
            try
            {
                int batch = request.BatchSize;
                g._ids = g.Buffer(DType.F32, batch);      // int32 storage
                g._chosen = g.Buffer(DType.F32, batch);   // int32 storage
                var body = request.PrepareBody();
                g._buffers.AddRange(body.Buffers);
                backend.Synchronize();
                backend.BeginCapture();
                capturing = true;
                backend.EmbeddingFromDevice(request.Parameters[ParameterId.Embeddings], g._ids, batch, body.Residual);
                body.Queue();
                backend.ArgMaxToDevice(body.Logits, g._chosen);
                g._graph = backend.EndCapture();
                capturing = false;
                backend.AddDependent(g);
                return g;
            }
            catch (Exception ex)
            {
                // Whatever failed, the stream must not stay capturing and the step's buffers must go.
                if (capturing) backend.AbortCapture();
                g.Dispose();
                // Out of memory is no refusal (a later step may capture): it fails the call, as anything unexpected does.
                if (ex is MambaOutOfMemoryException || ex is not (MambaException or ArgumentException or InvalidOperationException)) throw;
                reason = ex.Message;
                return null;
            }
        }

        private CudaTensor Buffer(DType dtype, params int[] shape)
        {
            var t = _backend.AllocateUninitialized(dtype, shape);
            _buffers.Add(t);
            return t;
        }

        public void Launch(ReadOnlySpan<int> ids, Span<int> result)
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
