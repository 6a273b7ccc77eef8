using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Mamba.Compute;
using Mamba.Model;
using Mamba.Tokenization;

namespace Mamba.Generation;

/// <summary>One token chosen by a <see cref="GenerationLoop"/> step: the row, the id and the text it completes.</summary>
internal readonly record struct GeneratedToken(int Row, int Token, string Text);

/// <summary>
/// The generation core: every public generate method (<see cref="MambaModel"/>'s, <see cref="MambaForCausalLM.GenerateGreedy"/>)
/// and <c>mamba bench</c> run through it. One generation over a batch, advanced a token at a time: prefill the
/// left-padded prompts with their attention mask, then per step choose each live row's token (logits processors in
/// transformers' order, then greedy or seeded sampling, one <see cref="TokenSampler"/> per row) and feed the chosen
/// tokens back with the cache. A row ends at eos, a stop sequence or its length limit.
/// </summary>
/// <remarks>
/// <para>
/// Greedy choices with nothing to reshape the logits (no sampling, no repetition penalty, every live row past its
/// minimum length) are made on the backend, so logits never leave the device; otherwise each row's logits come to
/// the host. Both follow <see cref="ArgMaxRule"/>, and a row with nothing to choose fails the same way on either.
/// </para>
/// <para>
/// Finished rows leave the batch by a gather of the remaining cache rows on the backend (<see cref="MambaCache.SelectRows"/>).
/// Where a decode step may run as a captured CUDA graph or fused plan (device-side greedy on a device backend), that
/// step is bound to one cache and batch size, so each compaction costs a new op-by-op step and a new capture. There a
/// finished row keeps its slot (fed its last token, its output ignored) until at most half the slots are live: the
/// batch halves at a time, so a batch of B is captured at most about log2(B) + 1 times instead of once per finished
/// row, and the rows computed for nothing never exceed the live ones. Elsewhere (CPU, or host-side choices) nothing is
/// bound to the cache and every padding row is pure extra work, so the batch compacts as soon as a row finishes.
/// Every op computes each row on its own, so the tokens do not depend on when compaction happens: bit for bit on the
/// CPU (its GEMM gives a row the same bits at any batch size); on CUDA as far as its GEMMs do too (GenerationGpuTests).
/// </para>
/// </remarks>
internal sealed class GenerationLoop : IDisposable
{
    private readonly MambaForCausalLM _model;
    private readonly Lora.LoadedLoraAdapter? _adapter;
    private readonly Row[] _rows;
    private readonly HashSet<int> _eosIds;
    private readonly int[,] _prefillIds;
    private readonly int[,]? _prefillMask;
    private readonly int _prefillChunkTokens;
    private readonly bool _plainGreedy;
    private readonly Stopwatch _prefillClock = new();
    private readonly Stopwatch _decodeClock = new();
    private MambaCache? _cache;
    private bool _ownsCache;
    private bool _prefilled;
    private int[] _slotRow = [];         // per cache slot, the row it holds (a finished row may keep its slot, see remarks)
    private int _live;                   // rows still generating
    private bool _choseOnDevice;         // the last forward chose on the backend (_argMax), else brought logits (_logits)
    private int[] _argMax = [];           // per slot
    private float[][] _logits = [];      // per slot, the last position's logits

    private sealed class Row
    {
        public required int[] Prompt;
        public required List<int> Sequence;       // prompt + generated
        public required List<int> Generated;
        public required LogitsProcessorPipeline Pipeline;
        public required TokenSampler Sampler;
        public required int MaxNew;
        public required int MinNew;
        public StreamingDecoder? Decoder;
        public StopSequenceMatcher? Stops;
        public StringBuilder Text = new();
        public FinishReason? Finish;
    }

