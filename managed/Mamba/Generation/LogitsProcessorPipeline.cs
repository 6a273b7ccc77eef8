namespace Mamba.Generation;

/// <summary>
/// The logits processors that <see cref="GenerationOptions"/> call for, in the order transformers'
/// <c>generate</c> applies them; <see cref="Process"/> turns a row of raw next-token logits into the scores that
/// <see cref="TokenSampler"/> picks from.
/// </summary>
/// <remarks>
/// <para>
/// Order, from transformers' <c>GenerationMixin._get_logits_processor</c>
/// (<c>src/transformers/generation/utils.py</c>): the processors proper first —
/// <c>RepetitionPenaltyLogitsProcessor</c> (when repetition_penalty != 1), <c>MinLengthLogitsProcessor</c>
/// (when min_length &gt; 0 and there are eos ids), <c>MinNewTokensLengthLogitsProcessor</c> (when
/// min_new_tokens &gt; 0 and there are eos ids) — and then, only when <c>do_sample</c>, the former "warpers":
/// <c>TemperatureLogitsWarper</c> (temperature != 1), <c>TopKLogitsWarper</c> (top_k != 0),
/// <c>TopPLogitsWarper</c> (top_p &lt; 1), <c>MinPLogitsWarper</c> (min_p set; the source notes it is applied after
/// temperature scaling, following llama.cpp). So temperature reshapes the distribution before top-k, top-p and
/// min-p look at it. min_tokens_to_keep is 1 (it is larger only for beam search).
/// </para>
/// <para>
/// Lengths: as transformers' <c>_prepare_generated_length</c> does, a set <c>min_new_tokens</c> replaces
/// <c>min_length</c> (min_length becomes prompt + min_new_tokens, which masks exactly what
/// <c>MinNewTokensLengthLogitsProcessor</c> masks), so <see cref="MinLengthLogitsProcessor"/> is only added when
/// <see cref="GenerationOptions.MinNewTokens"/> is 0.
/// </para>
/// <para>An instance keeps no per-row state: one may serve several rows in turn, but not concurrently from several threads.</para>
/// </remarks>
public sealed class LogitsProcessorPipeline
{
    private readonly ILogitsProcessor[] _processors;

    /// <summary>Builds the processors for <paramref name="options"/>.</summary>
    /// <param name="options">The generation options (validated here).</param>
    /// <param name="modelEosTokenIds">
    /// The model's end-of-sequence ids, used when <see cref="GenerationOptions.EosTokenIds"/> is null. With no eos
    /// ids at all the minimum-length processors are left out, as in transformers.
    /// </param>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range (see <see cref="GenerationOptions.Validate"/>).</exception>
    public LogitsProcessorPipeline(GenerationOptions options, IReadOnlyList<int>? modelEosTokenIds = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Options = options;
        EosTokenIds = [.. options.EosTokenIds ?? modelEosTokenIds ?? []];

        var list = new List<ILogitsProcessor>();
        if (options.RepetitionPenalty != 1.0)
            list.Add(new RepetitionPenaltyLogitsProcessor(options.RepetitionPenalty));
        bool haveEos = EosTokenIds.Count > 0;
        if (haveEos && options.MinNewTokens == 0 && options.MinLength is > 0)
            list.Add(new MinLengthLogitsProcessor(options.MinLength.Value, EosTokenIds));
        if (haveEos && options.MinNewTokens > 0)
            list.Add(new MinNewTokensLengthLogitsProcessor(options.MinNewTokens, EosTokenIds));
        if (options.DoSample)
        {
            if (options.Temperature != 1.0)
                list.Add(new TemperatureLogitsWarper(options.Temperature));
            if (options.TopK != 0)
                list.Add(new TopKLogitsWarper(options.TopK));
            if (options.TopP < 1.0)
                list.Add(new TopPLogitsWarper(options.TopP));
            if (options.MinP is { } minP)
                list.Add(new MinPLogitsWarper(minP));
        }
        _processors = [.. list];
    }

    /// <summary>The options the pipeline was built from.</summary>
    public GenerationOptions Options { get; }

    /// <summary>The end-of-sequence ids in force (the options' or else the model's).</summary>
    public IReadOnlyList<int> EosTokenIds { get; }

    /// <summary>The processors, in the order they run.</summary>
    public IReadOnlyList<ILogitsProcessor> Processors => _processors;

    /// <summary>Runs every processor, in order, over one row's next-token logits.</summary>
    /// <param name="logits">The row's logits (one per vocabulary id), rewritten in place.</param>
    /// <param name="sequence">The row's tokens so far: the prompt followed by the tokens generated so far (no padding).</param>
    /// <param name="promptLength">How many leading tokens of <paramref name="sequence"/> are the prompt.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="promptLength"/> is negative or longer than the sequence, or a token is outside the vocabulary.</exception>
    public void Process(Span<float> logits, ReadOnlySpan<int> sequence, int promptLength)
    {
        if ((uint)promptLength > (uint)sequence.Length)
            throw new ArgumentOutOfRangeException(nameof(promptLength), promptLength, $"must be in [0, {sequence.Length}] (the sequence length)");
        foreach (var processor in _processors)
            processor.Process(logits, sequence, promptLength);
    }
}
