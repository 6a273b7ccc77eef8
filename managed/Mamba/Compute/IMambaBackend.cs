namespace Mamba.Compute;

/// <summary>Which implementation runs the model.</summary>
public enum BackendKind
{
    /// <summary>The pure C# implementation (runs anywhere).</summary>
    Cpu,
    /// <summary>The native CUDA library.</summary>
    Cuda,
}

/// <summary>
/// The parameters of one mixer's state-space part, as stored on a backend.
/// Shapes: DtProjWeight [E, R], DtProjBias [E], ANegExp [E, N] (A = -exp(A_log), always F32),
/// D [E] (F32).
/// </summary>
internal sealed record SsmParameters(DeviceTensor DtProjWeight, DeviceTensor DtProjBias, DeviceTensor A, DeviceTensor D);

/// <summary>
/// Where <see cref="IMambaBackend.SelectiveScanBackward"/> adds the gradients of the mixer's state-space parameters
/// (all F32, accumulated with +=): DtProjWeight [E, R], DtProjBias [E], ALog [E, N] (d loss / d A_log = g A ⊙ A),
/// D [E].
/// </summary>
internal sealed record SsmGradients(DeviceTensor DtProjWeight, DeviceTensor DtProjBias, DeviceTensor ALog, DeviceTensor D);

/// <summary>
/// One AdamW update (decoupled weight decay, as torch.optim.AdamW): with g = GradientScale·grad,
/// m = β1·m + (1−β1)·g, v = β2·v + (1−β2)·g², master −= LearningRate·WeightDecay·master (first), then
/// master −= LearningRate·(m / BiasCorrection1) / (sqrt(v / BiasCorrection2) + Epsilon), where
/// BiasCorrection1 = 1 − β1^step and BiasCorrection2 = 1 − β2^step.
/// </summary>
internal readonly record struct AdamWStepArgs(
    float LearningRate, float Beta1, float Beta2, float Epsilon, float WeightDecay,
    float BiasCorrection1, float BiasCorrection2, float GradientScale);

/// <summary>
/// The compute operations a Mamba model needs, implemented once per device. Activations are
/// token-major: a [B, L, C] tensor is B·L rows of C contiguous values, so GEMM outputs feed the
/// next op without transposes. <c>xz</c> is in_proj's output [B, L, 2E]: columns 0..E−1 are x,
/// E..2E−1 are z. <c>dbc</c> is x_proj's output [B, L, R+2N]: δ̃, then B, then C.
/// Decode-step tensors documented as [B, C] may also be passed as [B, 1, C] (same memory).
/// Mixed dtypes: the residual stream, norm_f output and logits are F32 while weights and other
/// activations may be BF16/F16; <see cref="Embedding"/> may write an F32 output from a narrower table,
/// and <see cref="Linear"/> may take an F32 <c>x</c> (rounded to the weight dtype first) and write an F32 <c>y</c>.
/// Every method validates shapes and throws <see cref="ArgumentException"/> on a mismatch.
/// </summary>
internal interface IMambaBackend : IDisposable
{
    /// <summary>Which implementation this is.</summary>
    BackendKind Kind { get; }

    /// <summary>Human-readable description (device name, threads, library path).</summary>
    string Description { get; }

    /// <summary>Allocates a zero-filled tensor.</summary>
    DeviceTensor Allocate(DType dtype, params int[] shape);

    /// <summary>Copies host float32 data into a new tensor of <paramref name="dtype"/> (rounding to nearest even).</summary>
    DeviceTensor Upload(ReadOnlySpan<float> data, DType dtype, params int[] shape);

    /// <summary>
    /// Like <see cref="Upload"/>, but a backend whose tensors live in managed memory may keep <paramref name="data"/> itself
    /// instead of a copy (the CPU backend does for F32): the caller hands the array over and must not change it.
    /// </summary>
    DeviceTensor UploadOwned(float[] data, DType dtype, params int[] shape) => Upload(data, dtype, shape);

