namespace Mamba.Compute.Cpu;

/// <summary>
/// The optimizer's element-wise work: one AdamW step (torch.optim.AdamW with decoupled weight decay, in float32) and the
/// float64 sum of squares behind the global gradient norm. Both split into fixed chunks of <see cref="Chunk"/> elements,
/// so the results never depend on the thread count.
/// </summary>
internal static class CpuOptimizer
{
    private const int Chunk = 1 << 16;

    /// <summary>
    /// g = scale·grad; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; master ·= 1 − lr·wd; master −= (lr / bc1)·m /
    /// (sqrt(v / bc2) + ε); then parameter = −exp(master) (<paramref name="negExp"/>) or master, when given.
    /// </summary>
    public static void AdamWStep(float[] master, float[] grad, float[] m, float[] v, float[]? parameter, bool negExp, in AdamWStepArgs args,
        ParallelOptions parallel)
    {
        var a = args;
        int count = master.Length;
        float decay = 1f - a.LearningRate * a.WeightDecay;
        float stepSize = a.LearningRate / a.BiasCorrection1;
        void Part(int chunk)
        {
            int i0 = chunk * Chunk, i1 = Math.Min(count, i0 + Chunk);
            for (int i = i0; i < i1; i++)
            {
                float g = a.GradientScale * grad[i];
                float mi = a.Beta1 * m[i] + (1f - a.Beta1) * g;
                float vi = a.Beta2 * v[i] + (1f - a.Beta2) * (g * g);
                m[i] = mi;
                v[i] = vi;
                float w = master[i] * decay;
                w -= stepSize * mi / (MathF.Sqrt(vi / a.BiasCorrection2) + a.Epsilon);
                master[i] = w;
                if (parameter is not null) parameter[i] = negExp ? -MathF.Exp(w) : w;
            }
        }
        int chunks = (count + Chunk - 1) / Chunk;
        if (chunks <= 1) for (int c = 0; c < chunks; c++) Part(c);
        else Parallel.For(0, chunks, parallel, Part);
    }

    /// <summary>Σ x² in float64: each chunk summed in order, then the chunks in order.</summary>
    public static double SumOfSquares(float[] data, ParallelOptions parallel)
    {
        int chunks = (data.Length + Chunk - 1) / Chunk;
        var sums = new double[chunks];
        void Part(int chunk)
        {
            int i0 = chunk * Chunk, i1 = Math.Min(data.Length, i0 + Chunk);
            double s = 0;
            for (int i = i0; i < i1; i++) s += (double)data[i] * data[i];
            sums[chunk] = s;
        }
        if (chunks <= 1) for (int c = 0; c < chunks; c++) Part(c);
        else Parallel.For(0, chunks, parallel, Part);
        double total = 0;
        foreach (var s in sums) total += s;
        return total;
    }
}
