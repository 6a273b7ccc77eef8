using System.Buffers;
using System.Numerics.Tensors;

namespace Mamba.Compute.Cpu;

/// <summary>
/// lm_head + cross-entropy, forward and backward fused, in chunks of <see cref="ChunkRows"/> rows so that the [M, V] logits
/// never exist at once: per chunk, logits = hidden·Wᵀ (the forward GEMM), g logits = (softmax − onehot)·scale in place
/// (zero for ignored rows), g hidden = g logits·W, g W += g logitsᵀ·hidden. Row losses are summed in float64 in row order.
/// </summary>
internal static class CpuCrossEntropyBackward
{
    /// <summary>Rows per chunk: 256 × V floats of logits (≈ 51 MB for V = 50280) plus their transpose.</summary>
    public const int ChunkRows = 256;

    /// <param name="hidden">[M, d]</param>
    /// <param name="weight">[V, d]</param>
    /// <param name="gradHidden">[M, d], overwritten</param>
    /// <param name="gradWeight">[V, d], added to; empty: a frozen weight, not computed</param>
    public static double Run(ReadOnlySpan<float> hidden, ReadOnlySpan<float> weight, ReadOnlySpan<int> targets, int ignoreIndex, float gradScale,
        Span<float> gradHidden, Span<float> gradWeight, int rows, int vocab, int width, ParallelOptions parallel, out int count)
    {
        count = 0;
        for (int m = 0; m < rows; m++)
        {
            int target = targets[m];
            if (target == ignoreIndex) continue;
            if ((uint)target >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(targets), target, $"target at row {m} is outside [0, {vocab})");
            count++;
        }
        gradHidden[..(rows * width)].Clear();
        if (count == 0 || width == 0) return 0;
        double sum = 0;
        int chunk = Math.Min(ChunkRows, rows);
        var logits = ArrayPool<float>.Shared.Rent(chunk * vocab);
        var weightT = ArrayPool<float>.Shared.Rent(vocab * width);
        var losses = new double[chunk];
        try
        {
            CpuLinearBackward.Transpose(weight, vocab, width, width, weightT, parallel);
            var targetArray = targets.ToArray();
            for (int m0 = 0; m0 < rows; m0 += chunk)
            {
                int c = Math.Min(chunk, rows - m0);
                bool any = false;
                for (int i = 0; i < c; i++) any |= targetArray[m0 + i] != ignoreIndex;
                if (!any) continue;
                var l = logits.AsSpan(0, c * vocab);
                var h = hidden.Slice(m0 * width, c * width);
                CpuGemm.Linear(h, width, weight[..(vocab * width)], default, l, c, vocab, width, parallel);
                void Row(int i)
                {
                    var row = logits.AsSpan(i * vocab, vocab);
                    int target = targetArray[m0 + i];
                    if (target == ignoreIndex)
                    {
                        row.Clear();
                        losses[i] = 0;
                        return;
                    }
                    double max = TensorPrimitives.Max<float>(row);
                    double total = 0;
                    foreach (var v in row) total += Math.Exp(v - max);
                    double logTotal = Math.Log(total);
                    double shift = max + logTotal, targetLogit = row[target];
                    losses[i] = shift - targetLogit;
                    for (int j = 0; j < vocab; j++) row[j] = (float)(Math.Exp(row[j] - shift) * gradScale);
                    row[target] = (float)((Math.Exp(targetLogit - shift) - 1) * gradScale);
                }
                if ((long)c * vocab < 1 << 16) for (int i = 0; i < c; i++) Row(i);
                else Parallel.For(0, c, parallel, Row);
                for (int i = 0; i < c; i++) sum += losses[i];
                CpuLinearBackward.InputGradientTransposed(l, weightT, gradHidden.Slice(m0 * width, c * width), accumulate: false, c, vocab, width, parallel);
                if (!gradWeight.IsEmpty) CpuLinearBackward.AddWeightGradient(l, h, width, gradWeight, c, vocab, width, parallel);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(logits);
            ArrayPool<float>.Shared.Return(weightT);
        }
        return sum;
    }
}
