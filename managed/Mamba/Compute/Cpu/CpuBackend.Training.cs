namespace Mamba.Compute.Cpu;

// The training (backward) ops of the CPU backend: shape checks here, the math in one file per op
// (CpuLinearBackward, CpuCrossEntropyBackward, CpuRmsNormBackward, CpuCausalConv1dBackward, CpuSelectiveScanBackward,
// CpuOptimizer).
internal sealed partial class CpuBackend
{
    /// <inheritdoc />
    public void EmbeddingBackward(ReadOnlySpan<int> ids, DeviceTensor gradOutput, DeviceTensor gradTable)
    {
        var go = Cpu(gradOutput, nameof(gradOutput));
        var gt = Cpu(gradTable, nameof(gradTable));
        if (gt.Shape.Length != 2) throw new ArgumentException($"gradTable must be [V, d], got {gt.ShapeText}", nameof(gradTable));
        int vocab = gt.Dim(0), width = gt.Dim(1);
        Expect(go, nameof(gradOutput), ids.Length, width);
        for (int m = 0; m < ids.Length; m++)
            if ((uint)ids[m] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(ids), ids[m], $"token id at position {m} is outside the vocabulary [0, {vocab})");
        // Rows in order: a repeated id sums its rows in one fixed order.
        for (int m = 0; m < ids.Length; m++)
        {
            var dst = gt.Data.AsSpan(ids[m] * width, width);
            System.Numerics.Tensors.TensorPrimitives.Add(dst, go.Data.AsSpan(m * width, width), dst);
        }
    }

    /// <inheritdoc />
    public double LinearCrossEntropyBackward(DeviceTensor hidden, DeviceTensor weight, ReadOnlySpan<int> targets, int ignoreIndex,
        float gradScale, DeviceTensor gradHidden, DeviceTensor? gradWeight, out int count)
    {
        var h = Cpu(hidden, nameof(hidden));
        var w = Cpu(weight, nameof(weight));
        var gh = Cpu(gradHidden, nameof(gradHidden));
        var gw = gradWeight is null ? null : Cpu(gradWeight, nameof(gradWeight));
        if (w.Shape.Length != 2) throw new ArgumentException($"weight must be [V, d], got {w.ShapeText}", nameof(weight));
        int vocab = w.Dim(0), width = w.Dim(1);
        if (width == 0 || h.ElementCount % width != 0)
            throw new ArgumentException($"hidden {h.ShapeText} has no rows of width {width} for weight {w.ShapeText}", nameof(hidden));
        int rows = (int)(h.ElementCount / width);
        if (targets.Length != rows) throw new ArgumentException($"{targets.Length} targets for {rows} rows", nameof(targets));
        Expect(gh, nameof(gradHidden), rows, width);
        if (gw is not null) Expect(gw, nameof(gradWeight), vocab, width);
        return CpuCrossEntropyBackward.Run(h.Data, w.Data, targets, ignoreIndex, gradScale, gh.Data, gw is null ? default : gw.Data, rows, vocab, width, _parallel, out count);
    }

    /// <inheritdoc />
    public void AddRmsNormBackward(DeviceTensor input, DeviceTensor weight, float epsilon, DeviceTensor gradOutput, DeviceTensor gradInput,
        DeviceTensor gradWeight)
    {
        var x = Cpu(input, nameof(input));
        var w = Cpu(weight, nameof(weight));
        var go = Cpu(gradOutput, nameof(gradOutput));
        var gi = Cpu(gradInput, nameof(gradInput));
        var gw = Cpu(gradWeight, nameof(gradWeight));
        int width = (int)w.ElementCount;
        if (width == 0 || x.ElementCount % width != 0)
            throw new ArgumentException($"input {x.ShapeText} has no rows of width {width}", nameof(input));
        int rows = (int)(x.ElementCount / width);
        Expect(go, nameof(gradOutput), rows, width);
        Expect(gi, nameof(gradInput), rows, width);
        Expect(gw, nameof(gradWeight), 1, width);
        CpuRmsNormBackward.Run(x.Data, w.Data, epsilon, go.Data, gi.Data, gw.Data, rows, width, _parallel);
    }