    private GenerationLoop(MambaForCausalLM model, MambaTokenizer? tokenizer, int[][] prompts, int[,] prefillIds, int[,]? prefillMask,
        GenerationOptions options, IReadOnlyList<int> eosIds, MambaCache? cache, int prefillChunkTokens)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(eosIds);
        options.Validate();
        if (options.StopSequences.Count > 0 && tokenizer is null)
            throw new ArgumentException("stop sequences need a tokenizer to decode text", nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(prefillChunkTokens);
        if (prefillChunkTokens > 0 && prefillMask is not null)
            throw new ArgumentException("a chunked prefill takes prompts of one length, without an attention mask", nameof(prefillChunkTokens));
        if (cache is not null && (cache.BatchSize != prompts.Length || cache.HasPreviousState))
            throw new ArgumentException($"the cache must be empty and hold {prompts.Length} rows (it holds {cache.BatchSize}, filled: {cache.HasPreviousState})", nameof(cache));
        _model = model;
        _adapter = options.Adapter is null ? null
            : model.Adapters.FirstOrDefault(a => a.Name == options.Adapter)
              ?? throw new ArgumentException($"no adapter named '{options.Adapter}' is loaded (loaded: {string.Join(", ", model.Adapters.Select(a => a.Name).DefaultIfEmpty("none"))})", nameof(options));
        _prefillIds = prefillIds;
        _prefillMask = prefillMask;
        _prefillChunkTokens = prefillChunkTokens;
        _cache = cache;
        _rows = new Row[prompts.Length];
        for (int i = 0; i < prompts.Length; i++)
        {
            var prompt = prompts[i];
            _rows[i] = new Row
            {
                Prompt = prompt,
                Sequence = [.. prompt],
                Generated = [],
                Pipeline = new LogitsProcessorPipeline(options, eosIds),
                Sampler = new TokenSampler(options),
                MaxNew = options.ResolveMaxNewTokens(prompt.Length),
                MinNew = options.ResolveMinNewTokens(prompt.Length),
                Decoder = tokenizer?.CreateStreamingDecoder(skipSpecialTokens: true),
                Stops = options.StopSequences.Count > 0 ? new StopSequenceMatcher(options.StopSequences) : null,
            };
        }
        _eosIds = (options.EosTokenIds ?? eosIds).ToHashSet();
        _plainGreedy = !options.DoSample && options.RepetitionPenalty == 1.0;
        // Only there is a decode step bound to the cache (and it runs the base weights: never with an adapter).
        RetainFinishedRows = _plainGreedy && _adapter is null && model.Backend is IGreedyDecodeAccelerator;
    }