    /// <summary>
    /// Uploads the weight matrix [N, K] of a linear layer or the embedding table, which only <see cref="Linear"/>,
    /// <see cref="Embedding"/>, <see cref="Download"/> and <see cref="Copy"/> (as destination) will read: a backend may
    /// store it in a narrower format of its own (the CPU backend's <see cref="CpuWeightFormat"/>). Takes ownership of
    /// <paramref name="data"/> as <see cref="UploadOwned"/> does. The default is <see cref="UploadOwned"/>.
    /// </summary>
    DeviceTensor UploadWeight(float[] data, DType dtype, params int[] shape) => UploadOwned(data, dtype, shape);

    /// <summary>How <see cref="UploadWeight"/> stores weights: <see cref="CpuWeightFormat.F32"/> (as uploaded, in the dtype asked) unless a backend narrows them.</summary>
    CpuWeightFormat WeightFormat => CpuWeightFormat.F32;

    /// <summary>Copies a tensor to host memory as float32.</summary>
    void Download(DeviceTensor source, Span<float> destination);

    /// <summary>Copies <paramref name="source"/> into <paramref name="destination"/> (same shape and dtype).</summary>
    void Copy(DeviceTensor source, DeviceTensor destination);

    /// <summary>destination[j, :] = source[rows[j], :] for source [M, C] and destination [rows.Length, C] (same dtype).</summary>
    void GatherRows(DeviceTensor source, ReadOnlySpan<int> rows, DeviceTensor destination);

    /// <summary>
    /// destination[j, …] = source[indices[j], …] along the leading dimension, for tensors of any rank with the same
    /// trailing shape and dtype (e.g. the rows of a batch's [B, E, N] states).
    /// </summary>
    void GatherLeading(DeviceTensor source, ReadOnlySpan<int> indices, DeviceTensor destination);

    /// <summary>Sets every element to zero.</summary>
    void Zero(DeviceTensor tensor);

    /// <summary>output[m, :] = table[ids[m], :]; table [V, d], output [M, d]. Ids outside [0, V) throw.</summary>
    void Embedding(DeviceTensor table, ReadOnlySpan<int> ids, DeviceTensor output);

    /// <summary>
    /// The pre-norm of a block with the residual add fused in front: if <paramref name="delta"/> is not
    /// null, residual += delta; then output = RMSNorm(residual)·weight. residual, delta, output [M, d].
    /// </summary>
    void AddRmsNorm(DeviceTensor residual, DeviceTensor? delta, DeviceTensor weight, float epsilon, DeviceTensor output);

    /// <summary>Multiplies each row m of x [M, C] by mask[m] (mask [M], F32, values 0 or 1).</summary>
    void MaskRows(DeviceTensor x, DeviceTensor mask);

    /// <summary>y [M, N] = x [M, K] · weightᵀ (weight [N, K]) + bias [N].</summary>
    void Linear(DeviceTensor x, DeviceTensor weight, DeviceTensor? bias, DeviceTensor y);

    /// <summary>
    /// y = <paramref name="alpha"/>·x + <paramref name="beta"/>·y elementwise (same element count, any dtypes; math in F32,
    /// one rounding into y). With beta = 0 y is not read; x may be y. The LoRA path scales and adds with it.
    /// </summary>
    void ScaleAdd(DeviceTensor x, float alpha, DeviceTensor y, float beta);

    /// <summary>
    /// Causal depthwise conv over the x half of xz [B, L, 2E] with weight [E, K] and bias [E], then SiLU,
    /// then (if given) the attention mask [B·L]: u [B, L, E]. If <paramref name="convState"/> [B, E, K] is
    /// given it receives the last K inputs of each channel (zero-padded on the left when L &lt; K).
    /// </summary>
    void CausalConv1d(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor? mask, DeviceTensor u, DeviceTensor? convState);

    /// <summary>
    /// One decode step of the conv: convState [B, E, K] shifts left by one and takes x (the x half of xz
    /// [B, 2E]) as its newest column; u [B, E] = SiLU(bias + Σ_k weight[e, k]·convState[e, k]).
    /// </summary>
    void CausalConv1dStep(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor convState, DeviceTensor u);

