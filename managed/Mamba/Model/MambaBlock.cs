using Mamba.Compute;
using Mamba.Lora;

namespace Mamba.Model;

/// <summary>How a block's sequence ops run in one forward call.</summary>
internal enum BlockMode
{
    /// <summary>A whole sequence from a zero state (prefill or training); fills the cache when one is given.</summary>
    Sequence,
    /// <summary>Several tokens continuing a filled cache (chunked prefill).</summary>
    Continue,
    /// <summary>One token on a filled cache (a decode step).</summary>
    Step,
}

/// <summary>
/// The activations one forward call shares across blocks: normed input a [B, L, d], in_proj output xz [B, L, 2E],
/// conv output u [B, L, E], x_proj output dbc [B, L, R+2N], gated scan output y [B, L, E] and the block output
/// [B, L, d] (the next block adds it to the residual stream), all in the activation dtype.
/// </summary>
internal sealed record BlockActivations(DeviceTensor Normed, DeviceTensor Xz, DeviceTensor U, DeviceTensor Dbc, DeviceTensor Y, DeviceTensor Output)
{
    /// <summary>The states the sequence-mode scan saves for its backward (training on a backend that saves them), or null.</summary>
    public DeviceTensor? ScanCheckpoints { get; init; }

    /// <summary>Allocates the activations of a [batch, length] call through <paramref name="allocate"/>.</summary>
    public static BlockActivations Allocate(MambaConfig c, DType dtype, int batch, int length, Func<DType, int[], DeviceTensor> allocate)
    {
        int d = c.HiddenSize, e = c.IntermediateSize;
        return new BlockActivations(
            allocate(dtype, [batch, length, d]),
            allocate(dtype, [batch, length, 2 * e]),
            allocate(dtype, [batch, length, e]),
            allocate(dtype, [batch, length, c.TimeStepRank + 2 * c.StateSize]),
            allocate(dtype, [batch, length, e]),
            allocate(dtype, [batch, length, d]));
    }
}

/// <summary>A loaded LoRA adapter applied in one forward call, and where its temporaries come from.</summary>
internal sealed record LoraCall(LoadedLoraAdapter Adapter, RentTensor Rent);

/// <summary>
/// One Mamba block (transformers' <c>MambaBlock</c> + <c>MambaMixer</c>) as a sequence of backend ops:
/// residual += previous block output, RMSNorm, in_proj, causal conv1d + SiLU, x_proj, the selective scan with
/// dt_proj, softplus, D skip and SiLU(z) gate fused in, out_proj. Every forward path (prefill, chunked prefill,
/// decode step, the captured decode graph) runs this code, so they issue the same ops in the same order.
/// </summary>
internal sealed class MambaBlock
{
    /// <summary>Binds block <paramref name="layer"/> to its parameters in <paramref name="parameters"/>.</summary>
    public MambaBlock(int layer, ParameterStore<DeviceTensor> parameters)
    {
        Layer = layer;
        DeviceTensor P(ParameterId id) => parameters[id, layer];
        DeviceTensor? Optional(ParameterId id) => parameters.TryGet(id, layer);
        Norm = P(ParameterId.Norm);
        InProj = P(ParameterId.InProjWeight);
        InProjBias = Optional(ParameterId.InProjBias);
        Conv = P(ParameterId.ConvWeight);
        ConvBias = Optional(ParameterId.ConvBias);
        XProj = P(ParameterId.XProjWeight);
        Ssm = new SsmParameters(P(ParameterId.DtProjWeight), P(ParameterId.DtProjBias), P(ParameterId.ALog), P(ParameterId.D));
        OutProj = P(ParameterId.OutProjWeight);
        OutProjBias = Optional(ParameterId.OutProjBias);
    }

    /// <summary>The block's index.</summary>
    public int Layer { get; }

    private DeviceTensor Norm { get; }
    private DeviceTensor InProj { get; }
    private DeviceTensor? InProjBias { get; }
    private DeviceTensor Conv { get; }
    private DeviceTensor? ConvBias { get; }
    private DeviceTensor XProj { get; }
    private SsmParameters Ssm { get; }
    private DeviceTensor OutProj { get; }
    private DeviceTensor? OutProjBias { get; }

