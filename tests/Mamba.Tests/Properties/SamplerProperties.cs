using CsCheck;
using Mamba.Generation;

namespace Mamba.Tests.Properties;

/// <summary>
/// Property-based tests (CsCheck) of the token sampler and the logits processors on generated logit rows: what
/// greedy picks, that sampling never picks an excluded token, seeded determinism, and what each filter keeps.
/// A failure prints the shrunk input and the CsCheck seed that reproduces it.
/// </summary>
public class SamplerProperties
{
    private const int Iterations = 3000;

    /// <summary>Logits in a realistic range, with many exact ties and some masked (−∞) entries.</summary>
    private static readonly Gen<float> Logit = Gen.Frequency(
        (5, Gen.Float[-20f, 20f]),
        (3, Gen.Int[-3, 3].Select(i => (float)i)),
        (1, Gen.Const(float.NegativeInfinity)));

    /// <summary>A row with at least one finite logit.</summary>
    private static readonly Gen<float[]> Row = Logit.Array[1, 80].Where(r => r.Any(float.IsFinite));

    /// <summary>A row that may also hold NaN and +∞ (what an overflowing forward pass gives).</summary>
    private static readonly Gen<float[]> WildRow = Gen.Frequency(
        (8, Logit), (1, Gen.Const(float.NaN)), (1, Gen.Const(float.PositiveInfinity))).Array[1, 40];

    private static readonly Gen<int> SeedGen = Gen.Int;

    private static string Show(float[] row) => "[" + string.Join(", ", row.Select(v => v.ToString("R"))) + "]";

    private static bool Masked(float v) => float.IsNegativeInfinity(v);

    // ---------------------------------------------------------------- greedy

    [Test]
    public void GreedyPicksTheLargestLogitAndTheLowestIdOnTies() =>
        WildRow.Where(r => r.Any(v => !float.IsNaN(v))).Sample(row =>
        {
            int i = TokenSampler.ArgMax(row);
            int viaSampler = new TokenSampler(new GenerationOptions { DoSample = false }).Next(row);
            if (viaSampler != i || float.IsNaN(row[i])) return false;
            for (int j = 0; j < row.Length; j++)
            {
                if (float.IsNaN(row[j])) continue;                 // NaN never wins
                if (row[j] > row[i]) return false;                 // nothing is larger
                if (j < i && row[j] == row[i]) return false;       // no earlier id ties with it
            }
            return true;
        }, iter: Iterations, print: Show);

    // ---------------------------------------------------------------- sampling

    [Test]
    public void SamplingNeverPicksAMaskedOrNaNToken() =>
        Gen.Select(WildRow.Where(r => r.Any(v => !float.IsNaN(v) && !Masked(v))), SeedGen).Sample((row, seed) =>
        {
            var random = new Random(seed);
            float max = row.Where(v => !float.IsNaN(v)).Max();
            for (int draw = 0; draw < 20; draw++)
            {
                int i = TokenSampler.Sample(row, random);
                if (float.IsNaN(row[i]) || Masked(row[i])) return false;
                // With a +∞ entry all the probability is on the +∞ entries.
                if (float.IsPositiveInfinity(max) && !float.IsPositiveInfinity(row[i])) return false;
                // Otherwise the token has non-zero probability: exp(l - max) > 0 for these logit ranges.
                if (!float.IsPositiveInfinity(max) && !(Math.Exp((double)row[i] - max) > 0)) return false;
            }
            return true;
        }, iter: Iterations, print: t => Show(t.Item1) + " seed " + t.Item2);

    [Test]
    public void SamplingARowOfOnlyMaskedOrNaNTokensThrows() =>
        Gen.Frequency((1, Gen.Const(float.NaN)), (1, Gen.Const(float.NegativeInfinity))).Array[1, 20].Sample(row =>
        {
            try { TokenSampler.Sample(row, new Random(1)); return false; }
            catch (MambaNumericalException) { return true; }
        }, iter: 200, print: Show);

    [Test]
    public void TheSameSeedGivesTheSameTokens() =>
        Gen.Select(Row.Array[1, 30], SeedGen, Gen.Double[0.1, 3.0]).Sample((rows, seed, temperature) =>
        {
            var options = new GenerationOptions { DoSample = true, Seed = seed, Temperature = temperature, TopK = 0 };
            var a = new TokenSampler(options);
            var b = new TokenSampler(options);
            return rows.All(row => a.Next(row) == b.Next(row));
        }, iter: Iterations / 3, print: t => $"{t.Item1.Length} rows, seed {t.Item2}, temperature {t.Item3}");

