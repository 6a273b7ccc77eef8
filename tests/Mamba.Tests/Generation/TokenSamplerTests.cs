using Mamba.Generation;

namespace Mamba.Tests.Generation;

public class TokenSamplerTests
{
    [Test]
    public void ArgMaxTakesTheFirstOfTies()
    {
        Assert.That(TokenSampler.ArgMax([1f, 3f, 3f, 2f]), Is.EqualTo(1));
        Assert.That(TokenSampler.ArgMax([5f, 5f]), Is.EqualTo(0));
        Assert.That(TokenSampler.ArgMax([-1f, -0.5f, -3f]), Is.EqualTo(1));
    }

    [Test]
    public void ArgMaxNeverPicksNaN()
    {
        Assert.That(TokenSampler.ArgMax([float.NaN, 1f, 2f]), Is.EqualTo(2));
        Assert.That(TokenSampler.ArgMax([2f, float.NaN, 1f]), Is.EqualTo(0));
        Assert.That(TokenSampler.ArgMax([float.NaN, float.NegativeInfinity]), Is.EqualTo(1));
        Assert.That(TokenSampler.ArgMax([float.NegativeInfinity, float.NegativeInfinity]), Is.EqualTo(0));
        Assert.Throws<MambaNumericalException>(() => TokenSampler.ArgMax([float.NaN, float.NaN]));
        Assert.Throws<ArgumentException>(() => TokenSampler.ArgMax([]));
    }

    [Test]
    public void GreedySamplerIsArgMax()
    {
        var sampler = new TokenSampler(new GenerationOptions { DoSample = false, Seed = 1 });
        Assert.That(sampler.DoSample, Is.False);
        Assert.That(sampler.Next([0.1f, 0.7f, 0.7f, -2f]), Is.EqualTo(1));
    }

    private static float[] Logits10 => Enumerable.Range(0, 10).Select(i => 0.3f * i).ToArray();

    private static int[] Draw(int? seed, int count)
    {
        var sampler = new TokenSampler(new GenerationOptions { DoSample = true, Seed = seed });
        var logits = Logits10;
        return Enumerable.Range(0, count).Select(_ => sampler.Next(logits)).ToArray();
    }

    [Test]
    public void SameSeedGivesTheSameDraws()
    {
        var a = Draw(1234, 100);
        var b = Draw(1234, 100);
        Assert.That(b, Is.EqualTo(a));
        Assert.That(a.Distinct().Count(), Is.GreaterThan(3), "the draws should actually vary");
    }

    [Test]
    public void DifferentSeedsGiveDifferentDraws()
    {
        Assert.That(Draw(1, 100), Is.Not.EqualTo(Draw(2, 100)));
    }

    [Test]
    public void SamplingFrequenciesFollowTheSoftmax()
    {
        double[] p = [0.2, 0.3, 0.5];
        var logits = p.Select(v => (float)Math.Log(v) + 3f).ToArray();   // shifted: softmax is unchanged
        var sampler = new TokenSampler(new GenerationOptions { DoSample = true, Seed = 7 });
        var counts = new int[3];
        const int n = 20_000;
        for (int i = 0; i < n; i++) counts[sampler.Next(logits)]++;
        // Standard error sqrt(p(1-p)/n) <= 0.0036; 0.02 is over 5 sigma.
        for (int t = 0; t < 3; t++)
            Assert.That(counts[t] / (double)n, Is.EqualTo(p[t]).Within(0.02), $"token {t}");
    }

    [Test]
    public void SamplingNeverPicksRemovedTokens()
    {
        var sampler = new TokenSampler(new GenerationOptions { DoSample = true, Seed = 3 });
        float[] logits = [float.NegativeInfinity, 0f, float.NaN, 0f, float.NegativeInfinity];
        var seen = new HashSet<int>();
        for (int i = 0; i < 2000; i++) seen.Add(sampler.Next(logits));
        Assert.That(seen, Is.EquivalentTo(new[] { 1, 3 }));
    }

    [Test]
    public void SamplingWithNothingLeftThrows()
    {
        var sampler = new TokenSampler(new GenerationOptions { DoSample = true, Seed = 3 });
        Assert.Throws<MambaNumericalException>(() => sampler.Next([float.NegativeInfinity, float.NaN]));
    }

    [Test]
    public void PipelineThenSamplerWithTopKOneIsDeterministic()
    {
        var options = new GenerationOptions { DoSample = true, TopK = 1, Seed = 99 };
        var pipeline = new LogitsProcessorPipeline(options, [0]);
        var sampler = new TokenSampler(options);
        for (int i = 0; i < 50; i++)
        {
            float[] logits = [0.1f, 2.5f, 2.4f, -1f];
            pipeline.Process(logits, [1], 1);
            Assert.That(sampler.Next(logits), Is.EqualTo(1));
        }
    }
}
