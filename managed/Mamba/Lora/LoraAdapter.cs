using System.Globalization;
using System.Numerics.Tensors;
using Mamba.IO;

namespace Mamba.Lora;

/// <summary>
/// A LoRA adapter for a Mamba (v1) model in PEFT's on-disk format (peft 0.21): the configuration and, per adapted
/// module, the float32 factors A and B. <see cref="Load"/> reads and validates PEFT's <c>adapter_config.json</c> and
/// <c>adapter_model.safetensors</c>; <see cref="Save"/> writes both so that PEFT loads them. The delta methods give
/// what merging adds to each base weight.
/// </summary>
public sealed class LoraAdapter
{
    /// <summary>The file name PEFT uses for the adapter weights.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";

    private readonly SortedDictionary<LoraModuleId, LoraModuleWeights> _modules;

    /// <summary>The adapter configuration.</summary>
    public LoraConfig Config { get; }

    /// <summary>The adapted modules and their factors, embedding first, then by layer and projection.</summary>
    public IReadOnlyDictionary<LoraModuleId, LoraModuleWeights> Modules => _modules;

    /// <summary>The folder the adapter was loaded from; null for an adapter built in memory.</summary>
    public string? SourceDirectory { get; }

    /// <summary>
    /// Builds an adapter from factors already in memory, with the checks <see cref="Load"/> applies: every module is
    /// selected by <see cref="LoraConfig.TargetModules"/>, A is [r, in] and B is [out, r] with r from the configuration
    /// (<see cref="LoraConfig.RankFor"/>), and modules of the same kind agree on their shapes.
    /// </summary>
    /// <exception cref="MambaFormatException">The factors disagree with the configuration or with each other.</exception>
    /// <exception cref="MambaConfigException">The configuration is invalid.</exception>
    public LoraAdapter(LoraConfig config, IReadOnlyDictionary<LoraModuleId, LoraModuleWeights> modules)
        : this(config, modules, null, null)
    {
    }

