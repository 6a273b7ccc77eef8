using Mamba.Compute;

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

    /// <summary>
    /// A LoRA adapter loaded on this model (<see cref="MambaForCausalLM.LoadAdapter"/>) to apply unmerged in this call
    /// (PEFT's active adapter); null runs the base model. A cache continues only with the adapter that filled it.
    /// </summary>
    public Lora.LoadedLoraAdapter? Adapter { get; init; }
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
/// The Mamba language model (transformers' <c>MambaForCausalLM</c>) on one <see cref="IMambaBackend"/>: the parameters
/// (one tensor per <see cref="MambaParameterTable"/> entry), a <see cref="MambaBlock"/> per layer, and the forward
/// passes that orchestrate them. Nothing here knows which backend runs it; a backend that can run the greedy decode
/// step its own way does so through <see cref="IGreedyDecodeAccelerator"/>. A model may be shared across threads;
/// per-sequence state lives in <see cref="MambaCache"/>.
/// </summary>
public sealed partial class MambaForCausalLM : IDisposable, ITrainableModel
{
    private readonly ParameterStore<DeviceTensor> _parameters;
    private readonly MambaBlock[] _blocks;
    private readonly bool _ownsBackend;
    private bool _disposed;

    /// <summary>Uploads <paramref name="weights"/> to a new CPU backend (owned by the model).</summary>
    public MambaForCausalLM(MambaWeights weights)
        : this(weights, BackendSelector.Create(new MambaModelOptions { Backend = BackendPreference.Cpu }, out _, out _), DType.F32, ownsBackend: true) { }

