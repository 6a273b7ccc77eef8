using Mamba.Native;

namespace Mamba.Compute.Cuda;

// The training (backward) ops of IMambaBackend: shape checks, then one libmamba entry each (native/src/*_bwd.cu,
// sum_of_squares.cu, adamw.cu). Parameter gradients are F32 and accumulated; activation gradients may be any dtype.
internal sealed partial class CudaBackend
{
    /// <inheritdoc />
    public unsafe void EmbeddingBackward(ReadOnlySpan<int> ids, DeviceTensor gradOutput, DeviceTensor gradTable)
    {
        var g = Cuda(gradOutput, nameof(gradOutput));
        var t = Cuda(gradTable, nameof(gradTable));
        RequireF32(g, nameof(gradOutput));
        RequireF32(t, nameof(gradTable));
        if (t.Shape.Length != 2) throw new ArgumentException($"gradTable must be [V, d], got {t.ShapeText}", nameof(gradTable));
        int vocab = t.Dim(0), width = t.Dim(1);
        Expect(g, nameof(gradOutput), ids.Length, width);
        CheckIds(ids, vocab);
        if (ids.Length == 0) return;
        fixed (int* p = ids)
            Check(NativeMethods.mamba_embedding_bwd(Ctx, p, ids.Length, g.Pointer, vocab, width, t.Pointer), "embedding backward");
    }

    /// <inheritdoc />
    public unsafe double LinearCrossEntropyBackward(DeviceTensor hidden, DeviceTensor weight, ReadOnlySpan<int> targets, int ignoreIndex,
        float gradScale, DeviceTensor gradHidden, DeviceTensor? gradWeight, out int count)
    {
        var h = Cuda(hidden, nameof(hidden));
        var w = Cuda(weight, nameof(weight));
        var gh = Cuda(gradHidden, nameof(gradHidden));
        var gw = gradWeight is null ? null : Cuda(gradWeight, nameof(gradWeight));
        if (w.Shape.Length != 2) throw new ArgumentException($"weight must be [V, d], got {w.ShapeText}", nameof(weight));
        int vocab = w.Dim(0), width = w.Dim(1);
        if (width <= 0 || h.ElementCount % width != 0) throw new ArgumentException($"hidden {h.ShapeText} has no rows of {width}", nameof(hidden));
        long rows = h.ElementCount / width;
        if (targets.Length != rows) throw new ArgumentException($"{targets.Length} targets for {rows} rows", nameof(targets));
        RequireF32(gh, nameof(gradHidden));
        Expect(gh, nameof(gradHidden), rows, width);
        if (gw is not null)
        {
            RequireF32(gw, nameof(gradWeight));
            Expect(gw, nameof(gradWeight), vocab, width);
        }
        for (int m = 0; m < targets.Length; m++)
            if (targets[m] != ignoreIndex && (uint)targets[m] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(targets), targets[m], $"target at row {m} is outside [0, {vocab})");
        count = 0;
        if (rows == 0) return 0;
        double sum;
        long n;
        fixed (int* pt = targets)
        {
            var p = new LinearCrossEntropyParams
            {
                HiddenDType = (int)h.DType, WeightDType = (int)w.DType, IgnoreIndex = ignoreIndex, GradScale = gradScale,
                Rows = rows, Vocab = vocab, Dim = width, Hidden = h.Pointer, Weight = w.Pointer, HostTargets = pt,
                GradHidden = gh.Pointer, GradWeight = gw?.Pointer ?? IntPtr.Zero, LossSum = &sum, Count = &n,
            };
            Check(NativeMethods.mamba_linear_cross_entropy_bwd(Ctx, in p), "lm_head + cross-entropy backward");
        }
        count = checked((int)n);
        return sum;
    }

    /// <inheritdoc />
    public void AddRmsNormBackward(DeviceTensor input, DeviceTensor weight, float epsilon, DeviceTensor gradOutput, DeviceTensor gradInput,
        DeviceTensor gradWeight)
    {
        var x = Cuda(input, nameof(input));
        var w = Cuda(weight, nameof(weight));
        var gy = Cuda(gradOutput, nameof(gradOutput));
        var gx = Cuda(gradInput, nameof(gradInput));
        var gw = Cuda(gradWeight, nameof(gradWeight));
        int width = w.Dim(0);
        if (width <= 0 || w.ElementCount != width) throw new ArgumentException($"weight {w.ShapeText} is not [d]", nameof(weight));
        long rows = x.ElementCount / width;
        Expect(x, nameof(input), rows, width);
        Expect(gy, nameof(gradOutput), rows, width);
        Expect(gx, nameof(gradInput), rows, width);
        Expect(gw, nameof(gradWeight), 1, width);
        RequireF32(gx, nameof(gradInput));
        RequireF32(gw, nameof(gradWeight));
        var p = new AddRmsNormParams
        {
            ResidualDType = (int)x.DType, DeltaDType = 0, WeightDType = (int)w.DType, OutDType = 0, Epsilon = epsilon, Rows = rows, Dim = width,
            Residual = x.Pointer, Weight = w.Pointer,
        };
        var g = new AddRmsNormGrads { GradOutDType = (int)gy.DType, GradOut = gy.Pointer, GradInput = gx.Pointer, GradWeight = gw.Pointer };
        Check(NativeMethods.mamba_add_rmsnorm_bwd(Ctx, in p, in g), "add_rmsnorm backward");
    }

