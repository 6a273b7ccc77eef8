namespace Mamba.Tests.Training;

/// <summary>
/// Plain-loop float64 forwards of the ops whose backward the CPU backend implements, with double inputs so that
/// central finite differences can perturb them (mamba-spec §5.2, §5.4, §9). Layouts are the backend's (token-major).
/// </summary>
internal static class Float64Forward
{
    public static double Sigmoid(double v) => 1 / (1 + Math.Exp(-v));
    public static double Silu(double v) => v / (1 + Math.Exp(-v));
    public static double Softplus(double v) => v > 20 ? v : Math.Log(1 + Math.Exp(v));

    /// <summary>y [M, N] = x [M, K]·wᵀ + b.</summary>
    public static double[] Linear(double[] x, double[] w, double[]? b, int m, int n, int k)
    {
        var y = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = b?[j] ?? 0;
                for (int p = 0; p < k; p++) s += x[i * k + p] * w[j * k + p];
                y[i * n + j] = s;
            }
        return y;
    }

    /// <summary>y = w ⊙ x·(mean(x²) + ε)^(−1/2) per row.</summary>
    public static double[] RmsNorm(double[] x, double[] w, double eps, int rows, int d)
    {
        var y = new double[rows * d];
        for (int r = 0; r < rows; r++)
        {
            double ms = 0;
            for (int j = 0; j < d; j++) ms += x[r * d + j] * x[r * d + j];
            double scale = 1 / Math.Sqrt(ms / d + eps);
            for (int j = 0; j < d; j++) y[r * d + j] = w[j] * x[r * d + j] * scale;
        }
        return y;
    }

    /// <summary>u [B, L, E] = silu(b + Σ_k W[e, k]·x_{t−K+1+k})·mask, x the first E columns of xz [B, L, 2E].</summary>
    public static double[] Conv(double[] xz, double[] w, double[]? bias, double[]? mask, int batch, int length, int e, int k)
    {
        var u = new double[batch * length * e];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < length; t++)
                for (int c = 0; c < e; c++)
                {
                    double acc = bias?[c] ?? 0;
                    for (int j = 0; j < k; j++)
                    {
                        int time = t - k + 1 + j;
                        if (time >= 0) acc += w[c * k + j] * xz[(b * length + time) * 2 * e + c];
                    }
                    u[(b * length + t) * e + c] = Silu(acc) * (mask?[b * length + t] ?? 1);
                }
        return u;
    }

    /// <summary>
    /// The selective scan from zero: Δ = softplus(W_dt·δ̃ + b_dt), A = −exp(A_log), s_t = exp(ΔA)⊙s + Δ·B·u,
    /// y = (Σ s·C + D·u)·silu(z). u [B, L, E], dbc [B, L, R+2N], xz [B, L, 2E] (z = columns E..), y [B, L, E].
    /// </summary>
    public static double[] Scan(double[] u, double[] dbc, double[] xz, double[] wdt, double[] bdt, double[] aLog, double[] d,
        int batch, int length, int inner, int n, int rank)
    {
        var y = new double[batch * length * inner];
        int width = rank + 2 * n;
        var s = new double[n];
        for (int b = 0; b < batch; b++)
            for (int e = 0; e < inner; e++)
            {
                Array.Clear(s);
                for (int t = 0; t < length; t++)
                {
                    int row = b * length + t;
                    double raw = bdt[e];
                    for (int r = 0; r < rank; r++) raw += wdt[e * rank + r] * dbc[row * width + r];
                    double dt = Softplus(raw), uu = u[row * inner + e], acc = 0;
                    for (int j = 0; j < n; j++)
                    {
                        double a = -Math.Exp(aLog[e * n + j]);
                        s[j] = Math.Exp(dt * a) * s[j] + dt * dbc[row * width + rank + j] * uu;
                        acc += s[j] * dbc[row * width + rank + n + j];
                    }
                    y[row * inner + e] = (acc + d[e] * uu) * Silu(xz[row * 2 * inner + inner + e]);
                }
            }
        return y;
    }

    /// <summary>Σ over rows with a target ≠ ignore of −log softmax(hidden·Wᵀ)[target].</summary>
    public static double LinearCrossEntropy(double[] hidden, double[] w, int[] targets, int ignore, int m, int v, int d)
    {
        var logits = Linear(hidden, w, null, m, v, d);
        double sum = 0;
        for (int i = 0; i < m; i++)
        {
            if (targets[i] == ignore) continue;
            double max = double.NegativeInfinity;
            for (int j = 0; j < v; j++) max = Math.Max(max, logits[i * v + j]);
            double total = 0;
            for (int j = 0; j < v; j++) total += Math.Exp(logits[i * v + j] - max);
            sum += max + Math.Log(total) - logits[i * v + targets[i]];
        }
        return sum;
    }

    /// <summary>
    /// Central differences of <paramref name="loss"/> with respect to every element of <paramref name="x"/> (perturbed in
    /// place and restored).
    /// </summary>
    public static double[] FiniteDifferences(double[] x, Func<double> loss, double h = 1e-5)
    {
        var g = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + h;
            double plus = loss();
            x[i] = keep - h;
            double minus = loss();
            x[i] = keep;
            g[i] = (plus - minus) / (2 * h);
        }
        return g;
    }

    /// <summary>Σ weights ⊙ values (the scalar loss whose gradient with respect to the output is <paramref name="weights"/>).</summary>
    public static double Dot(double[] weights, double[] values)
    {
        double s = 0;
        for (int i = 0; i < values.Length; i++) s += weights[i] * values[i];
        return s;
    }
}
