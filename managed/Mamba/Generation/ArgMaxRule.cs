namespace Mamba.Generation;

/// <summary>
/// The one argmax rule of the library. Every greedy choice follows it: <see cref="TokenSampler.ArgMax"/>, the CPU
/// backend's <c>ArgMax</c>, and on CUDA the argmax kernel and the fused decode kernel (native code keeps the same rule).
/// </summary>
/// <remarks>
/// The index of the largest value; NaN never wins; ties go to the lowest index (as <c>torch.argmax</c>); −∞ is a
/// value, so a row of −∞ gives 0; a row with no non-NaN value (or no value at all) gives <see cref="NoValue"/>, which
/// generation reports with the same error whichever backend produced it.
/// </remarks>
public static class ArgMaxRule
{
    /// <summary>What <see cref="Of"/> returns for a row with no non-NaN value.</summary>
    public const int NoValue = -1;

    /// <summary>The index the rule chooses in <paramref name="values"/>, or <see cref="NoValue"/> when every value is NaN.</summary>
    /// <param name="values">One row of scores.</param>
    public static int Of(ReadOnlySpan<float> values)
    {
        int best = NoValue;
        float bestValue = 0f;
        for (int i = 0; i < values.Length; i++)
        {
            float v = values[i];
            // Strictly greater keeps the first of equal values; the first non-NaN value is taken whatever it is (−∞ too).
            if (!float.IsNaN(v) && (best < 0 || v > bestValue))
            {
                best = i;
                bestValue = v;
            }
        }
        return best;
    }

    /// <summary>The error a generation raises when the rule finds nothing to choose (<see cref="NoValue"/>).</summary>
    internal static MambaNumericalException NoUsableScores() => new(NoUsableScoresMessage);

    /// <summary>The message of <see cref="NoUsableScores"/>.</summary>
    internal const string NoUsableScoresMessage =
        "every logit is NaN: the model produced no usable scores (the forward pass overflowed; check the weights and the activation dtype)";
}