    /// <inheritdoc />
    public void LinearBackward(DeviceTensor x, DeviceTensor weight, DeviceTensor gradY, DeviceTensor? gradX, bool accumulateGradX,
        DeviceTensor? gradWeight, DeviceTensor? gradBias)
    {
        var xt = Cuda(x, nameof(x));
        var w = Cuda(weight, nameof(weight));
        var gy = Cuda(gradY, nameof(gradY));
        var (n, k, m) = LinearShape(xt, w);
        Expect(gy, nameof(gradY), m, n);
        var g = new LinearGrads { GradYDType = (int)gy.DType, GradY = gy.Pointer, AccumulateGradX = accumulateGradX ? 1 : 0 };
        if (gradWeight is not null)
        {
            var gw = Cuda(gradWeight, nameof(gradWeight));
            RequireF32(gw, nameof(gradWeight));
            Expect(gw, nameof(gradWeight), n, k);
            g.GradW = gw.Pointer;
        }
        if (gradX is not null)
        {
            var gx = Cuda(gradX, nameof(gradX));
            Expect(gx, nameof(gradX), m, k);
            g.GradX = gx.Pointer;
            g.GradXDType = (int)gx.DType;
        }
        if (gradBias is not null)
        {
            var gb = Cuda(gradBias, nameof(gradBias));
            RequireF32(gb, nameof(gradBias));
            if (gb.ElementCount != n) throw new ArgumentException($"gradBias {gb.ShapeText} is not [{n}]", nameof(gradBias));
            g.GradBias = gb.Pointer;
        }
        var p = new LinearParams { XDType = (int)xt.DType, WDType = (int)w.DType, M = m, N = n, K = k, X = xt.Pointer, W = w.Pointer };
        Check(NativeMethods.mamba_linear_bwd(Ctx, in p, in g), "linear backward");
    }

    /// <inheritdoc />
    public void CausalConv1dBackward(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor? mask, DeviceTensor gradU,
        DeviceTensor gradXz, DeviceTensor gradWeight, DeviceTensor? gradBias)
    {
        var x = Cuda(xz, nameof(xz));
        if (x.Shape.Length != 3) throw new ArgumentException($"xz must be [B, L, 2E], got {x.ShapeText}", nameof(xz));
        if (x.Dim(2) % 2 != 0) throw new ArgumentException($"xz must have an even last dimension (x and z), got {x.ShapeText}", nameof(xz));
        int batch = x.Dim(0), length = x.Dim(1), inner = x.Dim(2) / 2;
        var w = Cuda(weight, nameof(weight));
        int kernel = w.Dim(-1);
        if (kernel <= 0 || w.ElementCount != (long)inner * kernel) throw new ArgumentException($"weight {w.ShapeText} is not [{inner}, K]", nameof(weight));
        var (bp, bdt) = Optional(bias, inner, nameof(bias));
        var gu = Cuda(gradU, nameof(gradU));
        Expect(gu, nameof(gradU), (long)batch * length, inner);
        var gx = Cuda(gradXz, nameof(gradXz));
        Expect(gx, nameof(gradXz), (long)batch * length, 2L * inner);
        var gw = Cuda(gradWeight, nameof(gradWeight));
        RequireF32(gw, nameof(gradWeight));
        Expect(gw, nameof(gradWeight), inner, kernel);
        IntPtr gbp = IntPtr.Zero;
        if (gradBias is not null)
        {
            var gb = Cuda(gradBias, nameof(gradBias));
            RequireF32(gb, nameof(gradBias));
            if (gb.ElementCount != inner) throw new ArgumentException($"gradBias {gb.ShapeText} is not [{inner}]", nameof(gradBias));
            gbp = gb.Pointer;
        }
        IntPtr mp = IntPtr.Zero;
        if (mask is not null)
        {
            var mk = Cuda(mask, nameof(mask));
            RequireF32(mk, nameof(mask));
            if (mk.ElementCount != (long)batch * length) throw new ArgumentException($"mask {mk.ShapeText} is not [{batch}, {length}]", nameof(mask));
            mp = mk.Pointer;
        }
        var p = new CausalConv1dParams
        {
            ActDType = (int)x.DType, WeightDType = (int)w.DType, BiasDType = bdt, Batch = batch, Length = length, Channels = inner, Width = kernel,
            Xz = x.Pointer, Weight = w.Pointer, Bias = bp, Mask = mp,
        };
        var g = new CausalConv1dGrads
        {
            GradUDType = (int)gu.DType, GradXzDType = (int)gx.DType, GradU = gu.Pointer, GradXz = gx.Pointer, GradWeight = gw.Pointer, GradBias = gbp,
        };
        Check(NativeMethods.mamba_causal_conv1d_bwd(Ctx, in p, in g), "causal_conv1d backward");
    }

