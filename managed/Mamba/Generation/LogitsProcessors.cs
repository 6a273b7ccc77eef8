using System.Buffers;

namespace Mamba.Generation;

/// <summary>
/// One step of logits processing for one row: rewrites the next-token logits in place, given the tokens of the
/// row so far. The implementations mirror the classes of the same name in transformers'
/// <c>src/transformers/generation/logits_process.py</c>.
/// </summary>
public interface ILogitsProcessor
{
    /// <summary>Rewrites <paramref name="logits"/> (one entry per vocabulary id) in place.</summary>
    /// <param name="logits">The next-token logits of one row.</param>
    /// <param name="sequence">The row's tokens so far: prompt followed by the generated tokens.</param>
    /// <param name="promptLength">How many leading tokens of <paramref name="sequence"/> are the prompt.</param>
    void Process(Span<float> logits, ReadOnlySpan<int> sequence, int promptLength);
}

/// <summary>
/// transformers' <c>RepetitionPenaltyLogitsProcessor</c>: every token id that occurs in the sequence (prompt
/// included, each id penalized once however often it occurs) has its logit divided by the penalty when the logit
/// is positive (or zero) and multiplied by it when negative. A penalty above 1 discourages repetition, below 1
/// encourages it.
/// </summary>
public sealed class RepetitionPenaltyLogitsProcessor : ILogitsProcessor
{
    private readonly float _penalty;

    /// <summary>Creates the processor.</summary>
    /// <param name="penalty">The penalty, &gt; 0; 1 changes nothing.</param>
    public RepetitionPenaltyLogitsProcessor(double penalty)
    {
        if (!(penalty > 0 && double.IsFinite(penalty)))
            throw new ArgumentOutOfRangeException(nameof(penalty), penalty, "repetition_penalty must be a finite number > 0");
        Penalty = penalty;
        _penalty = (float)penalty;
    }

    /// <summary>The penalty.</summary>
    public double Penalty { get; }

    /// <inheritdoc/>
    /// <exception cref="ArgumentOutOfRangeException">A token of the sequence is outside the vocabulary.</exception>
    public void Process(Span<float> logits, ReadOnlySpan<int> sequence, int promptLength)
    {
        if (sequence.IsEmpty) return;
        var seen = ArrayPool<bool>.Shared.Rent(logits.Length);
        try
        {
            Array.Clear(seen, 0, logits.Length);
            foreach (var id in sequence)
            {
                if ((uint)id >= (uint)logits.Length)
                    throw new ArgumentOutOfRangeException(nameof(sequence), id, $"token id outside the vocabulary [0, {logits.Length})");
                if (seen[id]) continue;
                seen[id] = true;
                // torch.where(score < 0, score * penalty, score / penalty), in float32 as transformers computes it.
                var score = logits[id];
                logits[id] = score < 0 ? score * _penalty : score / _penalty;
            }
        }
        finally
        {
            ArrayPool<bool>.Shared.Return(seen);
        }
    }
}

/// <summary>
/// transformers' <c>MinLengthLogitsProcessor</c>: while the whole sequence (prompt included) is shorter than the
/// minimum length, every end-of-sequence id gets a logit of −∞.
/// </summary>
public sealed class MinLengthLogitsProcessor : ILogitsProcessor
{
    private readonly int[] _eos;

    /// <summary>Creates the processor.</summary>
    /// <param name="minLength">The minimum total length (prompt + generated), &gt;= 0.</param>
    /// <param name="eosTokenIds">The end-of-sequence ids to mask.</param>
    public MinLengthLogitsProcessor(int minLength, IReadOnlyList<int> eosTokenIds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(minLength);
        ArgumentNullException.ThrowIfNull(eosTokenIds);
        MinLength = minLength;
        _eos = [.. eosTokenIds];
    }

    /// <summary>The minimum total length.</summary>
    public int MinLength { get; }

    /// <inheritdoc/>
    public void Process(Span<float> logits, ReadOnlySpan<int> sequence, int promptLength)
    {
        if (sequence.Length < MinLength)
            EosMask.Apply(logits, _eos);
    }
}

/// <summary>
/// transformers' <c>MinNewTokensLengthLogitsProcessor</c>: while fewer than the minimum number of tokens have been
/// generated after the prompt, every end-of-sequence id gets a logit of −∞.
/// </summary>
public sealed class MinNewTokensLengthLogitsProcessor : ILogitsProcessor
{
    private readonly int[] _eos;

    /// <summary>Creates the processor.</summary>
    /// <param name="minNewTokens">The minimum number of generated tokens, &gt;= 0.</param>
    /// <param name="eosTokenIds">The end-of-sequence ids to mask.</param>
    public MinNewTokensLengthLogitsProcessor(int minNewTokens, IReadOnlyList<int> eosTokenIds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(minNewTokens);
        ArgumentNullException.ThrowIfNull(eosTokenIds);
        MinNewTokens = minNewTokens;
        _eos = [.. eosTokenIds];
    }

