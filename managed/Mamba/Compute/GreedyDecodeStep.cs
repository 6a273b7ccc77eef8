using Mamba.Model;

namespace Mamba.Compute;

/// <summary>
/// The ops of one greedy decode step between the embedded residual and the logits, on buffers allocated when it was
/// prepared: <see cref="Queue"/> issues, without synchronising or touching host memory, exactly what the model runs
/// op by op for a decode step (every block, norm_f, lm_head), so a backend may record it (a CUDA graph).
/// </summary>
/// <param name="Residual">The residual stream [B, 1, d] (F32) the step starts from; the backend embeds the ids into it.</param>
/// <param name="Logits">The logits [B, 1, V] (F32) the step ends with.</param>
/// <param name="Queue">Issues the ops.</param>
/// <param name="Buffers">Every buffer the ops use (freed with the step).</param>
internal sealed record GreedyStepBody(DeviceTensor Residual, DeviceTensor Logits, Action Queue, IReadOnlyList<DeviceTensor> Buffers);

/// <summary>
/// What a backend needs to run a model's greedy decode step its own way (one cooperative kernel, a replayed graph):
/// the model's shape, its parameters by table key, the cache states it advances and the op sequence itself.
/// </summary>
internal sealed class GreedyStepRequest
{
    /// <summary>The model's configuration.</summary>
    public required MambaConfig Config { get; init; }

    /// <summary>The dtype of the model's matrices and activations on the backend.</summary>
    public required DType ActivationDType { get; init; }

    /// <summary>Rows of the cache the step advances.</summary>
    public required int BatchSize { get; init; }

    /// <summary>The model's parameters (a tied lm_head resolves to the embedding).</summary>
    public required ParameterStore<DeviceTensor> Parameters { get; init; }

    /// <summary>Per layer, the conv state [B, E, K] the step shifts in place.</summary>
    public required IReadOnlyList<DeviceTensor> ConvStates { get; init; }

    /// <summary>Per layer, the SSM state [B, E, N] (F32) the step advances in place.</summary>
    public required IReadOnlyList<DeviceTensor> SsmStates { get; init; }

    /// <summary>Allocates the step's buffers and returns its op sequence (called before any capture starts).</summary>
    public required Func<GreedyStepBody> PrepareBody { get; init; }

    /// <summary>Whether a single fused kernel may run the step (false after the backend refused it once for this model).</summary>
    public bool AllowFused { get; init; } = true;

    /// <summary>The caller's choice of the fused kernel (null: the backend's default for the dtype).</summary>
    public bool? PreferFused { get; init; }
}

/// <summary>A backend's greedy decode step bound to one cache: ids in, the argmax of each row's logits out.</summary>
internal interface IGreedyDecodeStep : IDisposable
{
    /// <summary>True once disposed (also when the backend that made it was disposed).</summary>
    bool IsDisposed { get; }

    /// <summary>How the step runs ("fused", "graph"), for reports and tests.</summary>
    string Path { get; }

    /// <summary>Runs one step: <paramref name="ids"/> [B] in [0, V), <paramref name="result"/> [B] the chosen next ids.</summary>
    void Launch(ReadOnlySpan<int> ids, Span<int> result);
}

/// <summary>A backend that can run a model's greedy decode step faster than op by op.</summary>
internal interface IGreedyDecodeAccelerator
{
    /// <summary>
    /// The backend's step for <paramref name="request"/>, or null with the reason in <paramref name="reason"/> when it
    /// has none for this model (the model then runs op by op). <paramref name="fusedRefusal"/> receives why the fused
    /// kernel was refused when it was tried and another path was taken. Running out of device memory while building the step
    /// is no refusal: <see cref="Native.MambaOutOfMemoryException"/> propagates, with nothing left allocated or capturing,
    /// so a later call may try again.
    /// </summary>
    IGreedyDecodeStep? TryCreateGreedyStep(GreedyStepRequest request, out string? reason, out string? fusedRefusal);
}