    [Test]
    public void SampledTokenSurvivesEveryFilterOfThePipeline() =>
        // A random configuration of the whole pipeline (repetition penalty, min length, temperature, top-k, top-p,
        // min-p): the sampled token is never one the processors masked, nor one masked on input, and at least one
        // token always survives when the input had one.
        Gen.Select(Row, Gen.Select(Gen.Double[0.05, 4.0], Gen.Int[0, 12], Gen.Double[0.01, 1.0], Gen.Double[0.0, 1.0].Array[0, 1]),
                Gen.Select(Gen.Double[0.5, 2.5], Gen.Int[0, 1000].Array[0, 10], SeedGen))
            .Sample((row, sampling, history) =>
            {
                var (temperature, topK, topP, minP) = sampling;
                var (penalty, historyRaw, seed) = history;
                var sequence = historyRaw.Select(t => t % row.Length).ToArray();
                var options = new GenerationOptions
                {
                    DoSample = true, Seed = seed, Temperature = temperature, TopK = topK, TopP = topP,
                    MinP = minP.Length == 0 ? null : minP[0], RepetitionPenalty = penalty,
                    EosTokenIds = [0], MinNewTokens = 1,   // masks id 0 on the first step
                };
                var pipeline = new LogitsProcessorPipeline(options);
                var processed = (float[])row.Clone();
                pipeline.Process(processed, sequence, sequence.Length);
                // Input masks stay masked; id 0 is masked too (no token generated yet).
                for (int i = 0; i < row.Length; i++)
                    if (Masked(row[i]) && !Masked(processed[i])) return false;
                if (!Masked(processed[0])) return false;
                bool anyCandidate = row.Skip(1).Any(float.IsFinite);
                if (!anyCandidate) return true;   // only id 0 was finite: nothing can be sampled, as intended
                if (!processed.Any(v => !Masked(v))) return false;
                var sampler = new TokenSampler(options);
                for (int draw = 0; draw < 10; draw++)
                {
                    int picked = sampler.Next(processed);
                    if (Masked(processed[picked]) || Masked(row[picked]) || picked == 0) return false;
                }
                return true;
            }, iter: Iterations, print: t => $"{Show(t.Item1)} {t.Item2} penalty {t.Item3.Item1} history [{string.Join(",", t.Item3.Item2)}]");

    // ---------------------------------------------------------------- filters

    [Test]
    public void TopKKeepsTheLargestAndAtLeastKTokens() =>
        Gen.Select(Row, Gen.Int[1, 20]).Sample((row, k) =>
        {
            var after = (float[])row.Clone();
            new TopKLogitsWarper(k).Process(after, [], 0);
            int finiteBefore = row.Count(v => !Masked(v));
            int kept = after.Count(v => !Masked(v));
            if (kept < Math.Min(k, finiteBefore)) return false;
            // Kept values are untouched; every removed value is below every kept one (ties with the k-th are kept),
            // so more than k survive only through ties.
            float minKept = float.PositiveInfinity;
            for (int i = 0; i < row.Length; i++)
                if (!Masked(after[i])) { if (after[i] != row[i]) return false; minKept = Math.Min(minKept, after[i]); }
            for (int i = 0; i < row.Length; i++)
                if (Masked(after[i]) && !Masked(row[i]) && row[i] >= minKept) return false;
            if (kept > k && row.Count(v => !Masked(v) && v > minKept) >= k) return false;
            return true;
        }, iter: Iterations, print: t => Show(t.Item1) + " k " + t.Item2);

    [Test]
    public void TopPKeepsTheSmallestMostLikelySetReachingP() =>
        Gen.Select(Row, Gen.Double[0.01, 1.0]).Sample((row, p) =>
        {
            var after = (float[])row.Clone();
            new TopPLogitsWarper(p).Process(after, [], 0);
            var probability = Softmax(row);
            var kept = Enumerable.Range(0, row.Length).Where(i => !Masked(after[i])).ToArray();
            if (kept.Length == 0) return false;
            if (kept.Any(i => after[i] != row[i])) return false;                         // kept values untouched
            if (kept.Any(i => Masked(row[i]))) return false;                             // nothing unmasked
            float minKept = kept.Min(i => row[i]);
            // Monotone: a token more likely than a kept one is kept.
            for (int i = 0; i < row.Length; i++)
                if (Masked(after[i]) && row[i] > minKept) return false;
            double mass = kept.Sum(i => probability[i]);
            if (mass < p - 1e-9) return false;                                           // reaches p
            if (kept.Length > 1 && mass - kept.Min(i => probability[i]) >= p + 1e-9) return false;   // and is smallest
            return true;
        }, iter: Iterations, print: t => Show(t.Item1) + " p " + t.Item2);