    /// <summary>
    /// The selective scan from a zero state with the Δ projection fused in: Δ = softplus(W_dt·δ̃ + b_dt),
    /// s_t = exp(Δ·A)⊙s_{t−1} + Δ·B_t·u_t, y_t = (C_t·s_t + D·u_t)·SiLU(z_t). u [B, L, E], dbc [B, L, R+2N],
    /// xz [B, L, 2E] (z half used), y [B, L, E]. If <paramref name="ssmState"/> [B, E, N] (F32) is given it
    /// receives the final state. If <paramref name="checkpoints"/> (F32, of <see cref="ScanCheckpointShape"/>) is given
    /// it receives the states the backward starts from.
    /// </summary>
    void SelectiveScan(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor y, DeviceTensor? ssmState,
        DeviceTensor? checkpoints = null);

    /// <summary>
    /// The shape of the states <see cref="SelectiveScan"/> can save for <see cref="SelectiveScanBackward"/> (F32), or null
    /// when this backend's backward recomputes everything itself (then no checkpoints may be passed).
    /// </summary>
    int[]? ScanCheckpointShape(int batch, int length, int inner, int state);

    /// <summary>One decode step of the scan from <paramref name="ssmState"/> [B, E, N] (updated in place); u [B, E], dbc [B, R+2N], xz [B, 2E], y [B, E].</summary>
    void SelectiveStateStep(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor ssmState, DeviceTensor y);

    /// <summary>
    /// <see cref="CausalConv1d"/> continuing from <paramref name="convState"/> [B, E, K]: its last K−1 columns are
    /// the inputs before t = 0; afterwards it holds the last K inputs of the combined sequence. No mask.
    /// </summary>
    void CausalConv1dContinue(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor u, DeviceTensor convState);

    /// <summary><see cref="SelectiveScan"/> starting from <paramref name="ssmState"/> [B, E, N] (F32) instead of zero; the final state overwrites it.</summary>
    void SelectiveScanContinue(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor y, DeviceTensor ssmState);

    /// <summary>For each row of logits [M, V], the index of the largest value (lowest index on ties).</summary>
    void ArgMax(DeviceTensor logits, Span<int> result);

    /// <summary>
    /// Σ over rows with targets[m] ≠ <paramref name="ignoreIndex"/> of −log softmax(logits[m])[targets[m]],
    /// in float64 on the host side of the sum; <paramref name="count"/> receives the number of such rows.
    /// </summary>
    double CrossEntropySum(DeviceTensor logits, ReadOnlySpan<int> targets, int ignoreIndex, out int count);

    // ---- Training (backward) ops. Notation: g· = d loss / d·. Parameter gradients are F32 and accumulated (+=);
    // ---- activation gradients are overwritten unless said otherwise. Casts in the forward are identities here.

    /// <summary>gradTable[ids[m], :] += gradOutput[m, :] (scatter-add); gradOutput [M, d] F32, gradTable [V, d] F32.</summary>
    void EmbeddingBackward(ReadOnlySpan<int> ids, DeviceTensor gradOutput, DeviceTensor gradTable);

    /// <summary>
    /// The lm_head and cross-entropy fused, processed in row chunks so the [M, V] logits never exist at once. For each row m
    /// of <paramref name="hidden"/> [M, d] (F32 norm_f output, rounded to the weight dtype first like the forward
    /// <see cref="Linear"/>): logits = hidden·weightᵀ (weight [V, d]) in F32; rows whose target is
    /// <paramref name="ignoreIndex"/> contribute nothing. g logits = (softmax − onehot(target))·<paramref name="gradScale"/>;
    /// writes gradHidden [M, d] F32 (= g logits·weight, zero for ignored rows) and adds g logitsᵀ·hidden to
    /// gradWeight [V, d] F32 (null: a frozen lm_head, not computed). Returns Σ −log softmax[target] over counted rows (float64 sum) and their number in
    /// <paramref name="count"/>.
    /// </summary>
    double LinearCrossEntropyBackward(DeviceTensor hidden, DeviceTensor weight, ReadOnlySpan<int> targets, int ignoreIndex,
        float gradScale, DeviceTensor gradHidden, DeviceTensor? gradWeight, out int count);