    /// <inheritdoc />
    public void LinearBackward(DeviceTensor x, DeviceTensor weight, DeviceTensor gradY, DeviceTensor? gradX, bool accumulateGradX,
        DeviceTensor? gradWeight, DeviceTensor? gradBias)
    {
        var xt = Cpu(x, nameof(x));
        var w = Cpu(weight, nameof(weight));
        var gy = Cpu(gradY, nameof(gradY));
        var gw = gradWeight is null ? null : Cpu(gradWeight, nameof(gradWeight));
        if (w.Shape.Length != 2) throw new ArgumentException($"weight must be [N, K], got {w.ShapeText}", nameof(weight));
        int n = w.Dim(0), k = w.Dim(1);
        if (k == 0 || xt.ElementCount % k != 0)
            throw new ArgumentException($"x {xt.ShapeText} has no rows of width {k} for weight {w.ShapeText}", nameof(x));
        int m = (int)(xt.ElementCount / k);
        Expect(gy, nameof(gradY), m, n);
        if (gw is not null) Expect(gw, nameof(gradWeight), n, k);
        if (gradX is not null)
        {
            var gx = Cpu(gradX, nameof(gradX));
            Expect(gx, nameof(gradX), m, k);
            CpuLinearBackward.InputGradient(gy.Data, w.Data, gx.Data, accumulateGradX, m, n, k, _parallel);
        }
        if (gw is not null) CpuLinearBackward.AddWeightGradient(gy.Data, xt.Data, k, gw.Data, m, n, k, _parallel);
        if (gradBias is not null)
        {
            var gb = Cpu(gradBias, nameof(gradBias));
            Expect(gb, nameof(gradBias), 1, n);
            CpuLinearBackward.AddColumnSums(gy.Data, gb.Data, m, n);
        }
    }

    /// <inheritdoc />
    public void CausalConv1dBackward(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor? mask, DeviceTensor gradU,
        DeviceTensor gradXz, DeviceTensor gradWeight, DeviceTensor? gradBias)
    {
        var (batch, length, inner, kernel, w, gu) = ConvShapes(xz, weight, gradU);
        float[]? maskData = null;
        if (mask is not null)
        {
            var mk = Cpu(mask, nameof(mask));
            if (mk.ElementCount != (long)batch * length) throw new ArgumentException($"mask {mask.ShapeText} is not [{batch}, {length}]", nameof(mask));
            maskData = mk.Data;
        }
        float[]? biasData = null;
        if (bias is not null)
        {
            var bt = Cpu(bias, nameof(bias));
            if (bt.ElementCount != inner) throw new ArgumentException($"bias {bt.ShapeText} is not [{inner}]", nameof(bias));
            biasData = bt.Data;
        }
        var gx = Cpu(gradXz, nameof(gradXz));
        Expect(gx, nameof(gradXz), (long)batch * length, 2 * inner);
        var gw = Cpu(gradWeight, nameof(gradWeight));
        Expect(gw, nameof(gradWeight), inner, kernel);
        float[]? gbData = null;
        if (gradBias is not null)
        {
            var gb = Cpu(gradBias, nameof(gradBias));
            Expect(gb, nameof(gradBias), 1, inner);
            gbData = gb.Data;
        }
        CpuCausalConv1dBackward.Run(Cpu(xz, nameof(xz)).Data, w.Data, biasData, maskData, gu.Data, gx.Data, gw.Data, gbData,
            batch, length, inner, kernel, _parallel);
    }