    /// <summary>The minimum number of generated tokens.</summary>
    public int MinNewTokens { get; }

    /// <inheritdoc/>
    public void Process(Span<float> logits, ReadOnlySpan<int> sequence, int promptLength)
    {
        if (sequence.Length - promptLength < MinNewTokens)
            EosMask.Apply(logits, _eos);
    }
}

internal static class EosMask
{
    /// <summary>Sets the logit of each eos id inside the vocabulary to −∞ (transformers' torch.isin mask ignores ids outside it).</summary>
    public static void Apply(Span<float> logits, int[] eos)
    {
        foreach (var id in eos)
            if ((uint)id < (uint)logits.Length)
                logits[id] = float.NegativeInfinity;
    }
}

/// <summary>transformers' <c>TemperatureLogitsWarper</c>: divides every logit by the temperature.</summary>
public sealed class TemperatureLogitsWarper : ILogitsProcessor
{
    private readonly float _temperature;

    /// <summary>Creates the warper.</summary>
    /// <param name="temperature">The temperature, &gt; 0.</param>
    public TemperatureLogitsWarper(double temperature)
    {
        if (!(temperature > 0 && double.IsFinite(temperature)))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "temperature must be a finite number > 0");
        Temperature = temperature;
        _temperature = (float)temperature;
    }

    /// <summary>The temperature.</summary>
    public double Temperature { get; }

    /// <inheritdoc/>
    public void Process(Span<float> logits, ReadOnlySpan<int> sequence, int promptLength)
    {
        for (int i = 0; i < logits.Length; i++)
            logits[i] /= _temperature;
    }
}

/// <summary>
/// transformers' <c>TopKLogitsWarper</c>: every logit smaller than the k-th largest becomes −∞ (ties with the k-th
/// largest are kept, so more than k tokens may survive).
/// </summary>
public sealed class TopKLogitsWarper : ILogitsProcessor
{
    /// <summary>Creates the warper.</summary>
    /// <param name="topK">k, &gt; 0.</param>
    /// <param name="minTokensToKeep">Lower bound of k (transformers uses max(top_k, min_tokens_to_keep)).</param>
    public TopKLogitsWarper(int topK, int minTokensToKeep = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(topK);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(minTokensToKeep);
        TopK = Math.Max(topK, minTokensToKeep);
    }

    /// <summary>The number of largest logits kept.</summary>
    public int TopK { get; }

    /// <inheritdoc/>
    public void Process(Span<float> logits, ReadOnlySpan<int> sequence, int promptLength)
    {
        int k = Math.Min(TopK, logits.Length);
        if (k == logits.Length || k == 0) return;
        float threshold = KthLargest(logits, k);
        for (int i = 0; i < logits.Length; i++)
            if (logits[i] < threshold)
                logits[i] = float.NegativeInfinity;
    }

    /// <summary>The k-th largest value (NaN counts as largest, as in torch.topk), by a min-heap of the k largest.</summary>
    internal static float KthLargest(ReadOnlySpan<float> values, int k)
    {
        var heap = ArrayPool<float>.Shared.Rent(k);
        try
        {
            int count = 0;
            foreach (var raw in values)
            {
                var v = float.IsNaN(raw) ? float.PositiveInfinity : raw;
                if (count < k)
                {
                    // sift up
                    int i = count++;
                    heap[i] = v;
                    while (i > 0)
                    {
                        int parent = (i - 1) >> 1;
                        if (heap[parent] <= heap[i]) break;
                        (heap[parent], heap[i]) = (heap[i], heap[parent]);
                        i = parent;
                    }
                }
                else if (v > heap[0])
                {
                    // replace the root and sift down
                    heap[0] = v;
                    int i = 0;
                    while (true)
                    {
                        int left = 2 * i + 1, right = left + 1, smallest = i;
                        if (left < k && heap[left] < heap[smallest]) smallest = left;
                        if (right < k && heap[right] < heap[smallest]) smallest = right;
                        if (smallest == i) break;
                        (heap[smallest], heap[i]) = (heap[i], heap[smallest]);
                        i = smallest;
                    }
                }
            }
            return heap[0];
        }
        finally
        {
            ArrayPool<float>.Shared.Return(heap);
        }
    }
}