    /// <summary>
    /// Backward of <see cref="AddRmsNorm"/> given its input <paramref name="input"/> [M, d] (F32: the residual after the
    /// add), weight [d] and <paramref name="gradOutput"/> [M, d] (activation dtype or F32): gradInput [M, d] F32 += g x
    /// (the residual stream's gradient, which also flows on unchanged), gradWeight [d] F32 += Σ_rows g y·x·r.
    /// </summary>
    void AddRmsNormBackward(DeviceTensor input, DeviceTensor weight, float epsilon, DeviceTensor gradOutput, DeviceTensor gradInput,
        DeviceTensor gradWeight);

    /// <summary>
    /// Backward of <see cref="Linear"/> y = x·weightᵀ + bias: x [M, K], weight [N, K], gradY [M, N] (activation dtype or
    /// F32, rounded to the weight dtype first). gradX [M, K] (activation dtype; null: not needed) = gradY·weight,
    /// overwritten or, with <paramref name="accumulateGradX"/>, added to; gradWeight [N, K] F32 += gradYᵀ·x (null: a
    /// frozen weight, not computed);
    /// gradBias [N] F32 (null when the layer has none) += Σ_rows gradY.
    /// </summary>
    void LinearBackward(DeviceTensor x, DeviceTensor weight, DeviceTensor gradY, DeviceTensor? gradX, bool accumulateGradX,
        DeviceTensor? gradWeight, DeviceTensor? gradBias);

    /// <summary>
    /// Backward of <see cref="CausalConv1d"/> (sequence form, from zero history), recomputing the conv from its input xz
    /// [B, L, 2E]: with c = conv(x) and g c = gradU·mask·silu′(c), writes the x half of gradXz [B, L, 2E] (columns 0..E−1;
    /// the z half is left as it is), gradWeight [E, K] F32 += Σ g c·x shifted, gradBias [E] F32 (null without a conv bias)
    /// += Σ g c. gradU [B, L, E]; mask [B·L] F32 or null.
    /// </summary>
    void CausalConv1dBackward(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor? mask, DeviceTensor gradU,
        DeviceTensor gradXz, DeviceTensor gradWeight, DeviceTensor? gradBias);

    /// <summary>
    /// Backward of <see cref="SelectiveScan"/> (from a zero state) given its inputs and gradY [B, L, E]. Recomputes the
    /// states in chunks of time instead of storing L × E × N. Writes gradU [B, L, E] (g y·D + Σ_n λ·Δ·B; overwritten),
    /// gradDbc [B, L, R+2N] (g δ̃, g B, g C; overwritten), the z half of gradXz [B, L, 2E] (columns E..2E−1; the x half is
    /// left as it is); adds the parameter gradients to <paramref name="grads"/>.
    /// </summary>
    /// <paramref name="checkpoints"/>: what <see cref="SelectiveScan"/> saved for these inputs, or null (the backward then
    /// recomputes them).
    void SelectiveScanBackward(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor gradY,
        DeviceTensor gradU, DeviceTensor gradDbc, DeviceTensor gradXz, SsmGradients grads, DeviceTensor? checkpoints = null);

    /// <summary>Σ x² over every element of an F32 tensor, summed in float64 (for the global gradient norm).</summary>
    double SumOfSquares(DeviceTensor tensor);

    /// <summary>
    /// One AdamW update of <paramref name="master"/> (F32) from <paramref name="grad"/> (F32) with moments m, v (F32, same
    /// shape; updated in place). If <paramref name="parameter"/> is given it then receives the model's form of the new
    /// master: −exp(master) when <paramref name="negExp"/> (A from A_log), else master rounded to the parameter's dtype.
    /// </summary>
    void AdamWStep(DeviceTensor master, DeviceTensor grad, DeviceTensor m, DeviceTensor v, DeviceTensor? parameter, bool negExp,
        in AdamWStepArgs args);

    /// <summary>Waits until all queued work has finished (a no-op on the CPU).</summary>
    void Synchronize();
}