    /// <inheritdoc />
    public void SelectiveScanBackward(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor gradY,
        DeviceTensor gradU, DeviceTensor gradDbc, DeviceTensor gradXz, SsmGradients grads, DeviceTensor? checkpoints = null)
    {
        NoCheckpoints(checkpoints);
        ArgumentNullException.ThrowIfNull(ssm);
        ArgumentNullException.ThrowIfNull(grads);
        var a = Cpu(ssm.A, "ssm.A");
        var wdt = Cpu(ssm.DtProjWeight, "ssm.DtProjWeight");
        if (a.Shape.Length != 2 || wdt.Shape.Length != 2)
            throw new ArgumentException($"ssm.A {a.ShapeText} must be [E, N] and ssm.DtProjWeight {wdt.ShapeText} [E, R]", nameof(ssm));
        int inner = a.Dim(0), n = a.Dim(1), rank = wdt.Dim(1);
        Expect(wdt, "ssm.DtProjWeight", inner, rank);
        var bdt = Cpu(ssm.DtProjBias, "ssm.DtProjBias");
        Expect(bdt, "ssm.DtProjBias", 1, inner);
        var d = Cpu(ssm.D, "ssm.D");
        Expect(d, "ssm.D", 1, inner);
        var (batch, length, uInner) = Dims3(u, nameof(u), half: false);
        if (uInner != inner) throw new ArgumentException($"u {u.ShapeText} does not have E = {inner} channels", nameof(u));
        long rows = (long)batch * length;
        var ut = Cpu(u, nameof(u));
        var dbcT = Cpu(dbc, nameof(dbc));
        Expect(dbcT, nameof(dbc), rows, rank + 2 * n);
        var xzT = Cpu(xz, nameof(xz));
        Expect(xzT, nameof(xz), rows, 2 * inner);
        var gy = Cpu(gradY, nameof(gradY));
        Expect(gy, nameof(gradY), rows, inner);
        var gu = Cpu(gradU, nameof(gradU));
        Expect(gu, nameof(gradU), rows, inner);
        var gdbc = Cpu(gradDbc, nameof(gradDbc));
        Expect(gdbc, nameof(gradDbc), rows, rank + 2 * n);
        var gxz = Cpu(gradXz, nameof(gradXz));
        Expect(gxz, nameof(gradXz), rows, 2 * inner);
        var gWdt = Cpu(grads.DtProjWeight, "grads.DtProjWeight");
        Expect(gWdt, "grads.DtProjWeight", inner, rank);
        var gBdt = Cpu(grads.DtProjBias, "grads.DtProjBias");
        Expect(gBdt, "grads.DtProjBias", 1, inner);
        var gALog = Cpu(grads.ALog, "grads.ALog");
        Expect(gALog, "grads.ALog", inner, n);
        var gD = Cpu(grads.D, "grads.D");
        Expect(gD, "grads.D", 1, inner);
        CpuSelectiveScanBackward.Run(ut.Data, dbcT.Data, wdt.Data, bdt.Data, xzT.Data, a.Data, d.Data, gy.Data,
            gu.Data, gdbc.Data, gxz.Data, gWdt.Data, gBdt.Data, gALog.Data, gD.Data, batch, length, inner, rank, n, _parallel);
    }

    /// <inheritdoc />
    public double SumOfSquares(DeviceTensor tensor) => CpuOptimizer.SumOfSquares(Cpu(tensor, nameof(tensor)).Data, _parallel);

    /// <inheritdoc />
    public void AdamWStep(DeviceTensor master, DeviceTensor grad, DeviceTensor m, DeviceTensor v, DeviceTensor? parameter, bool negExp,
        in AdamWStepArgs args)
    {
        var w = Cpu(master, nameof(master));
        var g = Cpu(grad, nameof(grad));
        var mt = Cpu(m, nameof(m));
        var vt = Cpu(v, nameof(v));
        SameCount(w, g, nameof(grad));
        SameCount(w, mt, nameof(m));
        SameCount(w, vt, nameof(v));
        float[]? p = null;
        if (parameter is not null)
        {
            var pt = Cpu(parameter, nameof(parameter));
            SameCount(w, pt, nameof(parameter));
            p = pt.Data;
        }
        CpuOptimizer.AdamWStep(w.Data, g.Data, mt.Data, vt.Data, p, negExp, args, _parallel);
    }
}
