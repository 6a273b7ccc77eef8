using Mamba.Model;

namespace Mamba.Tests.Generation;

/// <summary>Compaction's primitive: <see cref="MambaCache.SelectRows"/> gathers the chosen rows' states on the backend.</summary>
public class CacheCompactionTests
{
    [Test]
    public void SelectRowsGathersTheStatesOfTheChosenRows()
    {
        using var lm = MambaForCausalLM.FromPretrained(Path.Combine(TestFixtures.Model("tiny"), "model"));
        var ids = new int[3, 6];
        var rng = new Random(5);
        for (int b = 0; b < 3; b++)
            for (int t = 0; t < 6; t++) ids[b, t] = rng.Next(lm.Config.VocabSize);
        using var cache = lm.CreateCache(3);
        lm.Forward(ids, new ForwardOptions { Cache = cache, LogitsToKeep = 1 });
        using var picked = cache.SelectRows([2, 0]);
        Assert.That(picked.BatchSize, Is.EqualTo(2));
        Assert.That(picked.HasPreviousState, Is.True);
        Assert.That(picked.SeenTokens, Is.EqualTo(cache.SeenTokens));
        for (int layer = 0; layer < lm.Config.NumHiddenLayers; layer++)
            foreach (var (whole, part) in new[] { (cache.GetConvState(layer), picked.GetConvState(layer)), (cache.GetSsmState(layer), picked.GetSsmState(layer)) })
            {
                int width = whole.Data.Length / 3;
                Assert.That(part.Shape, Is.EqualTo(new[] { 2, whole.Shape[1], whole.Shape[2] }));
                Assert.That(part.Data.AsSpan(0, width).ToArray(), Is.EqualTo(whole.Data.AsSpan(2 * width, width).ToArray()), $"layer {layer}, row 2");
                Assert.That(part.Data.AsSpan(width, width).ToArray(), Is.EqualTo(whole.Data.AsSpan(0, width).ToArray()), $"layer {layer}, row 0");
            }
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.SelectRows([3]));
    }
}
