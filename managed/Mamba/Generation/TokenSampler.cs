namespace Mamba.Generation;

/// <summary>
/// Picks the next token from processed logits (the output of <see cref="LogitsProcessorPipeline"/>): the argmax
/// in greedy decoding (<see cref="GenerationOptions.DoSample"/> false), otherwise a draw from the softmax of the
/// logits, as transformers' <c>_sample</c> does (<c>torch.argmax</c> or <c>torch.multinomial(softmax(scores))</c>).
/// </summary>
/// <remarks>
/// <para>
/// With <see cref="GenerationOptions.Seed"/> set, the draws come from <c>new System.Random(seed)</c>: the same
/// seed and the same logits give the same tokens on every run and machine. The random stream is .NET's, not
/// PyTorch's, so a seed does not reproduce transformers' samples. Without a seed the generator is seeded by the
/// system. Each sampler owns its generator; one sampler per generated row keeps rows independent of batch order.
/// </para>
/// <para>Not thread-safe: use one instance per row or per thread.</para>
/// </remarks>
public sealed class TokenSampler
{
    private readonly Random? _random;

    /// <summary>Creates a sampler for <paramref name="options"/> (greedy or sampling, and the seed).</summary>
    /// <param name="options">The generation options.</param>
    public TokenSampler(GenerationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        DoSample = options.DoSample;
        if (DoSample)
            _random = options.Seed is { } seed ? new Random(seed) : new Random();
    }

    /// <summary>True when tokens are sampled, false for greedy decoding.</summary>
    public bool DoSample { get; }

    /// <summary>Chooses the next token id from one row of processed logits.</summary>
    /// <param name="processedLogits">The logits after the logits processors; −∞ marks a token that cannot be chosen.</param>
    /// <returns>The chosen token id (an index into <paramref name="processedLogits"/>).</returns>
    /// <exception cref="ArgumentException">The logits are empty.</exception>
    /// <exception cref="MambaNumericalException">No token can be chosen (all NaN, or all −∞/NaN when sampling).</exception>
    public int Next(ReadOnlySpan<float> processedLogits) =>
        DoSample ? Sample(processedLogits, _random!) : ArgMax(processedLogits);

    /// <summary>
    /// The index of the largest logit by the library's one rule (<see cref="ArgMaxRule"/>): the first one when several
    /// tie (as <c>torch.argmax</c>); NaN never wins; when every value is −∞, index 0.
    /// </summary>
    /// <param name="logits">The values.</param>
    /// <exception cref="ArgumentException">The span is empty.</exception>
    /// <exception cref="MambaNumericalException">Every value is NaN.</exception>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("no logits to choose from", nameof(logits));
        int best = ArgMaxRule.Of(logits);
        return best != ArgMaxRule.NoValue ? best : throw ArgMaxRule.NoUsableScores();
    }

    /// <summary>
    /// Draws an index with probability softmax(logits)[i], the softmax computed in float64 after subtracting the
    /// largest logit. −∞ and NaN entries have probability 0.
    /// </summary>
    /// <param name="logits">The values.</param>
    /// <param name="random">The random source.</param>
    /// <exception cref="ArgumentException">The span is empty.</exception>
    /// <exception cref="MambaNumericalException">Every value is −∞ or NaN.</exception>
    public static int Sample(ReadOnlySpan<float> logits, Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        if (logits.IsEmpty) throw new ArgumentException("no logits to choose from", nameof(logits));
        float max = float.NegativeInfinity;
        foreach (var v in logits)
            if (v > max) max = v;
        if (float.IsNegativeInfinity(max))
            throw new MambaNumericalException("every logit is -inf or NaN: no token can be sampled (the forward pass overflowed, or the logits processors excluded every token)");
        if (float.IsPositiveInfinity(max))
        {
            // softmax puts all the mass on the +∞ entries (evenly); pick among them.
            int count = 0;
            foreach (var v in logits)
                if (float.IsPositiveInfinity(v)) count++;
            int pick = random.Next(count);
            for (int i = 0; i < logits.Length; i++)
                if (float.IsPositiveInfinity(logits[i]) && pick-- == 0) return i;
        }

        double total = 0;
        foreach (var v in logits)
            if (!float.IsNaN(v)) total += Math.Exp((double)v - max);
        double u = random.NextDouble() * total, cumulative = 0;
        int last = -1;
        for (int i = 0; i < logits.Length; i++)
        {
            var v = logits[i];
            if (float.IsNaN(v) || float.IsNegativeInfinity(v)) continue;
            cumulative += Math.Exp((double)v - max);
            last = i;
            if (u < cumulative) return i;
        }
        return last;   // rounding left u at the very top: the last token with probability > 0
    }
}
