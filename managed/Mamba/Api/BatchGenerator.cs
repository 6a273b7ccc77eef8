using System.Diagnostics;
using Mamba.Generation;
using Mamba.Model;
using Mamba.Tokenization;

namespace Mamba;

/// <summary>
/// One generation over a batch of prompts, advanced a token at a time: prefill the left-padded prompts with
/// their attention mask, then per step choose each active row's token (logits processors in transformers'
/// order, then greedy or seeded sampling), and feed the chosen tokens back with the cache. A row that ends
/// (eos, stop sequence, length) leaves the batch: its cache row is dropped so it costs no more work.
/// </summary>
internal sealed class BatchGenerator : IDisposable
{
    private readonly MambaForCausalLM _model;
    private readonly MambaTokenizer? _tokenizer;
    private readonly Row[] _rows;
    private readonly Stopwatch _prefillClock = new();
    private readonly Stopwatch _decodeClock = new();
    private MambaCache? _cache;
    private List<int> _active;           // row indices still generating, in cache order
    private float[][] _lastLogits;       // per active slot, the logits of the last position
    private int[] _argMax = [];          // fast greedy path: per active slot, the token chosen on the device
    private readonly bool _deviceGreedy;

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
        public System.Text.StringBuilder Text = new();
        public FinishReason? Finish;
    }

    public BatchGenerator(MambaForCausalLM model, MambaTokenizer? tokenizer, IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options, IReadOnlyList<int> eosIds)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0) throw new ArgumentException("at least one prompt is needed", nameof(prompts));
        options.Validate();
        if (options.StopSequences.Count > 0 && tokenizer is null)
            throw new ArgumentException("stop sequences need a tokenizer to decode text", nameof(options));
        _model = model;
        _tokenizer = tokenizer;
        _rows = new Row[prompts.Count];
        for (int i = 0; i < prompts.Count; i++)
        {
            var prompt = prompts[i]?.ToArray() ?? throw new ArgumentNullException(nameof(prompts), $"prompt {i} is null");
            if (prompt.Length == 0) throw new ArgumentException($"prompt {i} is empty: give at least one token (e.g. the bos id)", nameof(prompts));
            foreach (var id in prompt)
                if ((uint)id >= (uint)model.Config.VocabSize)
                    throw new ArgumentOutOfRangeException(nameof(prompts), id, $"prompt {i} holds a token id outside the vocabulary [0, {model.Config.VocabSize})");
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
        EosIds = eosIds.ToHashSet();
        // Plain greedy (no penalty, no eos suppression): the argmax runs on the backend, so logits never
        // leave the device. Same tie rule as TokenSampler.ArgMax (lowest index, NaN never wins).
        _deviceGreedy = !options.DoSample && options.RepetitionPenalty == 1.0 && _rows.All(r => r.MinNew == 0);
        _active = [];
        _lastLogits = [];
    }

    public HashSet<int> EosIds { get; }

    public bool IsFinished => _prefilled && _active.Count == 0;

    private bool _prefilled;

    /// <summary>Runs the prefill of every prompt (left-padded to the longest, with a mask when lengths differ).</summary>
    public void Prefill()
    {
        if (_prefilled) throw new InvalidOperationException("prefill already ran");
        _prefilled = true;
        _prefillClock.Start();
        int batch = _rows.Length, length = _rows.Max(r => r.Prompt.Length);
        int pad = _model.Config.PadTokenId ?? 0;
        var ids = new int[batch, length];
        var mask = new int[batch, length];
        bool padded = false;
        for (int b = 0; b < batch; b++)
        {
            int offset = length - _rows[b].Prompt.Length;
            padded |= offset > 0;
            for (int t = 0; t < length; t++)
            {
                ids[b, t] = t < offset ? pad : _rows[b].Prompt[t - offset];
                mask[b, t] = t < offset ? 0 : 1;
            }
        }
        _cache = _model.CreateCache(batch);
        _active = Enumerable.Range(0, batch).ToList();
        if (_deviceGreedy)
            _argMax = _model.ForwardArgMax(ids, _cache, padded ? mask : null);
        else
        {
            var output = _model.Forward(ids, new ForwardOptions { Cache = _cache, LogitsToKeep = 1, AttentionMask = padded ? mask : null });
            _lastLogits = Enumerable.Range(0, batch).Select(b => output.Logits.Row(b, 0).ToArray()).ToArray();
        }
        _prefillClock.Stop();
        // Rows asking for no new tokens are done at once.
        for (int b = 0; b < batch; b++)
            if (_rows[b].MaxNew == 0) _rows[b].Finish = FinishReason.Length;
        Compact();
    }

    /// <summary>One decode step: chooses a token for each active row and returns (row, token, new text) per row.</summary>
    public IReadOnlyList<(int Row, int Token, string Text)> Step()
    {
        if (!_prefilled) throw new InvalidOperationException("call Prefill first");
        if (_active.Count == 0) return [];
        _decodeClock.Start();
        var produced = new List<(int, int, string)>(_active.Count);
        var next = new int[_active.Count];
        for (int slot = 0; slot < _active.Count; slot++)
        {
            var row = _rows[_active[slot]];
            int token;
            if (_deviceGreedy) token = _argMax[slot];
            else
            {
                var logits = _lastLogits[slot];
                row.Pipeline.Process(logits, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(row.Sequence), row.Prompt.Length);
                token = row.Sampler.Next(logits);
            }
            next[slot] = token;
            row.Sequence.Add(token);
            row.Generated.Add(token);
            string text = "";
            if (EosIds.Contains(token))
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
            produced.Add((_active[slot], token, text));
        }
        Compact();
        if (_active.Count > 0)
        {
            var ids = new int[_active.Count, 1];
            for (int slot = 0; slot < _active.Count; slot++) ids[slot, 0] = _rows[_active[slot]].Sequence[^1];
            if (_deviceGreedy) _argMax = _model.ForwardArgMax(ids, _cache);
            else
            {
                var output = _model.Forward(ids, new ForwardOptions { Cache = _cache, LogitsToKeep = 1 });
                _lastLogits = Enumerable.Range(0, _active.Count).Select(s => output.Logits.Row(s, 0).ToArray()).ToArray();
            }
        }
        _decodeClock.Stop();
        return produced;
    }

    private string AppendText(Row row, int token)
    {
        if (row.Decoder is null) return "";
        var piece = row.Decoder.Append(token);
        if (row.Stops is null)
        {
            row.Text.Append(piece);
            return piece;
        }
        if (row.Stops.Append(piece) >= 0)
        {
            row.Finish = FinishReason.StopSequence;
            var safe = row.Stops.TakeSafeText();
            row.Text.Append(safe);
            return safe;
        }
        var text = row.Stops.TakeSafeText();
        row.Text.Append(text);
        return text;
    }

    private static string FlushText(Row row)
    {
        if (row.Decoder is null) return "";
        var rest = row.Decoder.Flush();
        if (row.Stops is null)
        {
            row.Text.Append(rest);
            return rest;
        }
        if (rest.Length > 0 && row.Stops.Append(rest) >= 0)
        {
            var safe = row.Stops.TakeSafeText();
            row.Text.Append(safe);
            return safe;
        }
        var text = row.Stops.Flush();
        row.Text.Append(text);
        return text;
    }

    /// <summary>Drops finished rows from the active list and the cache (a gather of the remaining rows).</summary>
    private void Compact()
    {
        var keepSlots = new List<int>();
        for (int slot = 0; slot < _active.Count; slot++)
            if (_rows[_active[slot]].Finish is null) keepSlots.Add(slot);
        if (keepSlots.Count == _active.Count) return;
        var oldCache = _cache!;
        _cache = keepSlots.Count == 0 ? null : oldCache.SelectRows(keepSlots);
        oldCache.Dispose();
        if (_deviceGreedy) _argMax = keepSlots.Select(s => _argMax[s]).ToArray();
        else _lastLogits = keepSlots.Select(s => _lastLogits[s]).ToArray();
        _active = keepSlots.Select(s => _active[s]).ToList();
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

    public void Dispose() => _cache?.Dispose();
}