    /// <inheritdoc />
    public void SelectiveScanBackward(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor gradY,
        DeviceTensor gradU, DeviceTensor gradDbc, DeviceTensor gradXz, SsmGradients grads, DeviceTensor? checkpoints = null)
    {
        ArgumentNullException.ThrowIfNull(grads);
        var p = Ssm(ssm, u, dbc, xz, u, out int rows);  // u stands in for y (unused here); gradY may be another dtype
        var ut = Cuda(u, nameof(u));
        int batch = ut.Shape.Length == 3 ? ut.Dim(0) : 1;
        if (batch <= 0 || rows % batch != 0) throw new ArgumentException($"u {ut.ShapeText} has no whole batch rows", nameof(u));
        int length = rows / batch;
        var gy = Cuda(gradY, nameof(gradY));
        var gu = Cuda(gradU, nameof(gradU));
        var gd = Cuda(gradDbc, nameof(gradDbc));
        var gx = Cuda(gradXz, nameof(gradXz));
        Expect(gy, nameof(gradY), rows, p.Inner);
        Expect(gu, nameof(gradU), rows, p.Inner);
        Expect(gd, nameof(gradDbc), rows, p.Rank + 2L * p.State);
        Expect(gx, nameof(gradXz), rows, 2L * p.Inner);
        var gW = Cuda(grads.DtProjWeight, "grads.DtProjWeight");
        var gB = Cuda(grads.DtProjBias, "grads.DtProjBias");
        var gA = Cuda(grads.ALog, "grads.ALog");
        var gD = Cuda(grads.D, "grads.D");
        foreach (var (t, name) in new[] { (gW, "grads.DtProjWeight"), (gB, "grads.DtProjBias"), (gA, "grads.ALog"), (gD, "grads.D") })
            RequireF32(t, name);
        Expect(gW, "grads.DtProjWeight", p.Inner, p.Rank);
        Expect(gB, "grads.DtProjBias", 1, p.Inner);
        Expect(gA, "grads.ALog", p.Inner, p.State);
        Expect(gD, "grads.D", 1, p.Inner);
        var sc = ScanParams(p, ut, dbc, xz, u, IntPtr.Zero, batch, length);
        sc.Y = IntPtr.Zero;
        sc.Checkpoints = CheckpointPointer(checkpoints, batch, length, p);
        var g = new SelectiveScanGrads
        {
            GradYDType = (int)gy.DType, GradUDType = (int)gu.DType, GradDbcDType = (int)gd.DType, GradXzDType = (int)gx.DType,
            GradY = gy.Pointer, GradU = gu.Pointer, GradDbc = gd.Pointer, GradXz = gx.Pointer,
            GradDtWeight = gW.Pointer, GradDtBias = gB.Pointer, GradALog = gA.Pointer, GradD = gD.Pointer,
        };
        Check(NativeMethods.mamba_selective_scan_bwd(Ctx, in sc, in g), "selective_scan backward");
    }

    /// <inheritdoc />
    public double SumOfSquares(DeviceTensor tensor)
    {
        var t = Cuda(tensor, nameof(tensor));
        RequireF32(t, nameof(tensor));
        if (t.ElementCount == 0) return 0;
        Check(NativeMethods.mamba_sum_of_squares(Ctx, t.Pointer, t.ElementCount, out double result), "sum of squares");
        return result;
    }

    /// <inheritdoc />
    public void AdamWStep(DeviceTensor master, DeviceTensor grad, DeviceTensor m, DeviceTensor v, DeviceTensor? parameter, bool negExp,
        in AdamWStepArgs args)
    {
        var w = Cuda(master, nameof(master));
        var g = Cuda(grad, nameof(grad));
        var mt = Cuda(m, nameof(m));
        var vt = Cuda(v, nameof(v));
        foreach (var (t, name) in new[] { (w, nameof(master)), (g, nameof(grad)), (mt, nameof(m)), (vt, nameof(v)) })
        {
            RequireF32(t, name);
            if (t.ElementCount != w.ElementCount) throw new ArgumentException($"{name} {t.ShapeText} differs from master {w.ShapeText}", name);
        }
        var p = new AdamWParams
        {
            NegExp = negExp ? 1 : 0, Lr = args.LearningRate, Beta1 = args.Beta1, Beta2 = args.Beta2, Eps = args.Epsilon, WeightDecay = args.WeightDecay,
            BiasCorrection1 = args.BiasCorrection1, BiasCorrection2 = args.BiasCorrection2, GradScale = args.GradientScale,
            Count = w.ElementCount, Master = w.Pointer, Grad = g.Pointer, M = mt.Pointer, V = vt.Pointer,
        };
        if (parameter is not null)
        {
            var pt = Cuda(parameter, nameof(parameter));
            if (pt.ElementCount != w.ElementCount) throw new ArgumentException($"parameter {pt.ShapeText} differs from master {w.ShapeText}", nameof(parameter));
            p.Param = pt.Pointer;
            p.ParamDType = (int)pt.DType;
        }
        if (p.Count == 0) return;
        Check(NativeMethods.mamba_adamw_step(Ctx, in p), "AdamW step");
    }
}
