using System.Numerics.Tensors;

namespace Mamba.Compute.Cpu;

/// <summary>
/// Backward of y = w ⊙ x·r, r = (mean(x²) + ε)^(−1/2) per row (mamba-spec §12.2): with q = g y ⊙ w,
/// g x = r·q − (r³/d)·x·Σ q·x (added to the residual stream's gradient), g w += Σ_rows g y ⊙ x·r. Rows in parallel for
/// g x; g w in a second pass over column blocks, each summing the rows in order (the same bits for any thread count).
/// </summary>
internal static class CpuRmsNormBackward
{
    private const int ColumnBlock = 64;

    /// <param name="x">[M, d], the norm's input</param>
    /// <param name="gradOutput">[M, d]</param>
    /// <param name="gradInput">[M, d], added to</param>
    /// <param name="gradWeight">[d], added to</param>
    public static void Run(float[] x, float[] weight, float epsilon, float[] gradOutput, float[] gradInput, float[] gradWeight,
        int rows, int width, ParallelOptions parallel)
    {
        var scales = new float[rows];
        void Row(int m)
        {
            var xr = x.AsSpan(m * width, width);
            var gy = gradOutput.AsSpan(m * width, width);
            var gx = gradInput.AsSpan(m * width, width);
            // r exactly as the forward computes it.
            float r = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares<float>(xr) / width + epsilon);
            scales[m] = r;
            double dot = 0;
            for (int j = 0; j < width; j++) dot += (double)gy[j] * weight[j] * xr[j];
            float coefficient = (float)((double)r * r * r / width * dot);
            for (int j = 0; j < width; j++) gx[j] += r * (gy[j] * weight[j]) - coefficient * xr[j];
        }
        bool small = (long)rows * width < 1 << 15;
        if (small) for (int m = 0; m < rows; m++) Row(m);
        else Parallel.For(0, rows, parallel, Row);

        int blocks = (width + ColumnBlock - 1) / ColumnBlock;
        void Columns(int block)
        {
            int j0 = block * ColumnBlock, j1 = Math.Min(width, j0 + ColumnBlock);
            Span<float> acc = stackalloc float[ColumnBlock];
            acc.Clear();
            for (int m = 0; m < rows; m++)
            {
                float r = scales[m];
                int at = m * width;
                for (int j = j0; j < j1; j++) acc[j - j0] += gradOutput[at + j] * (x[at + j] * r);
            }
            for (int j = j0; j < j1; j++) gradWeight[j] += acc[j - j0];
        }
        if (small) for (int b = 0; b < blocks; b++) Columns(b);
        else Parallel.For(0, blocks, parallel, Columns);
    }
}