    /// <summary>
    /// Runs the block: <paramref name="residual"/> [B, L, d] (F32) += <paramref name="previousOutput"/> (null for the
    /// first block), then the mixer into <c>act.Output</c>. <paramref name="residualReady"/> runs right after the add
    /// (the residual then holds the input of this block: hidden-state capture). <paramref name="mask"/> [B·L] zeroes
    /// padded rows before in_proj and after the conv (sequence mode). The cache states are read and/or written per
    /// <paramref name="mode"/>: optional in <see cref="BlockMode.Sequence"/>, required otherwise. With
    /// <paramref name="lora"/> the adapter's modules of this block add their low-rank terms (<see cref="LoraOps"/>).
    /// </summary>
    public void Forward(IMambaBackend be, float epsilon, DeviceTensor residual, DeviceTensor? previousOutput, BlockActivations act,
        BlockMode mode, DeviceTensor? mask, DeviceTensor? convState, DeviceTensor? ssmState, Action? residualReady = null,
        bool withOutput = true, LoraCall? lora = null)
    {
        var adapter = lora?.Adapter;
        be.AddRmsNorm(residual, previousOutput, Norm, epsilon, act.Normed);
        residualReady?.Invoke();
        if (mask is not null) be.MaskRows(act.Normed, mask);
        be.Linear(act.Normed, InProj, InProjBias, act.Xz);
        if (adapter?.Find(LoraTarget.InProj, Layer) is { } inLora) LoraOps.AddLinear(be, inLora, act.Normed, act.Xz, lora!.Rent);
        var ssm = adapter?.Find(LoraTarget.DtProj, Layer) is { } dtLora
            ? Ssm with { DtProjWeight = LoraOps.EffectiveDtWeight(be, dtLora, Ssm.DtProjWeight, lora!.Rent) }
            : Ssm;
        switch (mode)
        {
            case BlockMode.Step:
                be.CausalConv1dStep(act.Xz, Conv, ConvBias, Required(convState), act.U);
                XProjection(be, act, lora);
                be.SelectiveStateStep(ssm, act.U, act.Dbc, act.Xz, Required(ssmState), act.Y);
                break;
            case BlockMode.Continue:
                be.CausalConv1dContinue(act.Xz, Conv, ConvBias, act.U, Required(convState));
                XProjection(be, act, lora);
                be.SelectiveScanContinue(ssm, act.U, act.Dbc, act.Xz, act.Y, Required(ssmState));
                break;
            default:
                be.CausalConv1d(act.Xz, Conv, ConvBias, mask, act.U, convState);
                XProjection(be, act, lora);
                be.SelectiveScan(ssm, act.U, act.Dbc, act.Xz, act.Y, ssmState, act.ScanCheckpoints);
                break;
        }
        if (!withOutput) return;
        be.Linear(act.Y, OutProj, OutProjBias, act.Output);
        if (adapter?.Find(LoraTarget.OutProj, Layer) is { } outLora) LoraOps.AddLinear(be, outLora, act.Y, act.Output, lora!.Rent);
    }

    private void XProjection(IMambaBackend be, BlockActivations act, LoraCall? lora)
    {
        be.Linear(act.U, XProj, null, act.Dbc);
        if (lora?.Adapter.Find(LoraTarget.XProj, Layer) is { } m) LoraOps.AddLinear(be, m, act.U, act.Dbc, lora.Rent);
    }

