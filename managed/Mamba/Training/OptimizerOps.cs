using Mamba.Compute;

namespace Mamba.Training;

/// <summary>The two optimizer primitives the trainer uses: a sum of squares (norms, non-finite check) and one AdamW update.</summary>
internal interface IOptimizerOps
{
    /// <summary>Σ x² over <paramref name="tensor"/> in double precision (NaN or ∞ when an element is).</summary>
    double SumOfSquares(DeviceTensor tensor);

    /// <summary>One AdamW update with the contract of <see cref="IMambaBackend.AdamWStep"/>.</summary>
    void AdamWStep(DeviceTensor master, DeviceTensor grad, DeviceTensor m, DeviceTensor v, DeviceTensor? parameter, bool negExp, in AdamWStepArgs args);
}

/// <summary>The backend's own fused ops (the production path).</summary>
internal sealed class BackendOptimizerOps(IMambaBackend backend) : IOptimizerOps
{
    public double SumOfSquares(DeviceTensor tensor) => backend.SumOfSquares(tensor);

    public void AdamWStep(DeviceTensor master, DeviceTensor grad, DeviceTensor m, DeviceTensor v, DeviceTensor? parameter, bool negExp, in AdamWStepArgs args) =>
        backend.AdamWStep(master, grad, m, v, parameter, negExp, args);
}

/// <summary>
/// The same math in managed code through <see cref="IMambaBackend.Download"/>, <see cref="IMambaBackend.Upload"/> and
/// <see cref="IMambaBackend.Copy"/>: slow, for small models and tests, and the reference the fused ops follow
/// (torch.optim.AdamW's order of operations in float32).
/// </summary>
internal sealed class ManagedOptimizerOps(IMambaBackend backend) : IOptimizerOps
{
    public double SumOfSquares(DeviceTensor tensor)
    {
        var data = Read(tensor);
        double sum = 0;
        foreach (var x in data) sum += (double)x * x;
        return sum;
    }

    public void AdamWStep(DeviceTensor master, DeviceTensor grad, DeviceTensor m, DeviceTensor v, DeviceTensor? parameter, bool negExp, in AdamWStepArgs args)
    {
        var w = Read(master);
        var g = Read(grad);
        var mm = Read(m);
        var vv = Read(v);
        if (g.Length != w.Length || mm.Length != w.Length || vv.Length != w.Length)
            throw new ArgumentException($"AdamW operands differ in size: master {master.ShapeText}, grad {grad.ShapeText}, m {m.ShapeText}, v {v.ShapeText}");
        float decay = 1f - args.LearningRate * args.WeightDecay;
        float stepSize = args.LearningRate / args.BiasCorrection1;
        float sqrtBc2 = MathF.Sqrt(args.BiasCorrection2);
        for (int i = 0; i < w.Length; i++)
        {
            float gi = g[i] * args.GradientScale;
            mm[i] = args.Beta1 * mm[i] + (1f - args.Beta1) * gi;
            vv[i] = args.Beta2 * vv[i] + (1f - args.Beta2) * gi * gi;
            w[i] *= decay;
            float denom = MathF.Sqrt(vv[i]) / sqrtBc2 + args.Epsilon;
            w[i] -= stepSize * mm[i] / denom;
        }
        Write(w, master);
        Write(mm, m);
        Write(vv, v);
        if (parameter is not null)
        {
            if (negExp)
            {
                var a = new float[w.Length];
                for (int i = 0; i < a.Length; i++) a[i] = -MathF.Exp(w[i]);
                Write(a, parameter);
            }
            else Write(w, parameter);
        }
    }

    private float[] Read(DeviceTensor tensor)
    {
        var data = new float[tensor.ElementCount];
        backend.Download(tensor, data);
        return data;
    }

    private void Write(float[] data, DeviceTensor destination)
    {
        using var staged = backend.Upload(data, destination.DType, destination.Shape);
        backend.Copy(staged, destination);
    }
}
