using Mamba.Compute;
using Mamba.Compute.Cpu;

namespace Mamba.Model;

/// <summary>Options of one <see cref="MambaForCausalLM.Forward(int[,], ForwardOptions?)"/> call (HF argument names in brackets).</summary>
public sealed record ForwardOptions
{
    /// <summary>[B, L] of 0/1; 0 marks left padding (<c>attention_mask</c>). Ignored on decode steps.</summary>
    public int[,]? AttentionMask { get; init; }

    /// <summary>[B, L] targets, −100 ignored, shifted inside (<c>labels</c>): gives <see cref="CausalLMOutput.Loss"/>.</summary>
    public int[,]? Labels { get; init; }

    /// <summary>The cache to fill (prefill) or advance (decode step) (<c>cache_params</c>).</summary>
    public MambaCache? Cache { get; init; }

    /// <summary>Keep only the last k positions' logits; 0 keeps all (<c>logits_to_keep</c> as an int).</summary>
    public int LogitsToKeep { get; init; }

    /// <summary>Keep exactly these positions' logits (<c>logits_to_keep</c> as an index tensor); overrides <see cref="LogitsToKeep"/>.</summary>
    public int[]? KeepPositions { get; init; }

    /// <summary>Return the NL + 1 hidden states (<c>output_hidden_states</c>).</summary>
    public bool OutputHiddenStates { get; init; }
}

/// <summary>Outputs of a forward call.</summary>
public sealed record CausalLMOutput
{
    /// <summary>float32 logits [B, L_keep, V].</summary>
    public required HostTensor Logits { get; init; }

    /// <summary>Mean cross-entropy over non-ignored shifted targets when labels were given (NaN when all are ignored).</summary>
    public double? Loss { get; init; }

    /// <summary>The NL + 1 hidden states (entry i &lt; NL: output of block i; last: after norm_f), when asked.</summary>
    public IReadOnlyList<HostTensor>? HiddenStates { get; init; }

    /// <summary>The norm_f output [B, L, d] (what <c>MambaModel</c> returns).</summary>
    public required HostTensor LastHiddenState { get; init; }

    /// <summary>The cache that was filled or advanced, if one was given.</summary>
    public MambaCache? Cache { get; init; }
}

/// <summary>
/// The Mamba language model (transformers' <c>MambaForCausalLM</c>) on one <see cref="IMambaBackend"/>.
/// The orchestration here is backend-agnostic: it only calls backend ops. A model may be shared across
/// threads; per-sequence state lives in <see cref="MambaCache"/>.
/// </summary>
public sealed partial class MambaForCausalLM : IDisposable
{
    private readonly LayerTensors[] _layers;
    private readonly DeviceTensor _embeddings;
    private readonly DeviceTensor _normF;
    private readonly DeviceTensor _lmHead;
    private readonly bool _ownsBackend;
    private bool _disposed;

    private sealed record LayerTensors(
        DeviceTensor Norm, DeviceTensor InProj, DeviceTensor? InProjBias, DeviceTensor Conv, DeviceTensor? ConvBias,
        DeviceTensor XProj, SsmParameters Ssm, DeviceTensor OutProj, DeviceTensor? OutProjBias);

    /// <summary>Uploads <paramref name="weights"/> to <paramref name="backend"/> (a new CPU backend when null).</summary>
    public MambaForCausalLM(MambaWeights weights, IMambaBackend? backend = null, DType activationDType = DType.F32)
        : this(weights, backend, activationDType, ownsBackend: backend is null) { }