    [Test]
    public void MinPKeepsExactlyTheTokensAtLeastMinPTimesAsLikelyAsTheBest() =>
        Gen.Select(Row, Gen.Double[0.0, 1.0]).Sample((row, minP) =>
        {
            var after = (float[])row.Clone();
            new MinPLogitsWarper(minP).Process(after, [], 0);
            var probability = Softmax(row);
            double best = probability.Max();
            for (int i = 0; i < row.Length; i++)
            {
                bool kept = !Masked(after[i]);
                if (kept && after[i] != row[i]) return false;
                if (Masked(row[i])) { if (kept) return false; continue; }
                // p_i >= min_p * p_max, computed as exp(l_i - l_max) >= min_p; the most likely token always stays.
                bool shouldKeep = probability[i] == best || Math.Exp((double)row[i] - row.Max()) >= minP;
                if (kept != shouldKeep) return false;
            }
            return true;
        }, iter: Iterations, print: t => Show(t.Item1) + " min_p " + t.Item2);

    [Test]
    public void TemperatureKeepsTheOrderAndTheMask() =>
        Gen.Select(Row, Gen.Double[0.01, 100.0], SeedGen).Sample((row, t, seed) =>
        {
            var after = (float[])row.Clone();
            new TemperatureLogitsWarper(t).Process(after, [], 0);
            for (int i = 0; i < row.Length; i++)
            {
                if (Masked(row[i]) != Masked(after[i])) return false;
                for (int j = 0; j < row.Length; j++)
                    if (row[i] < row[j] && !(after[i] <= after[j])) return false;   // order kept (rounding may make ties)
            }
            // The greedy pick after temperature is a largest logit of the original row, unless dividing rounded a
            // larger logit to the same value (then the lower id wins the tie).
            int g = TokenSampler.ArgMax(after);
            for (int j = 0; j < row.Length; j++)
                if (row[j] > row[g] && after[j] != after[g]) return false;
            // Sampling after temperature never picks a masked token.
            var random = new Random(seed);
            for (int draw = 0; draw < 10; draw++)
                if (Masked(row[TokenSampler.Sample(after, random)])) return false;
            return true;
        }, iter: Iterations, print: t => Show(t.Item1) + " temperature " + t.Item2);

    [Test]
    public void RepetitionPenaltyMovesOnlySeenTokensAndOnlyTowardsZeroOrAway() =>
        Gen.Select(Row, Gen.Double[0.2, 5.0], Gen.Int[0, 1000].Array[0, 12]).Sample((row, penalty, raw) =>
        {
            var sequence = raw.Select(t => t % row.Length).ToArray();
            var after = (float[])row.Clone();
            new RepetitionPenaltyLogitsProcessor(penalty).Process(after, sequence, sequence.Length);
            var seen = sequence.ToHashSet();
            for (int i = 0; i < row.Length; i++)
            {
                if (!seen.Contains(i)) { if (after[i] != row[i]) return false; continue; }
                // penalty >= 1 never raises a seen token's logit; penalty <= 1 never lowers it.
                if (penalty >= 1 && after[i] > row[i]) return false;
                if (penalty <= 1 && after[i] < row[i]) return false;
                if (Math.Sign(after[i]) * Math.Sign(row[i]) < 0) return false;   // the sign never flips (a tiny value may underflow to 0)
            }
            // Each id is penalized once however often it occurs.
            var once = (float[])row.Clone();
            new RepetitionPenaltyLogitsProcessor(penalty).Process(once, seen.ToArray(), seen.Count);
            return once.SequenceEqual(after);
        }, iter: Iterations, print: t => $"{Show(t.Item1)} penalty {t.Item2} seq [{string.Join(",", t.Item3)}]");

    /// <summary>softmax in float64 over the finite entries (−∞ has probability 0).</summary>
    private static double[] Softmax(float[] row)
    {
        double max = row.Where(float.IsFinite).Max();
        var e = row.Select(v => Masked(v) ? 0.0 : Math.Exp(v - max)).ToArray();
        double total = e.Sum();
        return e.Select(x => x / total).ToArray();
    }
}