    /// <summary>
    /// The block's backward (sequence mode), given its input <paramref name="input"/> [B, L, d] (F32: the residual
    /// stream after the add, which the forward normed) and the activations its forward left in <paramref name="act"/>.
    /// <paramref name="gradResidual"/> [B, L, d] (F32) holds d loss / d (block output + residual) on entry; the
    /// gradient flows on unchanged through the residual add and the norm's input gradient is added to it, so on exit it
    /// holds d loss / d <paramref name="input"/>. Parameter gradients are added to <paramref name="grads"/>; with
    /// <paramref name="frozen"/> instead the base weights are frozen: no weight-matrix gradient is computed and the
    /// small parameters' gradients land in its never-read sinks. <paramref name="lora"/>'s modules add their gradients
    /// to their own buffers (the forward must have run with the same adapter).
    /// </summary>
    public void Backward(IMambaBackend be, float epsilon, DeviceTensor input, BlockActivations act, DeviceTensor? mask,
        DeviceTensor gradResidual, BlockActivations grad, ParameterStore<DeviceTensor>? grads, FrozenGradientSinks? frozen = null,
        LoraCall? lora = null)
    {
        if ((grads is null) == (frozen is null)) throw new ArgumentException("pass either the parameter gradients or the frozen sinks");
        DeviceTensor G(ParameterId id) => grads?[id, Layer] ?? frozen!.Sink(id);
        DeviceTensor? Matrix(ParameterId id) => grads?[id, Layer];
        DeviceTensor? Optional(ParameterId id) => grads is not null ? grads.TryGet(id, Layer) : frozen!.OptionalSink(id);
        var adapter = lora?.Adapter;
        // out_proj: g y = g out · W_out (the block output's gradient is the residual stream's).
        be.LinearBackward(act.Y, OutProj, gradResidual, grad.Y, false, Matrix(ParameterId.OutProjWeight), Optional(ParameterId.OutProjBias));
        if (adapter?.Find(LoraTarget.OutProj, Layer) is { } outLora) LoraOps.LinearBackward(be, outLora, act.Y, gradResidual, grad.Y, lora!.Rent);
        // scan (with dt_proj, softplus, D skip and the SiLU(z) gate): g u, g dbc, and the z half of g xz. A dt_proj adapter
        // runs the scan on W + s·B·A again and takes that weight's gradient.
        var ssm = Ssm;
        var gradDt = G(ParameterId.DtProjWeight);
        var dtLora = adapter?.Find(LoraTarget.DtProj, Layer);
        if (dtLora is not null)
        {
            ssm = Ssm with { DtProjWeight = LoraOps.EffectiveDtWeight(be, dtLora, Ssm.DtProjWeight, lora!.Rent) };
            gradDt = lora.Rent("dt.grad", DType.F32, Ssm.DtProjWeight.Shape);
            be.Zero(gradDt);
        }
        be.SelectiveScanBackward(ssm, act.U, act.Dbc, act.Xz, grad.Y, grad.U, grad.Dbc, grad.Xz,
            new SsmGradients(gradDt, G(ParameterId.DtProjBias), G(ParameterId.ALog), G(ParameterId.D)), act.ScanCheckpoints);
        if (dtLora is not null)
        {
            LoraOps.DtWeightBackward(be, dtLora, gradDt, lora!.Rent);
            if (grads is not null) be.ScaleAdd(gradDt, 1f, grads[ParameterId.DtProjWeight, Layer], 1f);
        }
        // x_proj: u also feeds δ̃, B, C, so its input gradient adds to the scan's.
        be.LinearBackward(act.U, XProj, grad.Dbc, grad.U, true, Matrix(ParameterId.XProjWeight), null);
        if (adapter?.Find(LoraTarget.XProj, Layer) is { } xLora) LoraOps.LinearBackward(be, xLora, act.U, grad.Dbc, grad.U, lora!.Rent);
        // conv + SiLU (+ mask M2): the x half of g xz.
        be.CausalConv1dBackward(act.Xz, Conv, ConvBias, mask, grad.U, grad.Xz, G(ParameterId.ConvWeight), Optional(ParameterId.ConvBias));
        // in_proj, then the mask M1 on the normed input, then the norm (its input gradient joins the residual stream).
        be.LinearBackward(act.Normed, InProj, grad.Xz, grad.Normed, false, Matrix(ParameterId.InProjWeight), Optional(ParameterId.InProjBias));
        if (adapter?.Find(LoraTarget.InProj, Layer) is { } inLora) LoraOps.LinearBackward(be, inLora, act.Normed, grad.Xz, grad.Normed, lora!.Rent);
        if (mask is not null) be.MaskRows(grad.Normed, mask);
        be.AddRmsNormBackward(input, Norm, epsilon, grad.Normed, gradResidual, G(ParameterId.Norm));
    }

    private DeviceTensor Required(DeviceTensor? state) =>
        state ?? throw new InvalidOperationException($"block {Layer}: this mode continues a cache, and none was given");
}

/// <summary>
/// Where a frozen base model's small parameter gradients go (the backward ops always produce them): one F32 buffer per
/// parameter kind, shared by all layers and never read. Weight matrices get none (their gradients are not computed).
/// </summary>
internal sealed class FrozenGradientSinks(MambaConfig config, Func<DType, int[], DeviceTensor> rent)
{
    private readonly Dictionary<ParameterId, DeviceTensor> _sinks = [];

    public DeviceTensor Sink(ParameterId id)
    {
        if (_sinks.TryGetValue(id, out var t)) return t;
        var entry = MambaParameterTable.Entries(config).First(e => e.Key.Id == id);
        return _sinks[id] = rent(DType.F32, entry.DeviceShape);
    }

    public DeviceTensor? OptionalSink(ParameterId id) =>
        MambaParameterTable.Entries(config).Any(e => e.Key.Id == id) ? Sink(id) : null;
}
