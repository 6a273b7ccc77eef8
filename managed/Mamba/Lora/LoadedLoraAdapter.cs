using Mamba.Compute;

namespace Mamba.Lora;

/// <summary>
/// A LoRA adapter's factors uploaded to a model's backend, for the unmerged forward (PEFT's unmerged
/// <c>LoraModel</c>: every adapted layer adds scale·B·A·x to its output) and for training the adapter. Made by
/// <see cref="Model.MambaForCausalLM.LoadAdapter"/>; several can be loaded on one model and chosen per call
/// (<see cref="Model.ForwardOptions.Adapter"/>, <see cref="Generation.GenerationOptions.Adapter"/>). Disposed with the
/// model, or earlier by <see cref="Dispose"/>.
/// </summary>
/// <remarks>
/// With tied embeddings an embedding adapter changes the token lookup only, not the lm_head, exactly as PEFT's
/// unmerged model; merging (<see cref="Model.MambaForCausalLM.MergeAdapter"/>) changes both, as PEFT's
/// <c>merge_and_unload</c>.
/// </remarks>
public sealed class LoadedLoraAdapter : IDisposable
{
    private readonly Dictionary<LoraModuleId, LoraModuleOnDevice> _modules = [];
    private bool _disposed;

    internal LoadedLoraAdapter(string name, LoraAdapter adapter, IMambaBackend backend, DType dtype, MambaConfig model)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(adapter);
        adapter.ValidateAgainst(model);
        Name = name;
        Config = adapter.Config;
        Backend = backend;
        ModelConfig = model;
        try
        {
            foreach (var (id, w) in adapter.Modules)
                _modules[id] = LoraModuleOnDevice.Upload(backend, dtype, id, w, (float)adapter.Scale(id));
        }
        catch
        {
            foreach (var m in _modules.Values) m.Dispose();
            throw;
        }
    }

    /// <summary>The name the adapter was loaded under.</summary>
    public string Name { get; }

    /// <summary>The adapter configuration (rank, alpha, targets, scaling).</summary>
    public LoraConfig Config { get; }

    /// <summary>The adapted modules, embedding first, then by layer.</summary>
    public IEnumerable<LoraModuleId> ModuleIds => _modules.Keys.OrderBy(m => m.Layer).ThenBy(m => m.Target);

    /// <summary>Values in all factors (trainable parameters when training it).</summary>
    public long ParameterCount => _modules.Values.Sum(m => m.Down.ElementCount + m.Up.ElementCount);

    internal IMambaBackend Backend { get; }

    /// <summary>Whether <see cref="Dispose"/> ran (directly or with the model).</summary>
    public bool IsDisposed => _disposed;

    internal MambaConfig ModelConfig { get; }

    internal IReadOnlyDictionary<LoraModuleId, LoraModuleOnDevice> Modules => _modules;

    /// <summary>The module adapting <paramref name="target"/> in <paramref name="layer"/>, or null.</summary>
    internal LoraModuleOnDevice? Find(LoraTarget target, int layer = -1)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var id = target == LoraTarget.Embeddings ? LoraModuleId.Embeddings : LoraModuleId.ForLayer(target, layer);
        return _modules.GetValueOrDefault(id);
    }

    /// <summary>Whether the factors have gradient buffers (<see cref="EnableGradients"/>).</summary>
    internal bool HasGradients => _modules.Values.All(m => m.GradDown is not null && m.GradUp is not null);

    /// <summary>Allocates zeroed F32 gradient buffers for every factor (training the adapter).</summary>
    internal void EnableGradients()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        foreach (var m in _modules.Values)
        {
            m.GradDown ??= Backend.Allocate(DType.F32, m.Down.Shape);
            m.GradUp ??= Backend.Allocate(DType.F32, m.Up.Shape);
            Backend.Zero(m.GradDown);
            Backend.Zero(m.GradUp);
        }
    }

    /// <summary>Sets every gradient buffer to zero.</summary>
    internal void ZeroGradients()
    {
        foreach (var m in _modules.Values)
        {
            if (m.GradDown is not null) Backend.Zero(m.GradDown);
            if (m.GradUp is not null) Backend.Zero(m.GradUp);
        }
    }

    /// <summary>The factors as they are now on the device, in PEFT's layout (what <see cref="LoraAdapter.Save"/> writes).</summary>
    public LoraAdapter ToAdapter()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var modules = new Dictionary<LoraModuleId, LoraModuleWeights>();
        foreach (var (id, m) in _modules)
        {
            var down = new float[m.Down.ElementCount];
            var up = new float[m.Up.ElementCount];
            Backend.Download(m.Down, down);
            Backend.Download(m.Up, up);
            modules[id] = m.ToPeft(down, up);
        }
        return new LoraAdapter(Config, modules);
    }

    /// <summary>Frees the factors on the device.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var m in _modules.Values) m.Dispose();
    }
}

