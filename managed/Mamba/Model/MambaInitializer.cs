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
    // The order in which a layer's random parameters draw from its stream (unchanged since the first release, so
    // a seed keeps giving the same model); parameters not listed draw nothing.
    private static readonly ParameterId[] DrawOrder =
        [ParameterId.DtProjWeight, ParameterId.DtProjBias, ParameterId.OutProjWeight, ParameterId.InProjWeight, ParameterId.ConvWeight, ParameterId.XProjWeight];

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

        // Each parameter's init (spec §4). Random ones draw from the layer's stream in DrawOrder, so a seed gives
        // the same weights as before the parameter table existed.
        double dtScale = Math.Pow(r, -0.5) * config.TimeStepScale;
        double logMin = Math.Log(config.TimeStepMin), logMax = Math.Log(config.TimeStepMax);
        float[] Init(ParameterEntry entry, Random rng)
        {
            long count = entry.ElementCount;
            switch (entry.Spec.Id)
            {
                case ParameterId.Norm or ParameterId.D: return Fill(count, 1f);
                case ParameterId.InProjBias or ParameterId.ConvBias or ParameterId.OutProjBias: return new float[count];
                case ParameterId.InProjWeight or ParameterId.XProjWeight: return Normal(rng, count);
                case ParameterId.ConvWeight: return Uniform(rng, count, 1.0 / Math.Sqrt(k));
                case ParameterId.DtProjWeight:
                    return config.TimeStepInitScheme == "constant" ? Fill(count, (float)dtScale) : Uniform(rng, count, dtScale);
                case ParameterId.DtProjBias:
                {
                    var dtBias = new float[count];
                    for (int row = 0; row < dtBias.Length; row++)
                    {
                        double dt = Math.Max(Math.Exp(rng.NextDouble() * (logMax - logMin) + logMin), config.TimeStepFloor);
                        dtBias[row] = (float)(dt + Math.Log(-(Math.Exp(-dt) - 1.0))); // inverse softplus: dt + log(−expm1(−dt))
                    }
                    return dtBias;
                }
                case ParameterId.ALog:
                {
                    var aLog = new float[count];
                    for (int row = 0; row < e; row++)
                        for (int j = 0; j < n; j++) aLog[(long)row * n + j] = MathF.Log(j + 1);
                    return aLog;
                }
                case ParameterId.OutProjWeight:
                {
                    var outProj = Uniform(rng, count, 1.0 / Math.Sqrt(e));
                    if (config.RescalePrenormResidual)
                    {
                        float scale = 1f / MathF.Sqrt(config.NumHiddenLayers);
                        for (long j = 0; j < outProj.LongLength; j++) outProj[j] *= scale;
                    }
                    return outProj;
                }
                case ParameterId.NormF: return Fill(count, 1f);
                default: throw new InvalidOperationException($"no init for {entry.Spec.Id}");
            }
        }

        var values = new ParameterStore<float[]>(config);
        var entries = MambaParameterTable.Entries(config).ToList();
        var perLayer = entries.Where(x => x.Spec.PerLayer).GroupBy(x => x.Layer).ToArray();
        var layerValues = new (ParameterKey, float[])[perLayer.Length][];
        Parallel.For(0, perLayer.Length, i =>
        {
            var rng = Stream(perLayer[i].Key);
            var inOrder = perLayer[i].OrderBy(x => Array.IndexOf(DrawOrder, x.Spec.Id) is var o && o < 0 ? int.MaxValue : o).ToArray();
            layerValues[i] = inOrder.Select(x => (x.Key, Init(x, rng))).ToArray();
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
        foreach (var entry in entries)
        {
            if (entry.Spec.PerLayer) continue;
            values.Set(entry.Key, entry.Spec.Id switch
            {
                ParameterId.Embeddings => Table(-1),
                ParameterId.LmHead => Table(-2),
                _ => Init(entry, Stream(-3)),
            });
        }
        foreach (var layer in layerValues)
            foreach (var (key, data) in layer) values.Set(key, data);
        return new MambaWeights(values);
    }
}