    private LoraAdapter(LoraConfig config, IReadOnlyDictionary<LoraModuleId, LoraModuleWeights> modules, string? sourceDirectory, string? weightsPath)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(modules);
        config.Validate(sourceDirectory is null ? null : Path.Combine(sourceDirectory, LoraConfig.FileName));
        Config = config;
        SourceDirectory = sourceDirectory;
        _modules = new SortedDictionary<LoraModuleId, LoraModuleWeights>(ModuleOrder.Instance);
        foreach (var (id, w) in modules)
            _modules.Add(id, w);
        Check(weightsPath);
    }

    /// <summary>
    /// A new adapter for <paramref name="model"/> initialised as PEFT's default (<c>init_lora_weights=True</c>): for each
    /// module <paramref name="config"/> targets, a linear layer's A ~ U(−1/√in, 1/√in) (kaiming-uniform with a = √5) and
    /// B = 0; the embedding's A = 0 and B ~ N(0, 1). The adapter therefore changes nothing until it is trained.
    /// </summary>
    /// <exception cref="MambaConfigException">The configuration is invalid or targets no module of the model.</exception>
    public static LoraAdapter CreateInitialized(LoraConfig config, MambaConfig model, int seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(model);
        config.Validate();
        var rng = new Random(seed);
        var modules = new Dictionary<LoraModuleId, LoraModuleWeights>();
        var candidates = new List<LoraModuleId> { LoraModuleId.Embeddings };
        for (int layer = 0; layer < model.NumHiddenLayers; layer++)
            foreach (var t in new[] { LoraTarget.InProj, LoraTarget.XProj, LoraTarget.DtProj, LoraTarget.OutProj })
                candidates.Add(LoraModuleId.ForLayer(t, layer));
        foreach (var id in candidates.Where(id => config.IsTargeted(id.ModulePath)))
        {
            int r = config.RankFor(id.ModulePath);
            var (inF, outF) = id.Target switch
            {
                LoraTarget.Embeddings => (model.VocabSize, model.HiddenSize),
                LoraTarget.InProj => (model.HiddenSize, 2 * model.IntermediateSize),
                LoraTarget.XProj => (model.IntermediateSize, model.TimeStepRank + 2 * model.StateSize),
                LoraTarget.DtProj => (model.TimeStepRank, model.IntermediateSize),
                _ => (model.IntermediateSize, model.HiddenSize),
            };
            var a = new float[(long)r * inF];
            var b = new float[(long)outF * r];
            if (id.IsEmbedding)
                for (int i = 0; i < b.Length; i++) b[i] = (float)Gaussian(rng);
            else
            {
                double bound = 1 / Math.Sqrt(inF);
                for (int i = 0; i < a.Length; i++) a[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
            }
            modules[id] = new LoraModuleWeights(new HostTensor(a, [r, inF]), new HostTensor(b, [outF, r]));
        }
        if (modules.Count == 0)
            throw new MambaConfigException("target_modules", $"[{string.Join(", ", config.TargetModules)}] selects no module of this model (embeddings, in_proj, x_proj, dt_proj, out_proj)");
        return new LoraAdapter(config, modules);
    }

    private static double Gaussian(Random rng) =>
        Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    // ------------------------------------------------------------------ loading and saving

    /// <summary>Reads a PEFT adapter folder (<c>adapter_config.json</c> and <c>adapter_model.safetensors</c>; F32, F16 or BF16 tensors, read as float32).</summary>
    /// <exception cref="MambaFormatException">
    /// A file is missing or malformed, a tensor key is not a LoRA factor of a Mamba module, an A lacks its B (or the
    /// reverse), or shapes and ranks disagree with the configuration or with each other.
    /// </exception>
    /// <exception cref="MambaConfigException"><c>adapter_config.json</c> has a missing, mistyped or unsupported value.</exception>
    public static LoraAdapter Load(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (!Directory.Exists(directory))
            throw new MambaFormatException("adapter folder does not exist", directory);
        var config = LoraConfig.FromFile(Path.Combine(directory, LoraConfig.FileName));

        string weightsPath = Path.Combine(directory, WeightsFileName);
        if (!File.Exists(weightsPath))
        {
            string hint = File.Exists(Path.Combine(directory, "adapter_model.bin"))
                ? " (the folder holds adapter_model.bin; re-save it with safe_serialization=True)" : "";
            throw new MambaFormatException($"{WeightsFileName} not found{hint}", weightsPath);
        }

        using var file = SafeTensorsFile.Open(weightsPath);
        var halves = new Dictionary<LoraModuleId, (HostTensor? A, HostTensor? B)>();
        foreach (var (key, info) in file.Tensors)
        {
            if (!LoraModuleId.TryParsePeftKey(key, out var id, out bool isA))
                throw new MambaFormatException(
                    "not a LoRA factor of a Mamba module (expected base_model.model.backbone.embeddings.lora_embedding_{A,B} or "
                    + "base_model.model.backbone.layers.{i}.mixer.{in_proj,x_proj,dt_proj,out_proj}.lora_{A,B}.weight)", weightsPath, key);
            if (info.Shape.Length != 2)
                throw new MambaFormatException($"LoRA factors are matrices, but the shape is [{string.Join(", ", info.Shape)}]", weightsPath, key);
            if (info.Shape[0] > int.MaxValue || info.Shape[1] > int.MaxValue)
                throw new MambaFormatException($"shape [{string.Join(", ", info.Shape)}] is too large", weightsPath, key);
            var tensor = new HostTensor(file.ReadFloat32(key), [(int)info.Shape[0], (int)info.Shape[1]]);
            halves.TryGetValue(id, out var pair);
            halves[id] = isA ? (tensor, pair.B) : (pair.A, tensor);
        }
        if (halves.Count == 0)
            throw new MambaFormatException("the adapter holds no LoRA tensors", weightsPath);

        var modules = new Dictionary<LoraModuleId, LoraModuleWeights>();
        foreach (var (id, (a, b)) in halves)
        {
            if (a is null)
                throw new MambaFormatException($"'{id.PeftKeyB}' has no matching A factor", weightsPath, id.PeftKeyA);
            if (b is null)
                throw new MambaFormatException($"'{id.PeftKeyA}' has no matching B factor", weightsPath, id.PeftKeyB);
            modules[id] = new LoraModuleWeights(a, b);
        }
        return new LoraAdapter(config, modules, directory, weightsPath);
    }

    /// <summary>
    /// Writes <c>adapter_config.json</c> and <c>adapter_model.safetensors</c> (float32, PEFT's key names, metadata
    /// <c>{"format": "pt"}</c>) into <paramref name="directory"/>, creating it if needed.
    /// </summary>
    public void Save(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        Directory.CreateDirectory(directory);
        var tensors = new Dictionary<string, (float[] data, long[] shape)>(StringComparer.Ordinal);
        foreach (var (id, w) in _modules)
        {
            tensors[id.PeftKeyA] = (w.A.Data, [w.A.Shape[0], w.A.Shape[1]]);
            tensors[id.PeftKeyB] = (w.B.Data, [w.B.Shape[0], w.B.Shape[1]]);
        }
        SafeTensorsWriter.WriteFloat32(Path.Combine(directory, WeightsFileName), tensors, "F32",
            new Dictionary<string, string> { ["format"] = "pt" });
        Config.Save(Path.Combine(directory, LoraConfig.FileName));
    }

    // ------------------------------------------------------------------ validation

    /// <summary>The checks shared by construction and loading; <paramref name="weightsPath"/> names the file in errors.</summary>
    private void Check(string? weightsPath)
    {
        var byKind = new Dictionary<LoraTarget, (int In, int Out, LoraModuleId First)>();
        foreach (var (id, w) in _modules)
        {
            if (w.A.Shape.Length != 2 || w.B.Shape.Length != 2)
                throw new MambaFormatException("LoRA factors must be matrices", weightsPath, w.A.Shape.Length != 2 ? id.PeftKeyA : id.PeftKeyB);
            if (w.A.Data.LongLength != (long)w.A.Shape[0] * w.A.Shape[1])
                throw new MambaFormatException("data length does not match the shape", weightsPath, id.PeftKeyA);
            if (w.B.Data.LongLength != (long)w.B.Shape[0] * w.B.Shape[1])
                throw new MambaFormatException("data length does not match the shape", weightsPath, id.PeftKeyB);
            if (!Config.IsTargeted(id.ModulePath))
                throw new MambaFormatException(
                    $"module '{id.ModulePath}' is not selected by target_modules [{string.Join(", ", Config.TargetModules)}]", weightsPath, id.PeftKeyA);
            int rank = Config.RankFor(id.ModulePath);
            if (w.A.Shape[0] != rank)
                throw new MambaFormatException(
                    $"A is [{w.A.Shape[0]}, {w.A.Shape[1]}] but the configuration gives module '{id.ModulePath}' rank {rank} (r or rank_pattern)", weightsPath, id.PeftKeyA);
            if (w.B.Shape[1] != rank)
                throw new MambaFormatException(
                    $"B is [{w.B.Shape[0]}, {w.B.Shape[1]}] but the configuration gives module '{id.ModulePath}' rank {rank} (r or rank_pattern)", weightsPath, id.PeftKeyB);
            if (w.InFeatures <= 0 || w.OutFeatures <= 0)
                throw new MambaFormatException($"empty factor: A is [{w.A.Shape[0]}, {w.A.Shape[1]}], B is [{w.B.Shape[0]}, {w.B.Shape[1]}]", weightsPath, id.PeftKeyA);
            if (byKind.TryGetValue(id.Target, out var seen))
            {
                if (seen.In != w.InFeatures || seen.Out != w.OutFeatures)
                    throw new MambaFormatException(
                        $"maps {w.InFeatures} → {w.OutFeatures} features but '{seen.First.ModulePath}' maps {seen.In} → {seen.Out}", weightsPath, id.PeftKeyA);
            }
            else
                byKind[id.Target] = (w.InFeatures, w.OutFeatures, id);
        }
    }

    /// <summary>
    /// Checks the adapter against a model's shape: every module's in/out features match the base weight it adapts
    /// (embedding vocab → hidden; in_proj hidden → 2·intermediate; x_proj intermediate → dt_rank + 2·state;
    /// dt_proj dt_rank → intermediate; out_proj intermediate → hidden) and every layer index is below <paramref name="numLayers"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    /// <exception cref="MambaFormatException">The adapter does not fit the model; names the tensor at fault.</exception>
    public void ValidateAgainst(int hiddenSize, int intermediateSize, int timeStepRank, int stateSize, int vocabSize, int numLayers)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(hiddenSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(intermediateSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(timeStepRank);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(stateSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numLayers);
        string? path = SourceDirectory is null ? null : Path.Combine(SourceDirectory, WeightsFileName);
        foreach (var (id, w) in _modules)
        {
            if (!id.IsEmbedding && id.Layer >= numLayers)
                throw new MambaFormatException($"adapter has layer {id.Layer} but the model has {numLayers} layers", path, id.PeftKeyA);
            (int inF, int outF, string what) = id.Target switch
            {
                LoraTarget.Embeddings => (vocabSize, hiddenSize, "vocab_size → hidden_size"),
                LoraTarget.InProj => (hiddenSize, 2 * intermediateSize, "hidden_size → 2·intermediate_size"),
                LoraTarget.XProj => (intermediateSize, timeStepRank + 2 * stateSize, "intermediate_size → time_step_rank + 2·state_size"),
                LoraTarget.DtProj => (timeStepRank, intermediateSize, "time_step_rank → intermediate_size"),
                _ => (intermediateSize, hiddenSize, "intermediate_size → hidden_size"),
            };
            if (w.InFeatures != inF || w.OutFeatures != outF)
                throw new MambaFormatException(string.Create(CultureInfo.InvariantCulture,
                    $"adapter maps {w.InFeatures} → {w.OutFeatures} features but the model's {id.ShortName} maps {what} = {inF} → {outF}"),
                    path, w.InFeatures != inF ? id.PeftKeyA : id.PeftKeyB);
        }
    }

    /// <summary>Checks the adapter against the shape of <paramref name="model"/> (see the overload taking sizes).</summary>
    /// <exception cref="MambaFormatException">The adapter does not fit the model.</exception>
    public void ValidateAgainst(MambaConfig model)
    {
        ArgumentNullException.ThrowIfNull(model);
        ValidateAgainst(model.HiddenSize, model.IntermediateSize, model.TimeStepRank, model.StateSize, model.VocabSize, model.NumHiddenLayers);
    }

    // ------------------------------------------------------------------ merge math

    /// <summary>The LoRA scale of <paramref name="module"/> (<see cref="LoraConfig.ScaleFor"/> of its path).</summary>
    public double Scale(LoraModuleId module) => Config.ScaleFor(module.ModulePath);

    /// <summary>
    /// What merging adds to a linear module's weight: scale · B·A, [out, in] row-major (the layout of
    /// <c>nn.Linear.weight</c>), as PEFT's <c>Linear.get_delta_weight</c> computes it.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="module"/> is the embedding (use <see cref="EmbeddingDelta"/>).</exception>
    /// <exception cref="KeyNotFoundException">The adapter does not adapt <paramref name="module"/>.</exception>
    public float[] LinearDelta(LoraModuleId module)
    {
        if (module.IsEmbedding)
            throw new ArgumentException("the embedding's delta is [vocab, hidden]; use EmbeddingDelta", nameof(module));
        var w = Get(module);
        int outF = w.OutFeatures, inF = w.InFeatures, r = w.Rank;
        float scale = (float)Scale(module);
        var delta = new float[(long)outF * inF];
        var a = w.A.Data;
        var b = w.B.Data;
        for (int o = 0; o < outF; o++)
        {
            var row = delta.AsSpan(o * inF, inF);
            for (int k = 0; k < r; k++)
                TensorPrimitives.MultiplyAdd(a.AsSpan(k * inF, inF), b[o * r + k], row, row);
            TensorPrimitives.Multiply(row, scale, row);
        }
        return delta;
    }

    /// <summary>
    /// What merging adds to the embedding matrix, [vocab, hidden] row-major (the layout of <c>nn.Embedding.weight</c>).
    /// </summary>
    /// <remarks>
    /// PEFT's <c>Embedding.forward</c> computes, for token x, <c>after_A = F.embedding(x, lora_embedding_A.T)</c> (row x of
    /// Aᵀ, i.e. column x of A: r values) and adds <c>after_A @ lora_embedding_B.T · scale</c>, so the output for token v
    /// gains Σₖ A[k, v] · B[h, k] · scale in feature h. Hence delta[v, h] = scale · (B·A)[h, v], i.e.
    /// delta = scale · (B·A)ᵀ with B·A of shape [hidden, vocab] — the same as PEFT's
    /// <c>Embedding.get_delta_weight</c> (<c>transpose(B @ A, True) · scaling</c>). With tied embeddings, merging this
    /// into the shared matrix also changes the lm_head, which the unmerged PEFT model does not do.
    /// </remarks>
    /// <exception cref="KeyNotFoundException">The adapter does not adapt the embedding.</exception>
    public float[] EmbeddingDelta()
    {
        var id = LoraModuleId.Embeddings;
        var w = Get(id);
        int vocab = w.InFeatures, hidden = w.OutFeatures, r = w.Rank;
        float scale = (float)Scale(id);
        var a = w.A.Data;   // [r, vocab]
        var b = w.B.Data;   // [hidden, r]
        var delta = new float[(long)vocab * hidden];
        var aCol = new float[r];
        for (int v = 0; v < vocab; v++)
        {
            for (int k = 0; k < r; k++)
                aCol[k] = a[k * vocab + v];
            var row = delta.AsSpan(v * hidden, hidden);
            for (int h = 0; h < hidden; h++)
                row[h] = scale * TensorPrimitives.Dot(b.AsSpan(h * r, r), aCol);
        }
        return delta;
    }

    /// <summary>The delta of any module in its base weight's layout: <see cref="EmbeddingDelta"/> or <see cref="LinearDelta"/>.</summary>
    /// <exception cref="KeyNotFoundException">The adapter does not adapt <paramref name="module"/>.</exception>
    public float[] WeightDelta(LoraModuleId module) => module.IsEmbedding ? EmbeddingDelta() : LinearDelta(module);

    private LoraModuleWeights Get(LoraModuleId module) =>
        _modules.TryGetValue(module, out var w) ? w : throw new KeyNotFoundException($"the adapter does not adapt '{module.ModulePath}'");

    /// <summary>Embedding first, then by layer, then in_proj, x_proj, dt_proj, out_proj.</summary>
    private sealed class ModuleOrder : IComparer<LoraModuleId>
    {
        public static readonly ModuleOrder Instance = new();

        public int Compare(LoraModuleId x, LoraModuleId y)
        {
            int c = x.Layer.CompareTo(y.Layer);
            return c != 0 ? c : x.Target.CompareTo(y.Target);
        }
    }
}
