using Mamba.Compute;

namespace Mamba.Model;

public sealed partial class MambaForCausalLM
{
    private readonly object _decodeGate = new();
    private IGreedyDecodeStep? _decodeStep;
    private MambaCache? _decodeStepCache;
    private WeakReference<MambaCache>? _decodeCandidate;
    private bool _decodeStepFailed;
    private bool _fusedDecodeRefused;

    /// <summary>True or false forces the backend's single-kernel decode step on or off for batch 1; null leaves it to the backend (same bits either way).</summary>
    internal bool? UseFusedDecode { get; set; }

    /// <summary>How many decode steps ran as the fused batch-1 kernel (also counted in <see cref="FastDecodeSteps"/>).</summary>
    internal long FusedDecodeSteps { get; private set; }

    /// <summary>Why the fused decode kernel was not used, when the backend refused it (null while it works or was not tried).</summary>
    internal string? FusedDecodeUnavailableReason { get; private set; }

    /// <summary>Why the backend runs greedy steps op by op, when it has no faster step for this model (null otherwise).</summary>
    internal string? FastDecodeUnavailableReason { get; private set; }

    /// <summary>False runs every greedy decode step op by op (tests compare the two paths; both give the same bits).</summary>
    internal bool UseFastDecode { get; set; } = true;

    /// <summary>How many decode steps ran as the backend's step (tests check the fast path was taken).</summary>
    internal long FastDecodeSteps { get; private set; }

    /// <summary>How many backend steps were built (graphs captured, fused plans created).</summary>
    internal int FastDecodeCaptures { get; private set; }

    /// <summary>
    /// Runs a greedy decode step (one token per row on a filled cache, argmax into <paramref name="result"/>) the
    /// backend's own way when it has one (<see cref="IGreedyDecodeAccelerator"/>: on CUDA a fused kernel or a captured
    /// graph); false when none applies, and the op-by-op path runs instead. Both give the same tokens and cache bits.
    /// </summary>
    /// <remarks>
    /// The first step on a new cache runs op by op (it loads every kernel and GEMM algorithm outside any capture); the
    /// next one builds the backend's step, bound to that cache's state tensors (they keep their addresses for the
    /// cache's lifetime: Reset and Restore overwrite them in place). One step per model: a step on another cache
    /// replaces it. A backend that cannot build one is remembered and the op-by-op path stays; running out of device
    /// memory while building it is not remembered (the exception fails this call, the next step on the cache tries
    /// again). A step that fails while it runs leaves the cache's state lost (<see cref="MambaCache.StateLost"/>).
    /// </remarks>
    private bool TryFastDecode(int[] ids, MambaCache cache, int[] result)
    {
        if (!UseFastDecode || _decodeStepFailed || Backend is not IGreedyDecodeAccelerator accelerator) return false;
        if (_blocks.Length == 0 || ids.Length != cache.BatchSize || cache.Conv(0).IsDisposed) return false;
        int vocab = Config.VocabSize;
        foreach (var id in ids)
            if ((uint)id >= (uint)vocab) return false; // the op-by-op path reports it
        lock (_decodeGate)
        {
            var step = _decodeStep;
            if (step is not null && (step.IsDisposed || !ReferenceEquals(_decodeStepCache, cache)))
            {
                step.Dispose();
                _decodeStep = step = null;
                _decodeStepCache = null;
            }
            if (step is null)
            {
                if (_decodeCandidate is null || !_decodeCandidate.TryGetTarget(out var seen) || !ReferenceEquals(seen, cache))
                {
                    _decodeCandidate = new WeakReference<MambaCache>(cache);
                    return false;
                }
                step = accelerator.TryCreateGreedyStep(GreedyStepRequest(cache), out var reason, out var fusedRefusal);
                if (fusedRefusal is not null)
                {
                    _fusedDecodeRefused = true; // a plan the backend refused (shape, device) is not asked for again
                    FusedDecodeUnavailableReason = fusedRefusal;
                }
                if (step is null)
                {
                    _decodeStepFailed = true;
                    FastDecodeUnavailableReason = reason;
                    return false;
                }
                _decodeStep = step;
                _decodeStepCache = cache;
                _decodeCandidate = null;
                FastDecodeCaptures++;
            }
            try
            {
                step.Launch(ids, result);
            }
            catch
            {
                cache.MarkStateLost(); // the step may have advanced some layers' states
                throw;
            }
            FastDecodeSteps++;
            if (step.Path == "fused") FusedDecodeSteps++;
            return true;
        }
    }

    private GreedyStepRequest GreedyStepRequest(MambaCache cache) => new()
    {
        Config = Config,
        ActivationDType = ActivationDType,
        BatchSize = cache.BatchSize,
        Parameters = _parameters,
        ConvStates = Enumerable.Range(0, _blocks.Length).Select(cache.Conv).ToArray(),
        SsmStates = Enumerable.Range(0, _blocks.Length).Select(cache.Ssm).ToArray(),
        PrepareBody = () => GreedyStepBody(cache),
        AllowFused = !_fusedDecodeRefused,
        PreferFused = UseFusedDecode,
    };

    /// <summary>
    /// A decode step's buffers and ops from the embedded residual to the logits: <see cref="RunLayers"/> in step mode
    /// and the lm_head, the code the op-by-op step runs.
    /// </summary>
    private GreedyStepBody GreedyStepBody(MambaCache cache)
    {
        var c = Config;
        int batch = cache.BatchSize;
        var buffers = new List<DeviceTensor>();
        DeviceTensor Alloc(DType dtype, int[] shape)
        {
            var t = Backend.Allocate(dtype, shape);
            buffers.Add(t);
            return t;
        }
        try
        {
            var h = Alloc(DType.F32, [batch, 1, c.HiddenSize]);
            var act = BlockActivations.Allocate(c, ActivationDType, batch, 1, Alloc);
            var last = Alloc(DType.F32, [batch, 1, c.HiddenSize]);
            var head = _parameters[ParameterId.LmHead];
            var rounded = head.DType == DType.F32 ? last : Alloc(head.DType, [batch, 1, c.HiddenSize]);
            var logits = Alloc(DType.F32, [batch, 1, c.VocabSize]);
            return new GreedyStepBody(h, logits, () =>
            {
                RunLayers(h, act, BlockMode.Step, null, cache, last, null);
                LmHead(last, rounded, logits);
            }, buffers);
        }
        catch
        {
            foreach (var t in buffers) t.Dispose();
            throw;
        }
    }

    /// <summary>Frees the backend's decode step (and its buffers), if any.</summary>
    internal void ReleaseFastDecode()
    {
        lock (_decodeGate)
        {
            _decodeStep?.Dispose();
            _decodeStep = null;
            _decodeStepCache = null;
            _decodeCandidate = null;
        }
    }
}
