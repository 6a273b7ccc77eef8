using Mamba.Generation;

namespace Mamba.Tests.Generation;

/// <summary>Each processor against hand-computed cases, and the order the pipeline applies them in.</summary>
public class LogitsProcessorTests
{
    private const float NegInf = float.NegativeInfinity;

    /// <summary>Logits whose softmax is exactly <paramref name="probs"/> (up to float rounding): ln p.</summary>
    private static float[] LogProbs(params double[] probs) => probs.Select(p => (float)Math.Log(p)).ToArray();

    [Test]
    public void TemperatureDividesEveryLogit()
    {
        float[] logits = [1, 2, 3, 4];
        new TemperatureLogitsWarper(2.0).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(new float[] { 0.5f, 1f, 1.5f, 2f }));
    }

    [Test]
    public void TemperatureBelowOneSharpens()
    {
        float[] logits = [-1, 0, 3];
        new TemperatureLogitsWarper(0.5).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(new float[] { -2f, 0f, 6f }));
    }

    [Test]
    public void TopKKeepsTheKLargest()
    {
        float[] logits = [1, 2, 3, 4];
        new TopKLogitsWarper(2).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(new[] { NegInf, NegInf, 3f, 4f }));
    }

    [Test]
    public void TopKKeepsTokensTiedWithTheKth()
    {
        float[] logits = [4, 3, 1, 3];
        new TopKLogitsWarper(2).Process(logits, [], 0);
        // The 2nd largest is 3; both 3s survive (transformers removes only scores < the k-th value).
        Assert.That(logits, Is.EqualTo(new[] { 4f, 3f, NegInf, 3f }));
    }

    [Test]
    public void TopKUnorderedInputAndKOfOne()
    {
        float[] logits = [0.5f, -2f, 7f, 6.5f, 7f, -1f];
        new TopKLogitsWarper(1).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(new[] { NegInf, NegInf, 7f, NegInf, 7f, NegInf }));
    }

    [Test]
    public void TopKAtLeastVocabularyIsANoOp()
    {
        float[] logits = [1, -5, 3];
        new TopKLogitsWarper(50).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(new float[] { 1, -5, 3 }));
    }

    [Test]
    public void TopPRemovesTheLowTail()
    {
        // p = [0.3, 0.05, 0.5, 0.15]; ascending 0.05, 0.15, 0.3, 0.5 → cumulative 0.05, 0.20, 0.50, 1.0.
        // top_p 0.9 removes cumulative <= 0.1: only the 0.05 token (index 1).
        var logits = LogProbs(0.3, 0.05, 0.5, 0.15);
        var expected = (float[])logits.Clone();
        expected[1] = NegInf;
        new TopPLogitsWarper(0.9).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(expected));
    }

    [Test]
    public void TopPKeepsTheSmallestSetReachingP()
    {
        // p = [0.1, 0.2, 0.3, 0.4]; cumulative ascending 0.1, 0.3, 0.6, 1.0.
        // top_p 0.6 removes cumulative <= 0.4 → tokens 0 and 1; {0.3, 0.4} sums to 0.7 >= 0.6.
        var logits = LogProbs(0.1, 0.2, 0.3, 0.4);
        var expected = new[] { NegInf, NegInf, logits[2], logits[3] };
        new TopPLogitsWarper(0.6).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(expected));

        // top_p 0.3 removes cumulative <= 0.7 → all but the 0.4 token.
        logits = LogProbs(0.1, 0.2, 0.3, 0.4);
        expected = [NegInf, NegInf, NegInf, logits[3]];
        new TopPLogitsWarper(0.3).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(expected));
    }

    [Test]
    public void TopPHonoursMinTokensToKeep()
    {
        var logits = LogProbs(0.1, 0.2, 0.3, 0.4);
        var expected = new[] { NegInf, NegInf, logits[2], logits[3] };
        new TopPLogitsWarper(0.3, minTokensToKeep: 2).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(expected));
    }

    [Test]
    public void TopPIgnoresTokensAlreadyRemoved()
    {
        // After top-k the -inf tokens carry no mass: p over the rest = [0.25, 0.75]; top_p 0.7 removes cumulative <= 0.3.
        var logits = new[] { NegInf, (float)Math.Log(0.25), NegInf, (float)Math.Log(0.75) };
        new TopPLogitsWarper(0.7).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(new[] { NegInf, NegInf, NegInf, (float)Math.Log(0.75) }));
    }

    [Test]
    public void MinPRemovesTokensBelowTheScaledThreshold()
    {
        // p = [0.5, 0.3, 0.15, 0.05]; min_p 0.2 → threshold 0.2·0.5 = 0.1 → only 0.05 goes.
        var logits = LogProbs(0.5, 0.3, 0.15, 0.05);
        var expected = (float[])logits.Clone();
        expected[3] = NegInf;
        new MinPLogitsWarper(0.2).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(expected));

        // min_p 0.5 → threshold 0.25 → 0.15 and 0.05 go.
        logits = LogProbs(0.5, 0.3, 0.15, 0.05);
        expected = [logits[0], logits[1], NegInf, NegInf];
        new MinPLogitsWarper(0.5).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(expected));
    }

    [Test]
    public void MinPDependsOnProbabilitiesNotRawLogits()
    {
        // Shifting every logit by a constant leaves the probabilities, hence the result, unchanged.
        var logits = LogProbs(0.5, 0.3, 0.15, 0.05).Select(v => v + 10f).ToArray();
        new MinPLogitsWarper(0.5).Process(logits, [], 0);
        Assert.That(logits.Select(float.IsNegativeInfinity), Is.EqualTo(new[] { false, false, true, true }));
    }

    [Test]
    public void MinPOfOneKeepsOnlyTheTop()
    {
        float[] logits = [1, 5, 2];
        new MinPLogitsWarper(1.0).Process(logits, [], 0);
        Assert.That(logits, Is.EqualTo(new[] { NegInf, 5f, NegInf }));
    }

    [Test]
    public void RepetitionPenaltyDividesPositiveMultipliesNegativeOncePerToken()
    {
        float[] logits = [2, -2, 3, 0.5f, -1];
        // Token 0 twice, token 1 twice, token 3 once (prompt = first 3 tokens, which count too).
        int[] sequence = [0, 1, 1, 0, 3];
        new RepetitionPenaltyLogitsProcessor(2.0).Process(logits, sequence, promptLength: 3);
        Assert.That(logits, Is.EqualTo(new[] { 1f, -4f, 3f, 0.25f, -1f }));
    }

    [Test]
    public void RepetitionPenaltyBelowOneRewards()
    {
        float[] logits = [4, -4, 1];
        new RepetitionPenaltyLogitsProcessor(0.5).Process(logits, [0, 1], promptLength: 2);
        Assert.That(logits, Is.EqualTo(new[] { 8f, -2f, 1f }));
    }

    [Test]
    public void RepetitionPenaltyRejectsIdsOutsideTheVocabulary()
    {
        float[] logits = [1, 2];
        Assert.Throws<ArgumentOutOfRangeException>(() => new RepetitionPenaltyLogitsProcessor(1.5).Process(logits, [5], 1));
    }

    [Test]
    public void MinNewTokensMasksEveryEosOnlyWhileTooFewGenerated()
    {
        var processor = new MinNewTokensLengthLogitsProcessor(2, [1, 3]);
        int[] prompt = [7, 8, 9];
        float[] Run(params int[] generated)
        {
            float[] logits = [0, 1, 2, 3, 4];
            processor.Process(logits, prompt.Concat(generated).ToArray(), prompt.Length);
            return logits;
        }
        Assert.That(Run(), Is.EqualTo(new[] { 0f, NegInf, 2f, NegInf, 4f }), "0 generated");
        Assert.That(Run(5), Is.EqualTo(new[] { 0f, NegInf, 2f, NegInf, 4f }), "1 generated");
        Assert.That(Run(5, 6), Is.EqualTo(new[] { 0f, 1f, 2f, 3f, 4f }), "2 generated");
    }

    [Test]
    public void MinLengthCountsThePrompt()
    {
        var processor = new MinLengthLogitsProcessor(4, [0]);
        float[] logits = [5, 1];
        processor.Process(logits, [2, 2, 2], 2);   // length 3 < 4
        Assert.That(logits, Is.EqualTo(new[] { NegInf, 1f }));
        logits = [5, 1];
        processor.Process(logits, [2, 2, 2, 2], 2);   // length 4
        Assert.That(logits, Is.EqualTo(new[] { 5f, 1f }));
    }

    [Test]
    public void PipelineAppliesTransformersOrder()
    {
        var options = new GenerationOptions
        {
            DoSample = true, Temperature = 0.7, TopK = 10, TopP = 0.9, MinP = 0.05, RepetitionPenalty = 1.2, MinNewTokens = 3,
        };
        var pipeline = new LogitsProcessorPipeline(options, [0]);
        Assert.That(pipeline.Processors.Select(p => p.GetType()), Is.EqualTo(new[]
        {
            typeof(RepetitionPenaltyLogitsProcessor), typeof(MinNewTokensLengthLogitsProcessor), typeof(TemperatureLogitsWarper),
            typeof(TopKLogitsWarper), typeof(TopPLogitsWarper), typeof(MinPLogitsWarper),
        }));
    }

    [Test]
    public void PipelineAppliesTemperatureBeforeTopP()
    {
        // Temperature first (transformers): [0,1,2]/0.5 = [0,2,4] → p ≈ [0.0159, 0.1173, 0.8668];
        // cumulative 0.0159, 0.1332, 1 → top_p 0.8 removes <= 0.2: tokens 0 and 1.
        // (Top-p first would see p ≈ [0.090, 0.245, 0.665], cumulative 0.090, 0.335 → remove only token 0.)
        var options = new GenerationOptions { DoSample = true, Temperature = 0.5, TopK = 0, TopP = 0.8 };
        float[] logits = [0, 1, 2];
        new LogitsProcessorPipeline(options, [99]).Process(logits, [0], 1);
        Assert.That(logits, Is.EqualTo(new[] { NegInf, NegInf, 4f }));
    }

    [Test]
    public void PipelineAppliesTemperatureBeforeMinP()
    {
        // p = [0.6, 0.2, 0.2]. Temperature 2 first (transformers): p ∝ sqrt(p) → ratio to the top sqrt(0.2/0.6) = 0.577
        // >= min_p 0.5, so every token stays. Min-p first would remove both 0.2 tokens (0.2/0.6 = 0.333 < 0.5).
        var options = new GenerationOptions { DoSample = true, Temperature = 2.0, TopK = 0, MinP = 0.5 };
        var logits = LogProbs(0.6, 0.2, 0.2);
        new LogitsProcessorPipeline(options, [99]).Process(logits, [0], 1);
        Assert.That(logits.Count(float.IsNegativeInfinity), Is.Zero);
    }

    [Test]
    public void PipelineAppliesRepetitionPenaltyBeforeTopK()
    {
        // Penalty 4 turns token 2's 3.0 into 0.75, so top-2 keeps tokens 0 (2.0) and 1 (1.0) instead of 2 and 0.
        var options = new GenerationOptions { DoSample = true, TopK = 2, RepetitionPenalty = 4.0 };
        float[] logits = [2, 1, 3];
        new LogitsProcessorPipeline(options, [99]).Process(logits, [2], 1);
        Assert.That(logits, Is.EqualTo(new[] { 2f, 1f, NegInf }));
    }

    [Test]
    public void GreedyPipelineSkipsTheSamplingWarpers()
    {
        var options = new GenerationOptions { DoSample = false, Temperature = 0.5, TopK = 1, TopP = 0.1, MinP = 0.9 };
        var pipeline = new LogitsProcessorPipeline(options, [0]);
        Assert.That(pipeline.Processors, Is.Empty);
        float[] logits = [1, 2, 3];
        pipeline.Process(logits, [1], 1);
        Assert.That(logits, Is.EqualTo(new float[] { 1, 2, 3 }));
    }

    [Test]
    public void PipelineMinNewTokensUsesTheOptionsEosOverTheModels()
    {
        var options = new GenerationOptions { MinNewTokens = 1, EosTokenIds = [2] };
        var pipeline = new LogitsProcessorPipeline(options, [0]);
        Assert.That(pipeline.EosTokenIds, Is.EqualTo(new[] { 2 }));
        float[] logits = [1, 1, 1];
        pipeline.Process(logits, [1, 1], 2);
        Assert.That(logits, Is.EqualTo(new[] { 1f, 1f, NegInf }));
    }

    [Test]
    public void PipelineMinNewTokensReplacesMinLength()
    {
        // transformers sets min_length = prompt + min_new_tokens when min_new_tokens is given: min_length 50 is ignored.
        var options = new GenerationOptions { MinNewTokens = 1, MinLength = 50 };
        var pipeline = new LogitsProcessorPipeline(options, [0]);
        float[] logits = [1, 1];
        pipeline.Process(logits, [1, 1, 1], 2);   // one token generated: no mask
        Assert.That(logits, Is.EqualTo(new[] { 1f, 1f }));

        var byLength = new LogitsProcessorPipeline(new GenerationOptions { MinLength = 4 }, [0]);
        logits = [1, 1];
        byLength.Process(logits, [1, 1, 1], 2);
        Assert.That(logits, Is.EqualTo(new[] { NegInf, 1f }));
    }

    [Test]
    public void PipelineWithoutEosLeavesMinLengthOut()
    {
        var pipeline = new LogitsProcessorPipeline(new GenerationOptions { MinNewTokens = 5 }, null);
        Assert.That(pipeline.Processors, Is.Empty);
    }

    [Test]
    public void PipelineRejectsABadPromptLength()
    {
        var pipeline = new LogitsProcessorPipeline(new GenerationOptions(), [0]);
        Assert.Throws<ArgumentOutOfRangeException>(() => pipeline.Process(new float[3], [1, 2], 3));
    }
}
