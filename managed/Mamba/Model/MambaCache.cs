using Mamba.Compute;

namespace Mamba.Model;

/// <summary>
/// The recurrent state of a batch of sequences, per layer: the conv window [B, E, K] (oldest column
/// first) and the SSM state [B, E, N] (float32), on the model's backend. Filled by a prefill
/// (<see cref="HasPreviousState"/> becomes true) and advanced in place by each decode step. A call that fails (out of
/// device memory) after it began writing a filled cache's states leaves the state lost: the cache then refuses to run
/// until <see cref="Reset"/> or <see cref="Restore"/>. A prefill that fails leaves the cache empty.
/// </summary>
public sealed class MambaCache : IDisposable
{
    private readonly IMambaBackend _backend;
    private readonly DeviceTensor[] _conv;
    private readonly DeviceTensor[] _ssm;

    internal MambaCache(IMambaBackend backend, MambaConfig config, int batchSize)
        : this(backend, config, batchSize, allocate: true) { }

    private MambaCache(IMambaBackend backend, MambaConfig config, int batchSize, bool allocate)
    {
        _backend = backend;
        BatchSize = batchSize;
        Config = config;
        _conv = new DeviceTensor[config.NumHiddenLayers];
        _ssm = new DeviceTensor[config.NumHiddenLayers];
        try
        {
            for (int i = 0; allocate && i < _conv.Length; i++)
            {
                _conv[i] = backend.Allocate(DType.F32, batchSize, config.IntermediateSize, config.ConvKernel);
                _ssm[i] = backend.Allocate(DType.F32, batchSize, config.IntermediateSize, config.StateSize);
            }
        }
        catch
        {
            Dispose(); // the layers allocated before the failure (out of memory)
            throw;
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

    /// <summary>
    /// True when a call that was writing the states of a filled cache failed part-way (e.g. out of device memory): some
    /// layers may hold that call's tokens and others not, or all of them hold tokens whose result the caller never got.
    /// Such a cache refuses to run (and to be snapshotted) until <see cref="Reset"/> or <see cref="Restore"/>.
    /// </summary>
    internal bool StateLost { get; private set; }

    /// <summary>Marks the state lost (see <see cref="StateLost"/>).</summary>
    internal void MarkStateLost() => StateLost = true;

    /// <summary>Throws <see cref="InvalidOperationException"/> when the state is lost.</summary>
    internal void ThrowIfStateLost()
    {
        if (StateLost)
            throw new InvalidOperationException(
                "this cache's state was lost when an earlier call failed part-way through advancing it (e.g. out of device memory); Reset or Restore it first");
    }

    internal DeviceTensor Conv(int layer) => _conv[layer];
    internal DeviceTensor Ssm(int layer) => _ssm[layer];

    /// <summary>The conv state of a layer, [B, E, K].</summary>
    public HostTensor GetConvState(int layer) => Download(_conv[layer]);

    /// <summary>The SSM state of a layer, [B, E, N].</summary>
    public HostTensor GetSsmState(int layer) => Download(_ssm[layer]);

    /// <summary>Zeroes every state and clears <see cref="HasPreviousState"/>.</summary>
    public void Reset()
    {
        lock (Gate)
        {
            try
            {
                foreach (var t in _conv) _backend.Zero(t);
                foreach (var t in _ssm) _backend.Zero(t);
            }
            catch
            {
                StateLost = true; // some states zeroed, others not
                throw;
            }
        }
        HasPreviousState = false;
        SeenTokens = 0;
        StateLost = false;
    }

    private HostTensor Download(DeviceTensor t)
    {
        ObjectDisposedException.ThrowIf(t.IsDisposed, this);
        var data = new float[t.ElementCount];
        lock (Gate) _backend.Download(t, data);
        return new HostTensor(data, (int[])t.Shape.Clone());
    }

    /// <summary>Copies every state to host memory (per layer: conv [B, E, K] then ssm [B, E, N]).</summary>
    public MambaCacheSnapshot Snapshot()
    {
        ThrowIfStateLost();
        lock (Gate)
            return SnapshotCore();
    }

    /// <summary>Device backends run one op sequence at a time (see MambaForCausalLM); the CPU needs no lock.</summary>
    private object Gate => _backend.Kind == BackendKind.Cpu ? _conv : _backend;

    private MambaCacheSnapshot SnapshotCore()
    {
        var conv = new float[_conv.Length][];
        var ssm = new float[_ssm.Length][];
        for (int i = 0; i < _conv.Length; i++)
        {
            conv[i] = new float[_conv[i].ElementCount];
            _backend.Download(_conv[i], conv[i]);
            ssm[i] = new float[_ssm[i].ElementCount];
            _backend.Download(_ssm[i], ssm[i]);
        }
        return new MambaCacheSnapshot(BatchSize, conv, ssm, HasPreviousState, SeenTokens);
    }

    /// <summary>Overwrites every state with a snapshot taken from a cache of the same shape.</summary>
    public void Restore(MambaCacheSnapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        if (snapshot.BatchSize != BatchSize || snapshot.Conv.Length != _conv.Length)
            throw new ArgumentException($"snapshot holds {snapshot.BatchSize} rows × {snapshot.Conv.Length} layers, cache {BatchSize} × {_conv.Length}", nameof(snapshot));
        lock (Gate)
        {
            int written = 0;
            try
            {
                for (int i = 0; i < _conv.Length; i++)
                {
                    Overwrite(_conv[i], snapshot.Conv[i], ref written);
                    Overwrite(_ssm[i], snapshot.Ssm[i], ref written);
                }
            }
            catch
            {
                // Layer by layer: a failure part-way (out of memory for an upload) leaves a mix of old and restored states.
                if (written > 0) StateLost = true;
                throw;
            }
        }
        HasPreviousState = snapshot.HasPreviousState;
        SeenTokens = snapshot.SeenTokens;
        StateLost = false;
    }

    /// <summary>Uploads <paramref name="data"/> and copies it into <paramref name="target"/>; counts the copy in <paramref name="written"/> once it is issued.</summary>
    private void Overwrite(DeviceTensor target, float[] data, ref int written)
    {
        using var upload = _backend.Upload(data, target.DType, target.Shape);
        written++;
        _backend.Copy(upload, target);
    }

    /// <summary>
    /// A new cache holding only the given rows of this one, in that order (used to drop finished sequences from a
    /// batch). The states are gathered on the backend: nothing goes through host memory.
    /// </summary>
    public MambaCache SelectRows(IReadOnlyList<int> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        foreach (var r in rows)
            if ((uint)r >= (uint)BatchSize) throw new ArgumentOutOfRangeException(nameof(rows), r, $"row outside [0, {BatchSize})");
        var order = rows.ToArray();
        ThrowIfStateLost();
        var result = new MambaCache(_backend, Config, order.Length, allocate: false) { HasPreviousState = HasPreviousState, SeenTokens = SeenTokens };
        try
        {
            lock (Gate)
                for (int i = 0; i < _conv.Length; i++)
                {
                    result._conv[i] = Gather(_conv[i], order);
                    result._ssm[i] = Gather(_ssm[i], order);
                }
        }
        catch
        {
            result.Dispose();
            throw;
        }
        return result;
    }

    private DeviceTensor Gather(DeviceTensor source, int[] order)
    {
        var shape = (int[])source.Shape.Clone();
        shape[0] = order.Length;
        var target = _backend.Allocate(source.DType, shape);
        try
        {
            _backend.GatherLeading(source, order, target);
        }
        catch
        {
            target.Dispose();
            throw;
        }
        return target;
    }

    /// <summary>Frees the states.</summary>
    public void Dispose()
    {
        // Null entries: a SelectRows that failed part-way.
        foreach (var t in _conv) t?.Dispose();
        foreach (var t in _ssm) t?.Dispose();
    }
}

/// <summary>A host copy of a <see cref="MambaCache"/>: per layer, conv [B, E, K] and ssm [B, E, N] as float32.</summary>
public sealed record MambaCacheSnapshot(int BatchSize, float[][] Conv, float[][] Ssm, bool HasPreviousState, int SeenTokens);