    /// <summary>Uploads <paramref name="weights"/>; when <paramref name="ownsBackend"/>, disposing the model disposes the backend.</summary>
    public MambaForCausalLM(MambaWeights weights, IMambaBackend? backend, DType activationDType, bool ownsBackend)
    {
        ArgumentNullException.ThrowIfNull(weights);
        Config = weights.Config;
        Backend = backend ?? new CpuBackend();
        _ownsBackend = ownsBackend || backend is null;
        ActivationDType = activationDType;
        ParameterCount = weights.ParameterCount;
        StoredDType = weights.StoredDType;
        var c = Config;
        int d = c.HiddenSize, e = c.IntermediateSize, n = c.StateSize, r = c.TimeStepRank, k = c.ConvKernel, v = c.VocabSize;
        DeviceTensor W(float[] data, params int[] shape) => Put(data, activationDType, shape);
        DeviceTensor F32(float[] data, params int[] shape) => Put(data, DType.F32, shape);
        _embeddings = W(weights.Embeddings, v, d);
        _normF = F32(weights.NormF, d);
        _lmHead = weights.LmHead is null ? _embeddings : W(weights.LmHead, v, d);
        _layers = new LayerTensors[c.NumHiddenLayers];
        for (int i = 0; i < _layers.Length; i++)
        {
            var l = weights.Layers[i];
            var a = new float[l.ALog.Length];
            for (int j = 0; j < a.Length; j++) a[j] = -MathF.Exp(l.ALog[j]); // A = −exp(A_log), always from fp32
            _layers[i] = new LayerTensors(
                F32(l.NormWeight, d),
                W(l.InProjWeight, 2 * e, d),
                l.InProjBias is null ? null : F32(l.InProjBias, 2 * e),
                F32(l.ConvWeight, e, k),
                l.ConvBias is null ? null : F32(l.ConvBias, e),
                W(l.XProjWeight, r + 2 * n, e),
                new SsmParameters(W(l.DtProjWeight, e, r), F32(l.DtProjBias, e), F32(a, e, n), F32(l.D, e)),
                W(l.OutProjWeight, d, e),
                l.OutProjBias is null ? null : F32(l.OutProjBias, d));
        }
    }

    private DeviceTensor Put(float[] data, DType dtype, int[] shape) =>
        Backend is CpuBackend cpu && dtype == DType.F32 ? cpu.Wrap(data, shape) : Backend.Upload(data, dtype, shape);

    /// <summary>Loads config.json and the weights (safetensors, sharded safetensors, or original pytorch_model.bin) from a folder.</summary>
    public static MambaForCausalLM FromPretrained(string directory, IMambaBackend? backend = null, DType activationDType = DType.F32)
    {
        var weights = CheckpointLoader.LoadWeights(directory);
        return new MambaForCausalLM(weights, backend, activationDType);
    }

    /// <summary>The configuration.</summary>
    public MambaConfig Config { get; }

    /// <summary>The backend that runs the model.</summary>
    public IMambaBackend Backend { get; }

    /// <summary>Storage dtype of weights and activations on the backend.</summary>
    public DType ActivationDType { get; }

    /// <summary>Parameter count (tied head once).</summary>
    public long ParameterCount { get; }

    /// <summary>Dtype the checkpoint stored its weights in.</summary>
    public string StoredDType { get; }