    /// <summary>
    /// Uploads <paramref name="weights"/> to <paramref name="backend"/>; when <paramref name="ownsBackend"/>, disposing the
    /// model disposes the backend. With <paramref name="adoptWeights"/> a backend may keep the weight arrays themselves
    /// instead of copies (the caller drops them: loading from disk); otherwise changing the model's weights (merging
    /// an adapter, training) never changes <paramref name="weights"/>.
    /// </summary>
    internal MambaForCausalLM(MambaWeights weights, IMambaBackend backend, DType activationDType = DType.F32, bool ownsBackend = false,
        bool adoptWeights = false)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(backend);
        Config = weights.Config;
        Backend = backend;
        _ownsBackend = ownsBackend;
        ActivationDType = activationDType;
        ParameterCount = weights.ParameterCount;
        StoredDType = weights.StoredDType;
        var uploaded = new List<DeviceTensor>();
        try
        {
            _parameters = new ParameterStore<DeviceTensor>(Config, entry =>
            {
                var tensor = Upload(weights.Values[entry.Key], entry, adoptWeights);
                uploaded.Add(tensor);
                return tensor;
            });
        }
        catch
        {
            foreach (var t in uploaded) t.Dispose();
            if (ownsBackend) backend.Dispose();
            throw;
        }
        _blocks = Enumerable.Range(0, Config.NumHiddenLayers).Select(i => new MambaBlock(i, _parameters)).ToArray();
    }

    /// <summary>
    /// Puts one parameter on the backend in the form its table entry names. The matrices that only Linear and
    /// Embedding read go through <see cref="IMambaBackend.UploadWeight"/>, where a backend may narrow them (the CPU's
    /// int8/bf16 weights); dt_proj is a matrix too but the fused scan reads it directly, so it stays in the plain form.
    /// Without <paramref name="adopt"/> the backend gets copies (the caller keeps its arrays).
    /// </summary>
    private DeviceTensor Upload(float[] data, ParameterEntry entry, bool adopt) => entry.Spec.Form switch
    {
        ParameterForm.Matrix when IsLinearWeight(entry.Spec.Id) => Backend.UploadWeight(adopt ? data : (float[])data.Clone(), ActivationDType, entry.DeviceShape),
        ParameterForm.Matrix => adopt ? Backend.UploadOwned(data, ActivationDType, entry.DeviceShape) : Backend.Upload(data, ActivationDType, entry.DeviceShape),
        ParameterForm.NegExp => Backend.UploadOwned(NegExp(data), DType.F32, entry.DeviceShape),
        _ => adopt ? Backend.UploadOwned(data, DType.F32, entry.DeviceShape) : Backend.Upload(data, DType.F32, entry.DeviceShape),
    };

    /// <summary>The weights read only by Linear (in_proj, x_proj, out_proj, an untied lm_head) and Embedding (the table, which a tied lm_head also multiplies by).</summary>
    internal static bool IsLinearWeight(ParameterId id) =>
        id is ParameterId.Embeddings or ParameterId.InProjWeight or ParameterId.XProjWeight or ParameterId.OutProjWeight or ParameterId.LmHead;

    private static float[] NegExp(float[] aLog)
    {
        var a = new float[aLog.Length];
        for (int j = 0; j < a.Length; j++) a[j] = -MathF.Exp(aLog[j]); // A = −exp(A_log), always from fp32
        return a;
    }

    /// <summary>Loads config.json and the weights (safetensors, sharded safetensors, or original pytorch_model.bin) from a folder.</summary>
    public static MambaForCausalLM FromPretrained(string directory, MambaModelOptions? options = null)
    {
        var weights = CheckpointLoader.LoadWeights(directory);
        var backend = BackendSelector.Create(options ?? new MambaModelOptions { Backend = BackendPreference.Cpu }, out _, out var activation);
        return new MambaForCausalLM(weights, backend, activation, ownsBackend: true, adoptWeights: true);
    }

    /// <summary>Loads a model folder onto <paramref name="backend"/> (not owned by the model).</summary>
    internal static MambaForCausalLM FromPretrained(string directory, IMambaBackend backend, DType activationDType = DType.F32) =>
        new(CheckpointLoader.LoadWeights(directory), backend, activationDType, adoptWeights: true);

    /// <summary>The configuration.</summary>
    public MambaConfig Config { get; }

    /// <summary>The backend that runs the model.</summary>
    internal IMambaBackend Backend { get; }

    /// <summary>Which kind of backend runs the model.</summary>
    public BackendKind BackendKind => Backend.Kind;

    /// <summary>Storage dtype of weights and activations on the backend.</summary>
    public DType ActivationDType { get; }

    /// <summary>
    /// How the CPU backend stores the linear and embedding weights (<see cref="CpuWeightFormat.F32"/> on other backends,
    /// whose weight dtype is <see cref="ActivationDType"/>).
    /// </summary>
    public CpuWeightFormat CpuWeights => Backend.WeightFormat;

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

    /// <summary>What the blocks left on the device for one call: the norm_f output and the call's scratch.</summary>
    private sealed record BlocksResult(DeviceTensor Last, List<HostTensor>? Hidden, int[]? Keep, CacheAdvance Advance);

    /// <summary>
    /// What a call did to its cache, to undo when the call fails after its blocks began writing the states (out of device
    /// memory part-way through the layers, or afterwards while the logits are computed): the caller never gets the
    /// call's result, so the states no longer match what it knows. A cache that was empty is empty again (a prefill
    /// reads no state); a filled one is marked lost (<see cref="MambaCache.StateLost"/>).
    /// </summary>
    private readonly record struct CacheAdvance(MambaCache? Cache, bool WasFilled, int SeenTokens)
    {
        public void Abandon()
        {
            if (Cache is null) return;
            Cache.SeenTokens = SeenTokens;
            if (WasFilled) Cache.MarkStateLost();
            else Cache.HasPreviousState = false;
        }
    }

    private CausalLMOutput Run(int batch, int length, int[]? ids, float[]? embeds, ForwardOptions options)
    {
        options.Cache?.ThrowIfStateLost();
        var scratch = new Scratch(this, pooled: length == 1);
        try
        {
            var result = RunBlocks(batch, length, ids, embeds, options, scratch);
            try
            {
                var lastHost = DownloadHost(result.Last);
                var hidden = result.Hidden;
                hidden?.Add(lastHost);
                var logits = Logits(result.Last, batch, length, result.Keep, scratch);
                double? loss = options.Labels is null ? null : Loss(logits, options.Labels, batch, length);
                return new CausalLMOutput
                {
                    Logits = DownloadHost(logits),
                    Loss = loss,
                    HiddenStates = hidden,
                    LastHiddenState = lastHost,
                    Cache = options.Cache,
                };
            }
            catch
            {
                result.Advance.Abandon();
                throw;
            }
        }
        finally
        {
            scratch.Release();
        }
    }

    /// <summary>
    /// Checks the call, embeds, runs every block in the mode the cache calls for (a sequence from zero, a continuation
    /// of a filled cache, or one decode step) and norm_f; advances the cache's bookkeeping. When the blocks fail, what
    /// they did to the cache is undone as far as it can be (<see cref="CacheAdvance"/>); a caller that fails afterwards
    /// calls <see cref="CacheAdvance.Abandon"/> of the result.
    /// </summary>
    private BlocksResult RunBlocks(int batch, int length, int[]? ids, float[]? embeds, ForwardOptions options, Scratch scratch)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (batch <= 0 || length <= 0) throw new ArgumentException($"input must be non-empty, got [{batch}, {length}]");
        var cache = options.Cache;
        if (cache is not null && cache.BatchSize != batch)
            throw new ArgumentException($"cache holds {cache.BatchSize} sequences, input has {batch}", nameof(options));
        bool filled = cache is { HasPreviousState: true };
        var mode = !filled ? BlockMode.Sequence : length == 1 ? BlockMode.Step : BlockMode.Continue;
        if (options.Labels is { } labels && (labels.GetLength(0) != batch || labels.GetLength(1) != length))
            throw new ArgumentException($"labels are [{labels.GetLength(0)}, {labels.GetLength(1)}], input is [{batch}, {length}]", nameof(options));
        int[]? keep = KeepRows(length, options);
        if (options.Labels is not null && keep is not null)
            throw new ArgumentException("labels need the logits of every position: leave LogitsToKeep at 0 and KeepPositions null", nameof(options));

        var c = Config;
        var be = Backend;
        var h = scratch.Rent(DType.F32, batch, length, c.HiddenSize);           // residual stream, float32
        var lora = LoraCallFor(options.Adapter, scratch);
        if (ids is not null)
        {
            be.Embedding(_parameters[ParameterId.Embeddings], ids, h);
            if (lora?.Adapter.Find(Lora.LoraTarget.Embeddings) is { } embeddingLora) LoraOps.AddEmbedding(be, embeddingLora, ids, h, lora.Rent);
        }
        else
        {
            var upload = be.Upload(embeds!, DType.F32, batch, length, c.HiddenSize);
            scratch.Add(upload);
            be.Copy(upload, h);
        }
        var mask = mode == BlockMode.Sequence ? UploadMask(options.AttentionMask, batch, length, scratch) : null;
        var act = BlockActivations.Allocate(c, ActivationDType, batch, length, (t, shape) => scratch.Rent(t, shape));
        var hidden = options.OutputHiddenStates ? new List<HostTensor>(c.NumHiddenLayers + 1) : null;
        var last = scratch.Rent(DType.F32, batch, length, c.HiddenSize);
        // Everything above only allocates and embeds; from here on the cache's states are written in place.
        var advance = new CacheAdvance(cache, filled, cache?.SeenTokens ?? 0);
        try
        {
            RunLayers(h, act, mode, mask, cache, last, hidden, lora);
        }
        catch
        {
            advance.Abandon();
            throw;
        }
        if (cache is not null)
        {
            cache.HasPreviousState = true;
            cache.SeenTokens += length;
        }
        return new BlocksResult(last, hidden, keep, advance);
    }

    /// <summary>
    /// Every block, then norm_f into <paramref name="last"/> [B, L, d] (F32). The greedy decode step's body (which a
    /// backend may record) runs this same method, so every path issues the same ops.
    /// </summary>
    private void RunLayers(DeviceTensor h, BlockActivations act, BlockMode mode, DeviceTensor? mask, MambaCache? cache, DeviceTensor last, List<HostTensor>? hidden,
        LoraCall? lora = null)
    {
        float eps = (float)Config.LayerNormEpsilon;
        foreach (var block in _blocks)
        {
            int i = block.Layer;
            block.Forward(Backend, eps, h, i == 0 ? null : act.Output, act, mode, mask, cache?.Conv(i), cache?.Ssm(i),
                hidden is null || i == 0 ? null : () => hidden.Add(DownloadHost(h)), lora: lora);
        }
        Backend.AddRmsNorm(h, act.Output, _parameters[ParameterId.NormF], eps, last);
        hidden?.Add(DownloadHost(h));
    }

    /// <summary>The attention mask as a device row mask [B·L], or null when it keeps every position.</summary>
    private DeviceTensor? UploadMask(int[,]? attentionMask, int batch, int length, Scratch scratch)
    {
        if (attentionMask is not { } am) return null;
        if (am.GetLength(0) != batch || am.GetLength(1) != length)
            throw new ArgumentException($"attention_mask is [{am.GetLength(0)}, {am.GetLength(1)}], input is [{batch}, {length}]", nameof(attentionMask));
        var m = new float[batch * length];
        bool all = true;
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < length; t++)
            {
                int value = am[b, t];
                if (value is not (0 or 1)) throw new ArgumentException($"attention_mask[{b}, {t}] = {value}; expected 0 or 1", nameof(attentionMask));
                m[b * length + t] = value;
                all &= value == 1;
            }
        if (all) return null;
        var mask = Backend.Upload(m, DType.F32, batch * length);
        scratch.Add(mask);
        return mask;
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
    public int[] ForwardArgMax(int[,] inputIds, MambaCache? cache = null, int[,]? attentionMask = null, Lora.LoadedLoraAdapter? adapter = null)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        int batch = inputIds.GetLength(0), length = inputIds.GetLength(1);
        var ids = new int[batch * length];
        Buffer.BlockCopy(inputIds, 0, ids, 0, ids.Length * sizeof(int));
        var result = new int[batch];
        using var gate = DeviceLock();
        cache?.ThrowIfStateLost();
        // The fused decode paths run the base weights only; an unmerged adapter takes the op path (merge it for full speed).
        if (length == 1 && adapter is null && cache is { HasPreviousState: true } && TryFastDecode(ids, cache, result))
        {
            cache.SeenTokens += 1;
            return result;
        }
        var scratch = new Scratch(this, pooled: length == 1);
        try
        {
            var blocks = RunBlocks(batch, length, ids, null, new ForwardOptions { Cache = cache, AttentionMask = attentionMask, LogitsToKeep = 1, Adapter = adapter }, scratch);
            try
            {
                Backend.ArgMax(Logits(blocks.Last, batch, length, blocks.Keep, scratch), result);
            }
            catch
            {
                blocks.Advance.Abandon();
                throw;
            }
        }
        finally
        {
            scratch.Release();
        }
        return result;
    }

    /// <summary>
    /// Feeds a long prompt [B, L] into <paramref name="cache"/> in chunks of <paramref name="chunkTokens"/>, so
    /// device memory stays that of one chunk whatever L is (time is linear in L). Returns the argmax of the last
    /// position per row.
    /// </summary>
    public int[] PrefillChunked(int[,] inputIds, MambaCache cache, int chunkTokens = 2048, Lora.LoadedLoraAdapter? adapter = null)
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
            result = ForwardArgMax(chunk, cache, adapter: adapter);
        }
        return result;
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

    private DeviceTensor Logits(DeviceTensor last, int batch, int length, int[]? keep, Scratch scratch)
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
            source = scratch.Rent(DType.F32, batch, kept, d);
            Backend.GatherRows(last, rows, source);
        }
        var head = _parameters[ParameterId.LmHead];
        var rounded = head.DType == source.DType ? source : scratch.Rent(head.DType, batch, kept, d);
        var logits = scratch.Rent(DType.F32, batch, kept, v);
        LmHead(source, rounded, logits);
        return logits;
    }

    /// <summary>
    /// logits = lm_head(x). On 16-bit weights the F32 norm_f output is first rounded to the weight dtype into
    /// <paramref name="rounded"/> (what a mixed-dtype Linear does inside), as its own op, so a recorded step reads no
    /// context workspace.
    /// </summary>
    private void LmHead(DeviceTensor x, DeviceTensor rounded, DeviceTensor logits)
    {
        if (!ReferenceEquals(rounded, x)) Backend.Copy(x, rounded);
        Backend.Linear(rounded, _parameters[ParameterId.LmHead], null, logits);
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
        ReleaseGradients();
        ReleaseAdapters();
        foreach (var (_, tensor) in _parameters.Items) tensor.Dispose();
        foreach (var bag in _pool.Values)
            while (bag.TryTake(out var t)) t.Dispose();
        if (_ownsBackend) Backend.Dispose();
    }
}
