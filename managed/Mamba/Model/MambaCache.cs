using Mamba.Compute;

namespace Mamba.Model;

/// <summary>
/// The recurrent state of a batch of sequences, per layer: the conv window [B, E, K] (oldest column
/// first) and the SSM state [B, E, N] (float32), on the model's backend. Filled by a prefill
/// (<see cref="HasPreviousState"/> becomes true) and advanced in place by each decode step.
/// </summary>
public sealed class MambaCache : IDisposable
{
    private readonly IMambaBackend _backend;
    private readonly DeviceTensor[] _conv;
    private readonly DeviceTensor[] _ssm;

    internal MambaCache(IMambaBackend backend, MambaConfig config, int batchSize)
    {
        _backend = backend;
        BatchSize = batchSize;
        Config = config;
        _conv = new DeviceTensor[config.NumHiddenLayers];
        _ssm = new DeviceTensor[config.NumHiddenLayers];
        for (int i = 0; i < _conv.Length; i++)
        {
            _conv[i] = backend.Allocate(DType.F32, batchSize, config.IntermediateSize, config.ConvKernel);
            _ssm[i] = backend.Allocate(DType.F32, batchSize, config.IntermediateSize, config.StateSize);
        }
    }

    /// <summary>Rows of the batch this cache holds.</summary>
    public int BatchSize { get; }

    /// <summary>The configuration the cache was made for.</summary>
    public MambaConfig Config { get; }

    /// <summary>True once a prefill has filled the states.</summary>
    public bool HasPreviousState { get; internal set; }

    /// <summary>Tokens consumed so far (prefill plus decode steps).</summary>
    public int SeenTokens { get; internal set; }

    internal DeviceTensor Conv(int layer) => _conv[layer];
    internal DeviceTensor Ssm(int layer) => _ssm[layer];

    /// <summary>The conv state of a layer, [B, E, K].</summary>
    public HostTensor GetConvState(int layer) => Download(_conv[layer]);

    /// <summary>The SSM state of a layer, [B, E, N].</summary>
    public HostTensor GetSsmState(int layer) => Download(_ssm[layer]);

    /// <summary>Zeroes every state and clears <see cref="HasPreviousState"/>.</summary>
    public void Reset()
    {
        foreach (var t in _conv) _backend.Zero(t);
        foreach (var t in _ssm) _backend.Zero(t);
        HasPreviousState = false;
        SeenTokens = 0;
    }

    private HostTensor Download(DeviceTensor t)
    {
        ObjectDisposedException.ThrowIf(t.IsDisposed, this);
        var data = new float[t.ElementCount];
        _backend.Download(t, data);
        return new HostTensor(data, (int[])t.Shape.Clone());
    }

    /// <summary>Frees the states.</summary>
    public void Dispose()
    {
        foreach (var t in _conv) t.Dispose();
        foreach (var t in _ssm) t.Dispose();
    }
}
