namespace Mamba.Training;

/// <summary>
/// The learning rate of a step, as transformers' schedulers give it (LambdaLR on the 0-based step index): linear
/// warm-up from 0 over <c>warmup</c> steps, then linear or cosine decay to 0 at <c>total</c>, or constant.
/// </summary>
internal static class LearningRateSchedule
{
    /// <summary>The rate of step <paramref name="step"/> (0-based) of <paramref name="total"/>.</summary>
    public static double At(LearningRateSchedulerType type, double peak, int step, int warmup, int total)
    {
        if (step < warmup) return peak * step / Math.Max(1, warmup);
        if (type == LearningRateSchedulerType.Constant) return peak;
        double progress = (double)(step - warmup) / Math.Max(1, total - warmup);
        return type switch
        {
            LearningRateSchedulerType.Linear => peak * Math.Max(0.0, 1.0 - progress),
            LearningRateSchedulerType.Cosine => peak * Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * progress))),
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown schedule"),
        };
    }
}

/// <summary>
/// The seeded order of the training sequences: epoch e visits them in a Fisher–Yates permutation drawn from a
/// SplitMix64 stream seeded with (seed, e). Platform-independent, and its whole state is (seed, epoch), so a
/// checkpoint stores the RNG state as two integers.
/// </summary>
internal static class DataOrder
{
    /// <summary>The permutation of <paramref name="count"/> positions for <paramref name="epoch"/>.</summary>
    public static int[] Permutation(int count, int seed, int epoch)
    {
        var order = new int[count];
        for (int i = 0; i < count; i++) order[i] = i;
        ulong state = ((ulong)(uint)seed << 32) ^ (uint)epoch ^ 0x9E3779B97F4A7C15UL;
        for (int i = count - 1; i > 0; i--)
        {
            int j = (int)(Next(ref state) % (ulong)(i + 1));
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    private static ulong Next(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
