using System.Buffers;

namespace Mamba.Compute.Cpu;

/// <summary>Linear and Embedding on weights stored as int8 or bf16 (<see cref="CpuPackedWeight"/>).</summary>
internal sealed partial class CpuBackend
{
    /// <summary>
    /// Rows of x from which a packed-weight Linear widens the weight to float32 in tiles and runs the float32 GEMM
    /// (<see cref="CpuGemm"/>'s packed kernel from 32 rows) instead of the widening GEMV. Below it (decode, small
    /// batches) the GEMV streams the narrow weight once for all rows.
    /// </summary>
    internal const int PackedGemmMinRows = CpuGemm.PackedMinRows;

    /// <summary>
    /// Floats of widened weight per tile of the GEMM path (16 MiB): each 130m block weight fits in one tile, so it is
    /// widened once and the GEMM packs x once and writes y directly; larger weights (370m's in_proj and up, an lm_head
    /// that keeps many rows) take several tiles, each a GEMM into a scratch copied to its columns of y. 2 MiB tiles
    /// measured no faster on the 2-core VM and repack x per tile.
    /// </summary>
    internal const int WidenTileFloats = 1 << 22;

    private void LinearPacked(CpuTensor xt, CpuPackedWeight w, DeviceTensor? bias, CpuTensor yt)
    {
        int n = w.Rows, k = w.Columns;
        if (xt.ElementCount % k != 0)
            throw new ArgumentException($"x {xt.ShapeText} has no rows of width {k} for weight {w.ShapeText}", "x");
        int m = (int)(xt.ElementCount / k);
        Expect(yt, "y", m, n);
        ReadOnlySpan<float> b = default;
        if (bias is not null)
        {
            var bt = Cpu(bias, nameof(bias));
            if (bt.ElementCount != n) throw new ArgumentException($"bias {bt.ShapeText} does not match {n} outputs", nameof(bias));
            b = bt.Data;
        }
        if (m < PackedGemmMinRows)
        {
            if (w.Format == CpuWeightFormat.Int8) CpuInt8Linear.Linear(xt.Data, m, w.Int8!, b, yt.Data, parallel: Threads > 1, _parallel);
            else CpuInt8Linear.LinearBf16(xt.Data, m, w.Bf16!, n, k, b, yt.Data, parallel: Threads > 1, _parallel);
            return;
        }
        LinearWidened(xt.Data, m, w, b, yt.Data);
    }

    /// <summary>
    /// The prefill path: the weight widened to float32 a tile of output rows at a time (in parallel), each tile a
    /// float32 GEMM (into a scratch [m, tile] copied to its columns of y when the weight takes several tiles).
    /// </summary>
    private void LinearWidened(float[] x, int m, CpuPackedWeight w, ReadOnlySpan<float> bias, float[] y)
    {
        int n = w.Rows, k = w.Columns;
        int tile = Math.Max(32, WidenTileFloats / Math.Max(1, k) / 32 * 32);
        if (tile >= n) tile = n;
        var wTile = ArrayPool<float>.Shared.Rent(tile * k);
        var yTile = tile == n ? null : ArrayPool<float>.Shared.Rent(m * tile);
        try
        {
            for (int j0 = 0; j0 < n; j0 += tile)
            {
                int rows = Math.Min(tile, n - j0);
                WidenParallel(w, j0, rows, wTile);
                var bt = bias.IsEmpty ? default : bias.Slice(j0, rows);
                if (yTile is null)
                {
                    CpuGemm.Linear(x, k, wTile, bt, y, m, rows, k, _parallel);
                    continue;
                }
                CpuGemm.Linear(x, k, wTile, bt, yTile, m, rows, k, _parallel);
                for (int i = 0; i < m; i++) Array.Copy(yTile, (long)i * rows, y, (long)i * n + j0, rows);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(wTile);
            if (yTile is not null) ArrayPool<float>.Shared.Return(yTile);
        }
    }

    private void WidenParallel(CpuPackedWeight w, int row0, int rows, float[] destination)
    {
        int k = w.Columns;
        int parts = Math.Min(Threads, Math.Max(1, rows / 64));
        if (parts <= 1)
        {
            w.Widen(row0, rows, destination);
            return;
        }
        int per = (rows + parts - 1) / parts;
        Parallel.For(0, parts, _parallel, p =>
        {
            int r0 = p * per, count = Math.Min(per, rows - r0);
            if (count > 0) w.Widen(row0 + r0, count, destination.AsSpan(r0 * k, count * k));
        });
    }

    private static void EmbeddingPacked(CpuPackedWeight table, ReadOnlySpan<int> ids, CpuTensor output)
    {
        int vocab = table.Rows, width = table.Columns;
        Expect(output, nameof(output), ids.Length, width);
        for (int m = 0; m < ids.Length; m++)
        {
            int id = ids[m];
            if ((uint)id >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"token id at position {m} is outside the vocabulary [0, {vocab})");
            table.Widen(id, 1, output.Data.AsSpan(m * width, width));
        }
    }
}
