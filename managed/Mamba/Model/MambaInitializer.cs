namespace Mamba.Model;

/// <summary>
/// From-scratch parameters following the config's init scheme (transformers 5.17 semantics, spec §4):
/// normal(0, initializer_range) for embeddings, lm_head, in_proj and x_proj; A_log[e, n] = ln(n+1);
/// D = 1; dt_proj weight uniform(±R^−½·scale) or constant; dt bias = inverse softplus of
/// Δ₀ = exp(U·(ln t_max − ln t_min) + ln t_min) floored at time_step_floor; conv uniform(±1/√K);
/// out_proj uniform(±1/√E), ÷ √NL when rescale_prenorm_residual.
/// </summary>
public static class MambaInitializer
{
    /// <summary>
    /// Creates a randomly initialised model, reproducible for a given <paramref name="seed"/> (each layer and the
    /// embedding draw from their own seeded stream, so layers are initialised in parallel).
    /// </summary>
    public static MambaWeights Create(MambaConfig config, int seed = 0)
    {
        config.Validate();
        int d = config.HiddenSize, e = config.IntermediateSize, n = config.StateSize, r = config.TimeStepRank, k = config.ConvKernel, v = config.VocabSize;
        float sigma = (float)config.InitializerRange;
        float[] Normal(Random rng, long count)
        {
            var data = new float[count];
            for (long i = 0; i < count; i += 2)
            {
                // Box–Muller: two normals per pair of uniforms.
                double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
                double radius = Math.Sqrt(-2.0 * Math.Log(u1));
                data[i] = (float)(radius * Math.Cos(2 * Math.PI * u2) * sigma);
                if (i + 1 < count) data[i + 1] = (float)(radius * Math.Sin(2 * Math.PI * u2) * sigma);
            }
            return data;
        }
        float[] Uniform(Random rng, long count, double bound)
        {
            var data = new float[count];
            for (long i = 0; i < count; i++) data[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
            return data;
        }
        float[] Fill(long count, float value) => Enumerable.Repeat(value, (int)count).ToArray();
        // A fixed mix (HashCode.Combine is randomised per process, so it cannot seed reproducible streams).
        Random Stream(int index) => new(unchecked(seed * 1_000_003 + index * 7_919 + 0x5EED));

        var layers = new MambaLayerWeights[config.NumHiddenLayers];
        Parallel.For(0, layers.Length, i =>
        {
            var rng = Stream(i);
            var aLog = new float[(long)e * n];
            for (int row = 0; row < e; row++)
                for (int j = 0; j < n; j++) aLog[(long)row * n + j] = MathF.Log(j + 1);
            double dtScale = Math.Pow(r, -0.5) * config.TimeStepScale;
            var dtWeight = config.TimeStepInitScheme == "constant" ? Fill((long)e * r, (float)dtScale) : Uniform(rng, (long)e * r, dtScale);
            var dtBias = new float[e];
            double logMin = Math.Log(config.TimeStepMin), logMax = Math.Log(config.TimeStepMax);
            for (int row = 0; row < e; row++)
            {
                double dt = Math.Max(Math.Exp(rng.NextDouble() * (logMax - logMin) + logMin), config.TimeStepFloor);
                // inverse softplus: dt + log(−expm1(−dt))
                dtBias[row] = (float)(dt + Math.Log(-(Math.Exp(-dt) - 1.0)));
            }
            var outProj = Uniform(rng, (long)d * e, 1.0 / Math.Sqrt(e));
            if (config.RescalePrenormResidual)
            {
                float scale = 1f / MathF.Sqrt(config.NumHiddenLayers);
                for (long j = 0; j < outProj.LongLength; j++) outProj[j] *= scale;
            }
            layers[i] = new MambaLayerWeights
            {
                NormWeight = Fill(d, 1f),
                InProjWeight = Normal(rng, 2L * e * d),
                InProjBias = config.UseBias ? new float[2 * e] : null,
                ConvWeight = Uniform(rng, (long)e * k, 1.0 / Math.Sqrt(k)),
                ConvBias = config.UseConvBias ? new float[e] : null,
                XProjWeight = Normal(rng, (long)(r + 2 * n) * e),
                DtProjWeight = dtWeight,
                DtProjBias = dtBias,
                ALog = aLog,
                D = Fill(e, 1f),
                OutProjWeight = outProj,
                OutProjBias = config.UseBias ? new float[d] : null,
            };
        });
        // The vocabulary tables are the largest tensors: filled in row blocks, each with its own stream.
        float[] Table(int stream)
        {
            var table = new float[(long)v * d];
            const int rowsPerBlock = 4096;
            Parallel.For(0, (v + rowsPerBlock - 1) / rowsPerBlock, block =>
            {
                int rows = Math.Min(rowsPerBlock, v - block * rowsPerBlock);
                Normal(Stream(stream * 1_000_003 + block), (long)rows * d).CopyTo(table, (long)block * rowsPerBlock * d);
            });
            return table;
        }
        return new MambaWeights
        {
            Config = config,
            Embeddings = Table(-1),
            Layers = layers,
            NormF = Fill(d, 1f),
            LmHead = config.TieWordEmbeddings ? null : Table(-2),
        };
    }
}
