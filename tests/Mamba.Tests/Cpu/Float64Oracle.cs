namespace Mamba.Tests.Cpu;

/// <summary>
/// Straight-line float64 versions of the model's ops, written from the spec's formulas (mamba-spec §5, §8),
/// with the layouts of the backend interface. Slow and obvious on purpose: the independent reference
/// for the vectorised, parallel CPU backend.
/// </summary>
internal static class Float64Oracle
{
    public static double Softplus(double v) => v > 20 ? v : Math.Log(1 + Math.Exp(v));
    public static double Silu(double v) => v / (1 + Math.Exp(-v));

    public static double[] Linear(float[] x, float[] w, float[]? bias, int m, int n, int k)
    {
        var y = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = bias?[j] ?? 0;
                for (int p = 0; p < k; p++) s += (double)x[i * k + p] * w[j * k + p];
                y[i * n + j] = s;
            }
        return y;
    }

    public static double[] RmsNorm(float[] x, float[] w, double eps, int rows, int d)
    {
        var y = new double[rows * d];
        for (int r = 0; r < rows; r++)
        {
            double ms = 0;
            for (int j = 0; j < d; j++) ms += (double)x[r * d + j] * x[r * d + j];
            double scale = 1 / Math.Sqrt(ms / d + eps);
            for (int j = 0; j < d; j++) y[r * d + j] = w[j] * (x[r * d + j] * scale);
        }
        return y;
    }

    /// <summary>u [B, L, E] = mask·silu(conv over x of xz [B, L, 2E]); convState [B, E, K] = last K inputs.</summary>
    public static (double[] U, double[] ConvState) Conv(float[] xz, float[] w, float[]? bias, float[]? mask, int batch, int length, int e, int k)
    {
        var u = new double[batch * length * e];
        var state = new double[batch * e * k];
        for (int b = 0; b < batch; b++)
            for (int c = 0; c < e; c++)
            {
                for (int t = 0; t < length; t++)
                {
                    double s = bias?[c] ?? 0;
                    for (int j = 0; j < k; j++)
                    {
                        int time = t - k + 1 + j;
                        if (time >= 0) s += (double)w[c * k + j] * xz[(b * length + time) * 2 * e + c];
                    }
                    u[(b * length + t) * e + c] = Silu(s) * (mask?[b * length + t] ?? 1);
                }
                for (int j = 0; j < k; j++)
                {
                    int time = length - k + j;
                    state[(b * e + c) * k + j] = time >= 0 ? xz[(b * length + time) * 2 * e + c] : 0;
                }
            }
        return (u, state);
    }

    /// <summary>
    /// The selective scan with Δ = softplus(W_dt·δ̃ + b_dt), from <paramref name="initial"/> (or zeros), returning
    /// y [B, L, E] and the final state [B, E, N].
    /// </summary>
    public static (double[] Y, double[] State) Scan(float[] u, float[] dbc, float[] xz, float[] wdt, float[] bdt, float[] aLog, float[] d,
        float[]? initial, int batch, int length, int e, int n, int r)
    {
        var y = new double[batch * length * e];
        var state = new double[batch * e * n];
        int width = r + 2 * n;
        for (int b = 0; b < batch; b++)
            for (int c = 0; c < e; c++)
            {
                var s = new double[n];
                if (initial is not null) for (int j = 0; j < n; j++) s[j] = initial[(b * e + c) * n + j];
                for (int t = 0; t < length; t++)
                {
                    int row = b * length + t;
                    double raw = 0;
                    for (int p = 0; p < r; p++) raw += (double)wdt[c * r + p] * dbc[row * width + p];
                    double delta = Softplus(raw + bdt[c]);
                    double uu = u[row * e + c], acc = 0;
                    for (int j = 0; j < n; j++)
                    {
                        double a = -Math.Exp(aLog[c * n + j]);
                        s[j] = Math.Exp(delta * a) * s[j] + delta * dbc[row * width + r + j] * uu;
                        acc += s[j] * dbc[row * width + r + n + j];
                    }
                    double z = xz[row * 2 * e + e + c];
                    y[row * e + c] = (acc + d[c] * uu) * Silu(z);
                }
                for (int j = 0; j < n; j++) state[(b * e + c) * n + j] = s[j];
            }
        return (y, state);
    }

    public static double CrossEntropy(float[] logits, int[] targets, int v, out int count)
    {
        double sum = 0;
        count = 0;
        for (int m = 0; m < targets.Length; m++)
        {
            if (targets[m] == -100) continue;
            double max = double.NegativeInfinity;
            for (int j = 0; j < v; j++) max = Math.Max(max, logits[m * v + j]);
            double total = 0;
            for (int j = 0; j < v; j++) total += Math.Exp(logits[m * v + j] - max);
            sum += max + Math.Log(total) - logits[m * v + targets[m]];
            count++;
        }
        return sum;
    }
}