    /// <summary>A zeroed cache for <paramref name="batchSize"/> sequences.</summary>
    public MambaCache CreateCache(int batchSize)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        return new MambaCache(Backend, Config, batchSize);
    }

    /// <summary>Runs the model on token ids [B, L].</summary>
    public CausalLMOutput Forward(int[,] inputIds, ForwardOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        int batch = inputIds.GetLength(0), length = inputIds.GetLength(1);
        var ids = new int[batch * length];
        Buffer.BlockCopy(inputIds, 0, ids, 0, ids.Length * sizeof(int));
        using (DeviceLock()) return Run(batch, length, ids, null, options ?? new ForwardOptions());
    }

    /// <summary>Runs the model on caller-given embeddings [B, L, d] instead of ids (<c>inputs_embeds</c>).</summary>
    public CausalLMOutput ForwardEmbeddings(float[,,] inputsEmbeds, ForwardOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(inputsEmbeds);
        if (inputsEmbeds.GetLength(2) != Config.HiddenSize)
            throw new ArgumentException($"inputs_embeds last dimension is {inputsEmbeds.GetLength(2)}, hidden_size is {Config.HiddenSize}", nameof(inputsEmbeds));
        int batch = inputsEmbeds.GetLength(0), length = inputsEmbeds.GetLength(1);
        var data = new float[inputsEmbeds.Length];
        Buffer.BlockCopy(inputsEmbeds, 0, data, 0, data.Length * sizeof(float));
        using (DeviceLock()) return Run(batch, length, null, data, options ?? new ForwardOptions());
    }

    private CausalLMOutput Run(int batch, int length, int[]? ids, float[]? embeds, ForwardOptions options, int[]? argMaxOut = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (batch <= 0 || length <= 0) throw new ArgumentException($"input must be non-empty, got [{batch}, {length}]");
        var cache = options.Cache;
        if (cache is not null && cache.BatchSize != batch)
            throw new ArgumentException($"cache holds {cache.BatchSize} sequences, input has {batch}", nameof(options));
        bool filled = cache is { HasPreviousState: true };
        bool decode = filled && length == 1;
        bool continuation = filled && length > 1;
        if (continuation && !Backend.SupportsContinuation)
            return Continue(batch, length, ids, embeds, options);
        if (options.Labels is { } labels && (labels.GetLength(0) != batch || labels.GetLength(1) != length))
            throw new ArgumentException($"labels are [{labels.GetLength(0)}, {labels.GetLength(1)}], input is [{batch}, {length}]", nameof(options));
        int[]? keep = KeepRows(length, options);
        if (options.Labels is not null && keep is not null)
            throw new ArgumentException("labels need the logits of every position: leave LogitsToKeep at 0 and KeepPositions null", nameof(options));

        var c = Config;
        int rows = batch * length, d = c.HiddenSize, e = c.IntermediateSize;
        var be = Backend;
        var created = new Scratch(this, pooled: length == 1);
        DeviceTensor Alloc(DType t, params int[] shape) => created.Rent(t, shape);
        try
        {
            var h = Alloc(DType.F32, batch, length, d);           // residual stream, float32
            if (ids is not null) Backend.Embedding(_embeddings, ids, h);
            else
            {
                var upload = be.Upload(embeds!, DType.F32, batch, length, d);
                created.Add(upload);
                be.Copy(upload, h);
            }
            DeviceTensor? mask = null;
            if (!filled && options.AttentionMask is { } am)
            {
                if (am.GetLength(0) != batch || am.GetLength(1) != length)
                    throw new ArgumentException($"attention_mask is [{am.GetLength(0)}, {am.GetLength(1)}], input is [{batch}, {length}]", nameof(options));
                var m = new float[rows];
                bool all = true;
                for (int b = 0; b < batch; b++)
                    for (int t = 0; t < length; t++)
                    {
                        int value = am[b, t];
                        if (value is not (0 or 1)) throw new ArgumentException($"attention_mask[{b}, {t}] = {value}; expected 0 or 1", nameof(options));
                        m[b * length + t] = value;
                        all &= value == 1;
                    }
                if (!all)
                {
                    mask = be.Upload(m, DType.F32, rows);
                    created.Add(mask);
                }
            }
            var dt = ActivationDType;
            var a = Alloc(dt, batch, length, d);
            var xz = Alloc(dt, batch, length, 2 * e);
            var u = Alloc(dt, batch, length, e);
            var dbc = Alloc(dt, batch, length, c.TimeStepRank + 2 * c.StateSize);
            var y = Alloc(dt, batch, length, e);
            var output = Alloc(dt, batch, length, d);
            var hidden = options.OutputHiddenStates ? new List<HostTensor>(c.NumHiddenLayers + 1) : null;
            for (int i = 0; i < _layers.Length; i++)
            {
                var L = _layers[i];
                be.AddRmsNorm(h, i == 0 ? null : output, L.Norm, (float)c.LayerNormEpsilon, a);
                if (i > 0) hidden?.Add(DownloadHost(h));
                if (mask is not null) be.MaskRows(a, mask);
                be.Linear(a, L.InProj, L.InProjBias, xz);
                if (decode)
                {
                    be.CausalConv1dStep((xz), L.Conv, L.ConvBias, cache!.Conv(i), (u));
                    be.Linear(u, L.XProj, null, dbc);
                    be.SelectiveStateStep(L.Ssm, (u), (dbc), (xz), cache.Ssm(i), (y));
                }
                else if (continuation)
                {
                    be.CausalConv1dContinue(xz, L.Conv, L.ConvBias, u, cache!.Conv(i));
                    be.Linear(u, L.XProj, null, dbc);
                    be.SelectiveScanContinue(L.Ssm, u, dbc, xz, y, cache.Ssm(i));
                }
                else
                {
                    be.CausalConv1d(xz, L.Conv, L.ConvBias, mask, u, cache?.Conv(i));
                    be.Linear(u, L.XProj, null, dbc);
                    be.SelectiveScan(L.Ssm, u, dbc, xz, y, cache?.Ssm(i));
                }
                be.Linear(y, L.OutProj, L.OutProjBias, output);
            }
            var last = Alloc(DType.F32, batch, length, d);
            be.AddRmsNorm(h, output, _normF, (float)c.LayerNormEpsilon, last);
            if (argMaxOut is not null)
            {
                // Greedy decoding: choose on the device, bring back B ids instead of B × V logits.
                var chosen = Logits(last, batch, length, keep, created);
                Backend.ArgMax(chosen, argMaxOut);
                if (cache is not null)
                {
                    cache.HasPreviousState = true;
                    cache.SeenTokens += length;
                }
                return null!;
            }
            var lastHost = DownloadHost(last);
            if (hidden is not null)
            {
                hidden.Add(DownloadHost(h));
                hidden.Add(lastHost);
            }
            var logits = Logits(last, batch, length, keep, created);
            double? loss = options.Labels is null ? null : Loss(logits, options.Labels, batch, length);
            if (cache is not null)
            {
                cache.HasPreviousState = true;
                cache.SeenTokens += length;
            }
            return new CausalLMOutput
            {
                Logits = DownloadHost(logits),
                Loss = loss,
                HiddenStates = hidden,
                LastHiddenState = lastHost,
                Cache = cache,
            };
        }
        finally
        {
            created.Release();
        }
    }

    /// <summary>
    /// Scratch tensors of one forward call. Decode steps (L = 1) rent them from a pool kept by the model, so
    /// a generation loop allocates no device memory per token; prefills allocate and free (their sizes vary).
    /// Every scratch tensor is fully overwritten by the op that produces it, so pooled ones need no zeroing.
    /// </summary>
    private sealed class Scratch(MambaForCausalLM owner, bool pooled) : List<DeviceTensor>
    {
        private readonly List<DeviceTensor> _rented = [];

        public DeviceTensor Rent(DType dtype, params int[] shape)
        {
            if (pooled && owner._pool.TryGetValue(Key(dtype, shape), out var bag) && bag.TryTake(out var tensor))
            {
                _rented.Add(tensor);
                return tensor;
            }
            tensor = owner.Backend.Allocate(dtype, shape);
            if (pooled) _rented.Add(tensor);
            else Add(tensor);
            return tensor;
        }

        public void Release()
        {
            foreach (var t in this) t.Dispose();
            foreach (var t in _rented)
                owner._pool.GetOrAdd(Key(t.DType, t.Shape), _ => new System.Collections.Concurrent.ConcurrentBag<DeviceTensor>()).Add(t);
        }

        private static string Key(DType dtype, int[] shape) => $"{dtype}:{string.Join("x", shape)}";
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, System.Collections.Concurrent.ConcurrentBag<DeviceTensor>> _pool = new();

    /// <summary>
    /// Runs ids [B, L] (a prefill, or one decode step on a filled cache) and returns the argmax of the last
    /// position's logits per row, computed on the backend (no logits leave the device).
    /// </summary>
    public int[] ForwardArgMax(int[,] inputIds, MambaCache? cache = null, int[,]? attentionMask = null)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        int batch = inputIds.GetLength(0), length = inputIds.GetLength(1);
        if (cache is { HasPreviousState: true } && length > 1 && !Backend.SupportsContinuation)
            throw new NotSupportedException($"{Backend.Kind} continues a filled cache one token at a time; pass [B, 1] ids");
        var ids = new int[batch * length];
        Buffer.BlockCopy(inputIds, 0, ids, 0, ids.Length * sizeof(int));
        var result = new int[batch];
        using var gate = DeviceLock();
        if (length == 1 && cache is { HasPreviousState: true } && TryFastDecode(ids, cache, result))
        {
            cache.SeenTokens += 1;
            return result;
        }
        Run(batch, length, ids, null, new ForwardOptions { Cache = cache, AttentionMask = attentionMask, LogitsToKeep = 1 }, result);
        return result;
    }

    /// <summary>
    /// Feeds a long prompt [B, L] into <paramref name="cache"/> in chunks of <paramref name="chunkTokens"/>, so
    /// device memory stays that of one chunk whatever L is (time is linear in L). Returns the argmax of the last
    /// position per row. Backends without continuation support fall back to one step per token after the first chunk.
    /// </summary>
    public int[] PrefillChunked(int[,] inputIds, MambaCache cache, int chunkTokens = 2048)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunkTokens);
        int batch = inputIds.GetLength(0), length = inputIds.GetLength(1);
        int[] result = [];
        for (int start = 0; start < length; start += chunkTokens)
        {
            int n = Math.Min(chunkTokens, length - start);
            var chunk = new int[batch, n];
            for (int b = 0; b < batch; b++)
                for (int t = 0; t < n; t++) chunk[b, t] = inputIds[b, start + t];
            if (cache.HasPreviousState && !Backend.SupportsContinuation)
            {
                var logits = Forward(chunk, new ForwardOptions { Cache = cache, LogitsToKeep = 1 }).Logits; // one step per token
                result = Enumerable.Range(0, batch).Select(b => Generation.ArgMaxRule.Of(logits.Row(b, 0))).ToArray();
            }
            else result = ForwardArgMax(chunk, cache);
        }
        return result;
    }

    /// <summary>
    /// Several tokens on a filled cache: advanced one decode step at a time, which continues the state
    /// exactly (transformers 5.17 would restart the scan from zero here; see the spec §8.2).
    /// </summary>
    private CausalLMOutput Continue(int batch, int length, int[]? ids, float[]? embeds, ForwardOptions options)
    {
        if (options.OutputHiddenStates || options.Labels is not null)
            throw new NotSupportedException("hidden states and labels are not available when continuing a filled cache with several tokens; run a fresh forward instead");
        int d = Config.HiddenSize, v = Config.VocabSize;
        int[]? keep = KeepRows(length, options);
        var positions = keep ?? Enumerable.Range(0, length).ToArray();
        var logits = new float[(long)batch * positions.Length * v];
        var last = new float[(long)batch * length * d];
        var stepOptions = new ForwardOptions { Cache = options.Cache };
        for (int t = 0; t < length; t++)
        {
            CausalLMOutput step;
            if (ids is not null)
            {
                var stepIds = new int[batch, 1];
                for (int b = 0; b < batch; b++) stepIds[b, 0] = ids[b * length + t];
                step = Run(batch, 1, stepIds.Cast<int>().ToArray(), null, stepOptions);
            }
            else
            {
                var stepEmbeds = new float[batch * d];
                for (int b = 0; b < batch; b++) Array.Copy(embeds!, ((long)b * length + t) * d, stepEmbeds, (long)b * d, d);
                step = Run(batch, 1, null, stepEmbeds, stepOptions);
            }
            for (int b = 0; b < batch; b++)
            {
                Array.Copy(step.LastHiddenState.Data, (long)b * d, last, ((long)b * length + t) * d, d);
                int slot = Array.IndexOf(positions, t);
                if (slot >= 0) Array.Copy(step.Logits.Data, (long)b * v, logits, ((long)b * positions.Length + slot) * v, v);
            }
        }
        return new CausalLMOutput
        {
            Logits = new HostTensor(logits, [batch, positions.Length, v]),
            LastHiddenState = new HostTensor(last, [batch, length, d]),
            Cache = options.Cache,
        };
    }

    /// <summary>
    /// Serialises whole forward passes on a device backend: its context keeps one stream, shared workspaces and
    /// (for fast decode) a captured graph, so two threads must not interleave their op sequences. The lock is
    /// the backend object, so models sharing a backend share it too. The CPU backend needs none.
    /// </summary>
    private DeviceGate DeviceLock() => new(Backend.Kind == BackendKind.Cpu ? null : Backend);

    private readonly ref struct DeviceGate
    {
        private readonly object? _gate;

        public DeviceGate(object? gate)
        {
            _gate = gate;
            if (gate is not null) Monitor.Enter(gate);
        }

        public void Dispose()
        {
            if (_gate is not null) Monitor.Exit(_gate);
        }
    }

    private static int[]? KeepRows(int length, ForwardOptions options)
    {
        if (options.KeepPositions is { } positions)
        {
            foreach (var p in positions)
                if ((uint)p >= (uint)length) throw new ArgumentOutOfRangeException(nameof(options), p, $"KeepPositions entry outside [0, {length})");
            return positions;
        }
        int k = options.LogitsToKeep;
        if (k < 0) throw new ArgumentOutOfRangeException(nameof(options), k, "LogitsToKeep must be >= 0");
        if (k == 0 || k >= length) return null; // every position, in order
        return Enumerable.Range(length - k, k).ToArray();
    }

    private DeviceTensor Logits(DeviceTensor last, int batch, int length, int[]? keep, Scratch created)
    {
        int d = Config.HiddenSize, v = Config.VocabSize;
        var source = last;
        int kept = length;
        if (keep is not null)
        {
            kept = keep.Length;
            var rows = new int[batch * kept];
            for (int b = 0; b < batch; b++)
                for (int j = 0; j < kept; j++) rows[b * kept + j] = b * length + keep[j];
            source = created.Rent(DType.F32, batch, kept, d);
            Backend.GatherRows(last, rows, source);
        }
        var logits = created.Rent(DType.F32, batch, kept, v);
        Backend.Linear(source, _lmHead, null, logits);
        return logits;
    }

    private double Loss(DeviceTensor logits, int[,] labels, int batch, int length)
    {
        // Logit at t predicts label t+1; the last position has no target.
        var targets = new int[batch * length];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < length; t++)
                targets[b * length + t] = t + 1 < length ? labels[b, t + 1] : -100;
        double sum = Backend.CrossEntropySum(logits, targets, -100, out int count);
        return count == 0 ? double.NaN : sum / count;
    }

    private HostTensor DownloadHost(DeviceTensor t)
    {
        var data = new float[t.ElementCount];
        Backend.Download(t, data);
        return new HostTensor(data, (int[])t.Shape.Clone());
    }

    /// <summary>
    /// Greedy decoding with transformers' semantics: prefill the (left-padded) prompts with the mask,
    /// then feed back the argmax token (lowest id on ties) with the cache; a row that emits an eos id is
    /// finished and receives pad ids afterwards; stops when all rows are finished or after
    /// <paramref name="maxNewTokens"/>. Returns prompt + generated ids, [B, P + generated].
    /// </summary>
    public int[,] GenerateGreedy(int[,] inputIds, int maxNewTokens = 20, int[,]? attentionMask = null, int minNewTokens = 0)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        if (maxNewTokens == 0) return (int[,])inputIds.Clone(); // nothing to generate: no forward pass
        // A negative minimum means none; one above the maximum suppresses eos throughout, as the maximum does.
        var options = new Generation.GenerationOptions { MaxNewTokens = maxNewTokens, MinNewTokens = Math.Clamp(minNewTokens, 0, maxNewTokens) };
        using var loop = Generation.GenerationLoop.ForBatch(this, inputIds, attentionMask, options, Config.EosTokenIds);
        loop.Prefill();
        loop.Decode();
        return loop.Sequences(Config.PadTokenId ?? Config.EosTokenId);
    }

    /// <summary>Frees the weights on the backend (and the backend, if this model created it).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        ReleaseFastDecode();
        var all = new HashSet<DeviceTensor> { _embeddings, _normF, _lmHead };
        foreach (var l in _layers)
            foreach (var t in new[] { l.Norm, l.InProj, l.InProjBias, l.Conv, l.ConvBias, l.XProj, l.Ssm.DtProjWeight, l.Ssm.DtProjBias, l.Ssm.A, l.Ssm.D, l.OutProj, l.OutProjBias })
                if (t is not null) all.Add(t);
        foreach (var t in all) t.Dispose();
        foreach (var bag in _pool.Values)
            while (bag.TryTake(out var t)) t.Dispose();
        if (_ownsBackend) Backend.Dispose();
    }
}
