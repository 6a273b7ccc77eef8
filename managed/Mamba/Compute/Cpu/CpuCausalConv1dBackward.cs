namespace Mamba.Compute.Cpu;

/// <summary>
/// Backward of the causal depthwise conv + SiLU (+ mask) from zero history (mamba-spec §12.5), recomputing
/// c = b + Σ_k W[e, k]·x_{t−K+1+k} from xz: g c = g u·mask·silu′(c) for every row (parallel over rows), then
/// g x_τ = Σ_k g c_{τ+K−1−k}·W[e, k] (parallel over rows), then g W and g b per block of channels, each summing
/// batch and time in order (the same bits for any thread count).
/// </summary>
internal static class CpuCausalConv1dBackward
{
    private const int ChannelBlock = 64;

    /// <param name="xz">[B, L, 2E]; x is columns 0..E−1</param>
    /// <param name="weight">[E, K]</param>
    /// <param name="bias">[E] or null</param>
    /// <param name="mask">[B·L] or null</param>
    /// <param name="gradU">[B, L, E]</param>
    /// <param name="gradXz">[B, L, 2E]: columns 0..E−1 written, the rest untouched</param>
    /// <param name="gradWeight">[E, K], added to</param>
    /// <param name="gradBias">[E] or null, added to</param>
    public static void Run(float[] xz, float[] weight, float[]? bias, float[]? mask, float[] gradU, float[] gradXz, float[] gradWeight,
        float[]? gradBias, int batch, int length, int inner, int kernel, ParallelOptions parallel)
    {
        int rows = batch * length;
        var gradC = new float[(long)rows * inner];
        bool small = (long)rows * inner * kernel < 1 << 15;

        void Pre(int row)
        {
            int b = row / length, t = row % length;
            float m = mask is null ? 1f : mask[row];
            for (int e = 0; e < inner; e++)
            {
                float c = bias is null ? 0f : bias[e];
                for (int k = 0; k < kernel; k++)
                {
                    int time = t - kernel + 1 + k;
                    if (time >= 0) c += weight[e * kernel + k] * xz[((long)b * length + time) * 2 * inner + e];
                }
                float sig = CpuMath.Sigmoid(c);
                gradC[(long)row * inner + e] = gradU[(long)row * inner + e] * m * (sig * (1f + c * (1f - sig)));
            }
        }
        void Input(int row)
        {
            int b = row / length, tau = row % length;
            for (int e = 0; e < inner; e++)
            {
                float acc = 0f;
                for (int k = 0; k < kernel; k++)
                {
                    int t = tau + kernel - 1 - k;
                    if (t < length) acc += gradC[((long)b * length + t) * inner + e] * weight[e * kernel + k];
                }
                gradXz[(long)row * 2 * inner + e] = acc;
            }
        }
        int blocks = (inner + ChannelBlock - 1) / ChannelBlock;
        void Parameters(int block)
        {
            int e0 = block * ChannelBlock, e1 = Math.Min(inner, e0 + ChannelBlock), count = e1 - e0;
            var gw = new float[count * kernel];
            var gb = new float[count];
            for (int b = 0; b < batch; b++)
                for (int t = 0; t < length; t++)
                {
                    long row = (long)b * length + t;
                    for (int e = e0; e < e1; e++)
                    {
                        float g = gradC[row * inner + e];
                        gb[e - e0] += g;
                        for (int k = 0; k < kernel; k++)
                        {
                            int time = t - kernel + 1 + k;
                            if (time >= 0) gw[(e - e0) * kernel + k] += g * xz[((long)b * length + time) * 2 * inner + e];
                        }
                    }
                }
            for (int i = 0; i < count * kernel; i++) gradWeight[e0 * kernel + i] += gw[i];
            if (gradBias is not null)
                for (int i = 0; i < count; i++) gradBias[e0 + i] += gb[i];
        }

        if (small)
        {
            for (int r = 0; r < rows; r++) Pre(r);
            for (int r = 0; r < rows; r++) Input(r);
            for (int b = 0; b < blocks; b++) Parameters(b);
        }
        else
        {
            Parallel.For(0, rows, parallel, Pre);
            Parallel.For(0, rows, parallel, Input);
            Parallel.For(0, blocks, parallel, Parameters);
        }
    }
}