    /// <summary>
    /// Prompts of any lengths, left-padded (with <c>pad_token_id</c>, or 0) into one prefill, with an attention mask
    /// when their lengths differ. With greedy decoding and <c>use_bias = false</c> each row equals running that prompt alone.
    /// <paramref name="eosIds"/> are the eos ids when <paramref name="options"/> name none (as for <see cref="LogitsProcessorPipeline"/>).
    /// </summary>
    public static GenerationLoop ForPrompts(MambaForCausalLM model, MambaTokenizer? tokenizer, IReadOnlyList<IReadOnlyList<int>> prompts,
        GenerationOptions options, IReadOnlyList<int> eosIds)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        var rows = new int[prompts.Count][];
        for (int i = 0; i < rows.Length; i++)
            rows[i] = prompts[i]?.ToArray() ?? throw new ArgumentNullException(nameof(prompts), $"prompt {i} is null");
        CheckPrompts(model, rows, nameof(prompts));
        int batch = rows.Length, length = rows.Max(r => r.Length);
        int pad = model.Config.PadTokenId ?? 0;
        var ids = new int[batch, length];
        var mask = new int[batch, length];
        bool padded = false;
        for (int b = 0; b < batch; b++)
        {
            int offset = length - rows[b].Length;
            padded |= offset > 0;
            for (int t = 0; t < length; t++)
            {
                ids[b, t] = t < offset ? pad : rows[b][t - offset];
                mask[b, t] = t < offset ? 0 : 1;
            }
        }
        return new GenerationLoop(model, tokenizer, rows, ids, padded ? mask : null, options, eosIds, cache: null, prefillChunkTokens: 0);
    }

    /// <summary>
    /// A batch already laid out as transformers' <c>generate(input_ids, attention_mask)</c> takes it: each row of
    /// <paramref name="inputIds"/> (padding included) is that row's prompt, and the mask goes to the prefill as given.
    /// </summary>
    /// <param name="model">The model.</param>
    /// <param name="inputIds">[B, L] prompt ids.</param>
    /// <param name="attentionMask">[B, L] of 0/1, or null.</param>
    /// <param name="options">The generation options.</param>
    /// <param name="eosIds">The eos ids when <paramref name="options"/> name none (empty: rows end only at their length).</param>
    /// <param name="cache">
    /// An empty cache of B rows to fill and advance (a caller reusing its caches, as the bench does), or null for a new
    /// one. The loop never disposes a caller's cache; once rows leave the batch it continues on a gathered copy.
    /// </param>
    /// <param name="prefillChunkTokens">Prefill in chunks of this many tokens (0: the whole prompt at once); needs no mask.</param>
    public static GenerationLoop ForBatch(MambaForCausalLM model, int[,] inputIds, int[,]? attentionMask, GenerationOptions options,
        IReadOnlyList<int> eosIds, MambaCache? cache = null, int prefillChunkTokens = 0)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        int batch = inputIds.GetLength(0), length = inputIds.GetLength(1);
        var rows = new int[batch][];
        for (int b = 0; b < batch; b++)
        {
            rows[b] = new int[length];
            for (int t = 0; t < length; t++) rows[b][t] = inputIds[b, t];
        }
        CheckPrompts(model, rows, nameof(inputIds));
        return new GenerationLoop(model, null, rows, inputIds, attentionMask, options, eosIds, cache, prefillChunkTokens);
    }

    private static void CheckPrompts(MambaForCausalLM model, int[][] prompts, string parameter)
    {
        if (prompts.Length == 0) throw new ArgumentException("at least one prompt is needed", parameter);
        for (int i = 0; i < prompts.Length; i++)
        {
            if (prompts[i].Length == 0) throw new ArgumentException($"prompt {i} is empty: give at least one token (e.g. the bos id)", parameter);
            foreach (var id in prompts[i])
                if ((uint)id >= (uint)model.Config.VocabSize)
                    throw new ArgumentOutOfRangeException(parameter, id, $"prompt {i} holds a token id outside the vocabulary [0, {model.Config.VocabSize})");
        }
    }

    /// <summary>
    /// True keeps finished rows in the batch until at most half its slots are live (see the remarks); false compacts
    /// at every finished row. Defaults to true exactly where a decode step can be bound to the cache. Tests set it.
    /// </summary>
    internal bool RetainFinishedRows { get; set; }

    /// <summary>Rows the cache holds now (live rows plus finished rows that kept their slot).</summary>
    internal int BatchSlots => _slotRow.Length;

    /// <summary>True once every row has finished.</summary>
    public bool IsFinished => _prefilled && _live == 0;

    /// <summary>Runs the prefill of every prompt (chooses each row's first token, which <see cref="Step"/> reports).</summary>
    public void Prefill()
    {
        if (_prefilled) throw new InvalidOperationException("prefill already ran");
        _prefilled = true;
        _prefillClock.Start();
        int batch = _rows.Length;
        if (_cache is null)
        {
            _cache = _model.CreateCache(batch);
            _ownsCache = true;
        }
        _slotRow = Enumerable.Range(0, batch).ToArray();
        _live = batch;
        if (_prefillChunkTokens > 0) ForwardChunked(_prefillIds);
        else Forward(_prefillIds, _prefillMask);
        _prefillClock.Stop();
        // Rows asking for no new tokens are done at once.
        foreach (var row in _rows)
            if (row.MaxNew == 0) row.Finish = FinishReason.Length;
        Compact();
    }

    /// <summary>One decode step: chooses a token for each live row and returns them in row order.</summary>
    public IReadOnlyList<GeneratedToken> Step()
    {
        if (!_prefilled) throw new InvalidOperationException("call Prefill first");
        if (_live == 0) return [];
        _decodeClock.Start();
        var produced = new List<GeneratedToken>(_live);
        for (int slot = 0; slot < _slotRow.Length; slot++)
        {
            var row = _rows[_slotRow[slot]];
            if (row.Finish is not null) continue; // a finished row that kept its slot: its output is ignored
            int token = Choose(row, slot);
            row.Sequence.Add(token);
            row.Generated.Add(token);
            string text;
            if (_eosIds.Contains(token))
            {
                row.Finish = FinishReason.EndOfSequence;
                text = FlushText(row);
            }
            else
            {
                text = AppendText(row, token);
                if (row.Finish is null && row.Generated.Count >= row.MaxNew)
                {
                    row.Finish = FinishReason.Length;
                    text += FlushText(row);
                }
            }
            produced.Add(new GeneratedToken(_slotRow[slot], token, text));
        }
        Compact();
        if (_live > 0)
        {
            var ids = new int[_slotRow.Length, 1];
            for (int slot = 0; slot < _slotRow.Length; slot++) ids[slot, 0] = _rows[_slotRow[slot]].Sequence[^1];
            Forward(ids, null);
        }
        _decodeClock.Stop();
        return produced;
    }

    /// <summary>Steps until every row has finished (after <see cref="Prefill"/>).</summary>
    public void Decode()
    {
        while (!IsFinished) Step();
    }

    /// <summary>The prefill and then each step on a worker thread; yields every step's tokens. Cancellation is honoured between tokens.</summary>
    public async IAsyncEnumerable<IReadOnlyList<GeneratedToken>> RunAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await Task.Run(Prefill, cancellationToken).ConfigureAwait(false);
        while (!IsFinished)
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return await Task.Run(Step, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The token for a live row from the last forward's output in its slot.</summary>
    private int Choose(Row row, int slot)
    {
        if (!_choseOnDevice)
        {
            var logits = _logits[slot];
            row.Pipeline.Process(logits, CollectionsMarshal.AsSpan(row.Sequence), row.Prompt.Length);
            return row.Sampler.Next(logits);
        }
        int token = _argMax[slot];
        return token != ArgMaxRule.NoValue ? token : throw ArgMaxRule.NoUsableScores();
    }

    /// <summary>
    /// Whether the next choice can be made on the backend: greedy with nothing that reshapes the logits (no repetition
    /// penalty, and no live row still below its minimum length, where eos is suppressed).
    /// </summary>
    private bool ChooseOnDevice()
    {
        if (!_plainGreedy) return false;
        foreach (var r in _slotRow)
            if (_rows[r].Finish is null && _rows[r].Generated.Count < _rows[r].MinNew) return false;
        return true;
    }

    private void Forward(int[,] ids, int[,]? mask)
    {
        _choseOnDevice = ChooseOnDevice();
        if (_choseOnDevice) _argMax = _model.ForwardArgMax(ids, _cache, mask, _adapter);
        else KeepLogits(_model.Forward(ids, new ForwardOptions { Cache = _cache, LogitsToKeep = 1, AttentionMask = mask, Adapter = _adapter }));
    }

    /// <summary>The prefill in chunks, so device memory stays that of one chunk whatever the prompt length.</summary>
    private void ForwardChunked(int[,] ids)
    {
        _choseOnDevice = ChooseOnDevice();
        if (_choseOnDevice)
        {
            _argMax = _model.PrefillChunked(ids, _cache!, _prefillChunkTokens, _adapter);
            return;
        }
        int batch = ids.GetLength(0), length = ids.GetLength(1);
        for (int start = 0; start < length; start += _prefillChunkTokens)
        {
            int n = Math.Min(_prefillChunkTokens, length - start);
            var chunk = new int[batch, n];
            for (int b = 0; b < batch; b++)
                for (int t = 0; t < n; t++) chunk[b, t] = ids[b, start + t];
            var output = _model.Forward(chunk, new ForwardOptions { Cache = _cache, LogitsToKeep = 1, Adapter = _adapter });
            if (start + n == length) KeepLogits(output);
        }
    }

    private void KeepLogits(CausalLMOutput output) =>
        _logits = Enumerable.Range(0, _slotRow.Length).Select(s => output.Logits.Row(s, 0).ToArray()).ToArray();

    /// <summary>The text a new token completes; a stop sequence in it ends the row, the text stopping before it.</summary>
    private static string AppendText(Row row, int token)
    {
        if (row.Decoder is null) return "";
        var piece = row.Decoder.Append(token);
        if (row.Stops is null) return Emit(row, piece);
        if (row.Stops.Append(piece) >= 0) row.Finish = FinishReason.StopSequence;
        return Emit(row, row.Stops.TakeSafeText());
    }

    /// <summary>The text still held back when a row ends (an incomplete character, a possible stop sequence's start).</summary>
    private static string FlushText(Row row)
    {
        if (row.Decoder is null) return "";
        var rest = row.Decoder.Flush();
        if (row.Stops is null) return Emit(row, rest);
        // A stop sequence the last bytes complete still cuts the text; otherwise everything held back is safe now.
        return Emit(row, rest.Length > 0 && row.Stops.Append(rest) >= 0 ? row.Stops.TakeSafeText() : row.Stops.Flush());
    }

    private static string Emit(Row row, string text)
    {
        row.Text.Append(text);
        return text;
    }

    /// <summary>Counts the live rows and, by the rule in the remarks, gathers them into a smaller cache.</summary>
    private void Compact()
    {
        var keep = new List<int>(_slotRow.Length);
        for (int slot = 0; slot < _slotRow.Length; slot++)
            if (_rows[_slotRow[slot]].Finish is null) keep.Add(slot);
        _live = keep.Count;
        if (_live == _slotRow.Length) return;
        if (_live == 0)
        {
            ReleaseCache();
            _slotRow = [];
            return;
        }
        if (RetainFinishedRows && 2 * _live > _slotRow.Length) return;
        var gathered = _cache!.SelectRows(keep);
        ReleaseCache();
        _cache = gathered;
        _ownsCache = true;
        if (_choseOnDevice) _argMax = keep.Select(s => _argMax[s]).ToArray();
        else _logits = keep.Select(s => _logits[s]).ToArray();
        _slotRow = keep.Select(s => _slotRow[s]).ToArray();
    }

    private void ReleaseCache()
    {
        if (_ownsCache) _cache?.Dispose();
        _cache = null;
        _ownsCache = false;
    }

    /// <summary>The result of every row so far (a row still running reports <see cref="FinishReason.Length"/>).</summary>
    public IReadOnlyList<GenerationResult> Results()
    {
        var results = new GenerationResult[_rows.Length];
        for (int b = 0; b < _rows.Length; b++)
        {
            var row = _rows[b];
            results[b] = new GenerationResult
            {
                Text = row.Text.ToString(),
                PromptIds = row.Prompt,
                OutputIds = row.Generated.ToArray(),
                FinishReason = row.Finish ?? FinishReason.Length,
                Usage = new GenerationUsage(row.Prompt.Length, row.Generated.Count),
                PrefillTime = _prefillClock.Elapsed,
                DecodeTime = _decodeClock.Elapsed,
            };
        }
        return results;
    }

    /// <summary>Each row's prompt and generated ids, [B, longest], right-padded with <paramref name="pad"/> (transformers' <c>generate</c> output).</summary>
    public int[,] Sequences(int pad)
    {
        int width = _rows.Max(r => r.Prompt.Length + r.Generated.Count);
        var result = new int[_rows.Length, width];
        for (int b = 0; b < _rows.Length; b++)
        {
            var row = _rows[b];
            int n = row.Prompt.Length + row.Generated.Count;
            for (int t = 0; t < width; t++)
                result[b, t] = t < row.Prompt.Length ? row.Prompt[t] : t < n ? row.Generated[t - row.Prompt.Length] : pad;
        }
        return result;
    }

    public void Dispose() => ReleaseCache();
}