/// <summary>
/// One adapted module on the device. <see cref="Down"/> is A in the form the forward reads: A [r, in] for a linear
/// layer (a weight of <see cref="IMambaBackend.Linear"/>), Aᵀ [vocab, r] for the embedding (a lookup table) and Aᵀ
/// [dt_rank, r] for dt_proj (so B·A is one Linear of B with it); <see cref="Up"/> is B [out, r]. Both in the model's
/// activation dtype; gradients (F32, the same layout) exist while the adapter trains.
/// </summary>
internal sealed class LoraModuleOnDevice : IDisposable
{
    private LoraModuleOnDevice(LoraModuleId id, float scale, int rank, DeviceTensor down, DeviceTensor up)
    {
        Id = id;
        Scale = scale;
        Rank = rank;
        Down = down;
        Up = up;
    }

    public LoraModuleId Id { get; }

    public float Scale { get; }

    public int Rank { get; }

    public DeviceTensor Down { get; }

    public DeviceTensor Up { get; }

    /// <summary>A is kept transposed (the embedding and dt_proj).</summary>
    public bool DownTransposed => TransposedDown(Id.Target);

    /// <summary>d loss / d <see cref="Down"/> (F32, same layout), while training.</summary>
    public DeviceTensor? GradDown { get; set; }

    /// <summary>d loss / d <see cref="Up"/> (F32), while training.</summary>
    public DeviceTensor? GradUp { get; set; }

    public static bool TransposedDown(LoraTarget target) => target is LoraTarget.Embeddings or LoraTarget.DtProj;

    public static LoraModuleOnDevice Upload(IMambaBackend backend, DType dtype, LoraModuleId id, LoraModuleWeights w, float scale)
    {
        var (downData, downShape) = DeviceDown(id, w.A);
        var down = backend.Upload(downData, dtype, downShape);
        try
        {
            var up = backend.Upload(w.B.Data, dtype, w.B.Shape[0], w.B.Shape[1]);
            return new LoraModuleOnDevice(id, scale, w.Rank, down, up);
        }
        catch
        {
            down.Dispose();
            throw;
        }
    }

    /// <summary>A [r, in] in PEFT's layout → the device form of <see cref="Down"/>.</summary>
    public static (float[] Data, int[] Shape) DeviceDown(LoraModuleId id, HostTensor a)
    {
        int r = a.Shape[0], inF = a.Shape[1];
        return TransposedDown(id.Target) ? (Transpose(a.Data, r, inF), [inF, r]) : (a.Data, [r, inF]);
    }

    /// <summary>Device-layout factors → PEFT's (A [r, in], B [out, r]).</summary>
    public LoraModuleWeights ToPeft(float[] down, float[] up)
    {
        var a = DownTransposed
            ? new HostTensor(Transpose(down, Down.Shape[0], Rank), [Rank, Down.Shape[0]])
            : new HostTensor(down, [Rank, Down.Shape[1]]);
        return new LoraModuleWeights(a, new HostTensor(up, [Up.Shape[0], Rank]));
    }

    /// <summary>[rows, cols] → [cols, rows].</summary>
    public static float[] Transpose(float[] x, int rows, int cols)
    {
        var t = new float[x.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[j * rows + i] = x[i * cols + j];
        return t;
    }

    public void Dispose()
    {
        Down.Dispose();
        Up.Dispose();
        GradDown?.Dispose();
        GradUp?.Dispose();
        GradDown = null;
        GradUp = null;
    }
}