/// <summary>
/// transformers' <c>TopPLogitsWarper</c> (nucleus): sorts the logits ascending, takes the cumulative softmax, and
/// sets to −∞ every token whose cumulative probability is &lt;= 1 − top_p, always keeping the
/// <c>min_tokens_to_keep</c> most likely tokens. The kept set is the smallest set of most likely tokens whose
/// probability reaches top_p.
/// </summary>
/// <remarks>The softmax and cumulative sum are computed in float64 (transformers: float32), which can only matter for a token sitting exactly on the boundary.</remarks>
public sealed class TopPLogitsWarper : ILogitsProcessor
{
    /// <summary>Creates the warper.</summary>
    /// <param name="topP">top_p in (0, 1]; 1 keeps everything.</param>
    /// <param name="minTokensToKeep">Tokens kept whatever their probability, &gt;= 1.</param>
    public TopPLogitsWarper(double topP, int minTokensToKeep = 1)
    {
        if (!(topP > 0 && topP <= 1))
            throw new ArgumentOutOfRangeException(nameof(topP), topP, "top_p must be in (0, 1]");
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(minTokensToKeep);
        TopP = topP;
        MinTokensToKeep = minTokensToKeep;
    }

    /// <summary>top_p.</summary>
    public double TopP { get; }

    /// <summary>Tokens always kept.</summary>
    public int MinTokensToKeep { get; }

    /// <inheritdoc/>
    public void Process(Span<float> logits, ReadOnlySpan<int> sequence, int promptLength)
    {
        // Tokens already at −∞ have probability 0: their cumulative probability is that of the tokens sorted before
        // them (0 <= 1 − top_p), so they are removed anyway, unless min_tokens_to_keep reaches them. Sorting only the
        // finite-or-+∞ logits is therefore exact whenever at least min_tokens_to_keep of them exist (the usual case:
        // after top-k only k tokens remain).
        int n = 0;
        foreach (var v in logits)
            if (!float.IsNegativeInfinity(v)) n++;
        bool all = n < MinTokensToKeep;
        if (all) n = logits.Length;
        if (n == 0) return;

        var index = ArrayPool<int>.Shared.Rent(n);
        var sorted = ArrayPool<float>.Shared.Rent(n);
        try
        {
            int m = 0;
            for (int i = 0; i < logits.Length; i++)
                if (all || !float.IsNegativeInfinity(logits[i]))
                {
                    index[m] = i;
                    sorted[m] = logits[i];
                    m++;
                }
            // Ascending by value; ties by index (torch.sort is not stable by default, so any tie order is valid).
            Array.Sort(sorted, index, 0, n);

            double max = double.NegativeInfinity;
            for (int j = 0; j < n; j++)
                if (sorted[j] > max) max = sorted[j];
            if (double.IsNegativeInfinity(max) || double.IsNaN(max)) return;
            double total = 0;
            for (int j = 0; j < n; j++)
                total += Math.Exp(sorted[j] - max);

            double cutoff = 1.0 - TopP, cumulative = 0;
            int keepFrom = n - MinTokensToKeep;   // positions >= keepFrom are always kept
            for (int j = 0; j < n; j++)
            {
                cumulative += Math.Exp(sorted[j] - max) / total;
                if (j < keepFrom && cumulative <= cutoff)
                    logits[index[j]] = float.NegativeInfinity;
            }
        }
        finally
        {
            ArrayPool<int>.Shared.Return(index);
            ArrayPool<float>.Shared.Return(sorted);
        }
    }
}

/// <summary>
/// transformers' <c>MinPLogitsWarper</c>: sets to −∞ every token whose probability is below
/// <c>min_p</c> × (the largest probability), always keeping the <c>min_tokens_to_keep</c> most likely tokens.
/// </summary>
public sealed class MinPLogitsWarper : ILogitsProcessor
{
    /// <summary>Creates the warper.</summary>
    /// <param name="minP">min_p in [0, 1].</param>
    /// <param name="minTokensToKeep">Tokens kept whatever their probability, &gt;= 1.</param>
    public MinPLogitsWarper(double minP, int minTokensToKeep = 1)
    {
        if (!(minP >= 0 && minP <= 1))
            throw new ArgumentOutOfRangeException(nameof(minP), minP, "min_p must be in [0, 1]");
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(minTokensToKeep);
        MinP = minP;
        MinTokensToKeep = minTokensToKeep;
    }

    /// <summary>min_p.</summary>
    public double MinP { get; }

    /// <summary>Tokens always kept.</summary>
    public int MinTokensToKeep { get; }

    /// <inheritdoc/>
    public void Process(Span<float> logits, ReadOnlySpan<int> sequence, int promptLength)
    {
        if (logits.IsEmpty) return;
        float max = float.NegativeInfinity;
        foreach (var v in logits)
            if (v > max) max = v;
        if (float.IsNegativeInfinity(max)) return;
        // p_i < min_p · p_max  ⇔  exp(l_i − l_max) < min_p  (the softmax normalizer cancels).
        int k = Math.Min(MinTokensToKeep, logits.Length);
        float protect = k > 1 ? TopKLogitsWarper.KthLargest(logits, k) : max;
        for (int i = 0; i < logits.Length; i++)
        {
            var v = logits[i];
            if (v >= protect) continue;
            if (Math.Exp((double)v - max) < MinP)
                logits[i] = float.NegativeInfinity;
        }
    }
}
