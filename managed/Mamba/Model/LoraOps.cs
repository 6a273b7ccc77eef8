using Mamba.Compute;
using Mamba.Lora;

namespace Mamba.Model;

/// <summary>
/// A LoRA temporary for one call: the same tensor for the same slot, dtype and shape every time (every block's LoRA
/// term of that shape reuses it), which is safe because each temporary is consumed by the next queued ops, before any
/// later module writes the slot again (stream order on a device, program order on the CPU).
/// </summary>
internal delegate DeviceTensor RentTensor(string slot, DType dtype, params int[] shape);

/// <summary>
/// The unmerged LoRA path as backend ops, forward and backward. A linear module adds s·(x·Aᵀ)·Bᵀ to its layer's
/// output y: h = s·(x·Aᵀ) [rows, r] (scaled before B, so B's gradient is g yᵀ·h directly), then y += h·Bᵀ. The
/// embedding adds s·Aᵀ[id]·Bᵀ to the looked-up row. dt_proj, fused into the scan, runs on W + s·B·A instead.
/// </summary>
internal static class LoraOps
{
    /// <summary>h = s·(x·Aᵀ) [rows, r] in A's dtype.</summary>
    private static DeviceTensor Down(IMambaBackend be, LoraModuleOnDevice m, DeviceTensor x, RentTensor rent)
    {
        int inF = m.Down.Shape[1];
        int rows = checked((int)(x.ElementCount / inF));
        var h = rent("h", m.Down.DType, rows, m.Rank);
        be.Linear(x, m.Down, null, h);
        be.ScaleAdd(h, m.Scale, h, 0f);
        return h;
    }

    /// <summary>y += s·(x·Aᵀ)·Bᵀ.</summary>
    public static void AddLinear(IMambaBackend be, LoraModuleOnDevice m, DeviceTensor x, DeviceTensor y, RentTensor rent)
    {
        var h = Down(be, m, x, rent);
        var t = rent("t", y.DType, y.Shape);
        be.Linear(h, m.Up, null, t);
        be.ScaleAdd(t, 1f, y, 1f);
    }

    /// <summary>
    /// Backward of <see cref="AddLinear"/> given its input x and g y: GradUp += g yᵀ·h, GradDown += s·(g y·B)ᵀ·x and,
    /// when <paramref name="gradX"/> is given, gradX += s·(g y·B)·A. h is recomputed from x (rank r, cheap).
    /// </summary>
    public static void LinearBackward(IMambaBackend be, LoraModuleOnDevice m, DeviceTensor x, DeviceTensor gradY, DeviceTensor? gradX, RentTensor rent)
    {
        var h = Down(be, m, x, rent);
        var gh = rent("gh", m.Down.DType, h.Shape);
        be.LinearBackward(h, m.Up, gradY, gh, false, Required(m.GradUp, m), null);
        be.ScaleAdd(gh, m.Scale, gh, 0f);
        be.LinearBackward(x, m.Down, gh, gradX, true, Required(m.GradDown, m), null);
    }

    /// <summary>residual [rows, d] (F32) += s·Aᵀ[ids]·Bᵀ (the embedding adapter).</summary>
    public static void AddEmbedding(IMambaBackend be, LoraModuleOnDevice m, ReadOnlySpan<int> ids, DeviceTensor residual, RentTensor rent)
    {
        var h = rent("embedding.h", m.Down.DType, ids.Length, m.Rank);
        be.Embedding(m.Down, ids, h);
        be.ScaleAdd(h, m.Scale, h, 0f);
        var t = rent("embedding.t", DType.F32, residual.Shape);
        be.Linear(h, m.Up, null, t);
        be.ScaleAdd(t, 1f, residual, 1f);
    }

    /// <summary>Backward of <see cref="AddEmbedding"/> given g residual [rows, d] (F32): GradUp += gᵀ·h, GradDown (Aᵀ rows) += s·g·B scattered by id.</summary>
    public static void EmbeddingBackward(IMambaBackend be, LoraModuleOnDevice m, ReadOnlySpan<int> ids, DeviceTensor gradResidual, RentTensor rent)
    {
        var h = rent("embedding.h", m.Down.DType, ids.Length, m.Rank);
        be.Embedding(m.Down, ids, h);
        be.ScaleAdd(h, m.Scale, h, 0f);
        var gh = rent("embedding.gh", DType.F32, ids.Length, m.Rank);
        be.LinearBackward(h, m.Up, gradResidual, gh, false, Required(m.GradUp, m), null);
        be.ScaleAdd(gh, m.Scale, gh, 0f);
        be.EmbeddingBackward(ids, gh, Required(m.GradDown, m));
    }

    /// <summary>W + s·B·A [E, R] in W's dtype: the dt_proj weight the scan runs on with a dt_proj adapter.</summary>
    public static DeviceTensor EffectiveDtWeight(IMambaBackend be, LoraModuleOnDevice m, DeviceTensor weight, RentTensor rent)
    {
        var product = rent("dt.product", weight.DType, weight.Shape);
        be.Linear(m.Up, m.Down, null, product);           // B [E, r] · (Aᵀ [R, r])ᵀ = B·A [E, R]
        var effective = rent("dt.effective", weight.DType, weight.Shape);
        be.Copy(weight, effective);
        be.ScaleAdd(product, m.Scale, effective, 1f);
        return effective;
    }

    /// <summary>
    /// Backward of <see cref="EffectiveDtWeight"/> given g W [E, R] (F32, what the scan's backward added for the
    /// effective weight): GradUp += s·g W·A, GradDown (Aᵀ) += s·g Wᵀ·B.
    /// </summary>
    public static void DtWeightBackward(IMambaBackend be, LoraModuleOnDevice m, DeviceTensor gradWeight, RentTensor rent)
    {
        var scaled = rent("dt.scaled", DType.F32, gradWeight.Shape);
        be.ScaleAdd(gradWeight, m.Scale, scaled, 0f);
        be.LinearBackward(m.Up, m.Down, scaled, Required(m.GradUp, m), true, Required(m.GradDown, m), null);
    }

    private static DeviceTensor Required(DeviceTensor? gradient, LoraModuleOnDevice m) =>
        gradient ?? throw new InvalidOperationException($"LoRA module {m.Id.ModulePath} has no gradient buffers: the adapter is not being trained");
}
