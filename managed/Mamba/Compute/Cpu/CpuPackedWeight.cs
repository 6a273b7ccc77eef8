using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Mamba.IO;

namespace Mamba.Compute.Cpu;

/// <summary>
/// A weight matrix [N, K] of the CPU backend stored in a narrow format (<see cref="CpuWeightFormat.Int8"/>: per-row
/// int8, <see cref="CpuWeightFormat.BF16"/>: bfloat16). Only the ops that read weights accept it: Linear (the GEMV /
/// GEMM), Embedding (rows widened on lookup), Download (the float32 values it stands for) and Copy into it (a float32
/// source is converted again: LoRA merge). Its <see cref="DeviceTensor.DType"/> is F32, the dtype it computes and
/// downloads in; <see cref="Format"/> says how it is stored.
/// </summary>
internal sealed class CpuPackedWeight : DeviceTensor
{
    private CpuPackedWeight(CpuWeightFormat format, int[] shape) : base(DType.F32, shape)
    {
        if (shape.Length != 2)
            throw new ArgumentException($"a packed CPU weight is a matrix [N, K], got [{string.Join(", ", shape)}]", nameof(shape));
        Format = format;
    }

    /// <summary>Packs <paramref name="data"/> [N, K] (row-major) in <paramref name="format"/> (Int8 or BF16); the array is only read.</summary>
    public static CpuPackedWeight Create(float[] data, CpuWeightFormat format, int[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        var w = new CpuPackedWeight(format, shape);
        if (data.Length != w.ElementCount)
            throw new ArgumentException($"{data.Length} values for shape {w.ShapeText}", nameof(data));
        w.Store(data, data);
        return w;
    }

    /// <summary>The storage format (Int8 or BF16).</summary>
    public CpuWeightFormat Format { get; }

    /// <summary>Output rows N.</summary>
    public int Rows => Shape[0];

    /// <summary>Inputs per row K.</summary>
    public int Columns => Shape[1];

    /// <summary>The int8 weight (Format Int8).</summary>
    public Int8RowQuantized? Int8 { get; private set; }

    /// <summary>The bfloat16 bits [N·K] (Format BF16).</summary>
    public ushort[]? Bf16 { get; private set; }

    /// <summary>Bytes of the stored weight (values and scales).</summary>
    public long StoredBytes => Format == CpuWeightFormat.Int8 ? Int8!.Q.LongLength + 4L * Int8.Scales.Length : 2L * Bf16!.LongLength;

    /// <summary>Converts <paramref name="data"/> (N·K floats) into this weight's format, replacing what it held.</summary>
    public void Store(ReadOnlySpan<float> data) => Store(data, null);

    /// <summary><paramref name="owned"/>, when given, is <paramref name="data"/>'s array, read in place (no copy).</summary>
    private void Store(ReadOnlySpan<float> data, float[]? owned)
    {
        if (data.Length != ElementCount) throw new ArgumentException($"{data.Length} values for shape {ShapeText}", nameof(data));
        switch (Format)
        {
            case CpuWeightFormat.Int8:
                Int8 = Int8RowQuantized.Quantize(owned ?? data.ToArray(), Rows, Columns);
                break;
            case CpuWeightFormat.BF16:
                var bits = new ushort[data.Length];
                for (int i = 0; i < bits.Length; i++)
                {
                    if (!float.IsFinite(data[i]))
                        throw new ArgumentException($"weight element {i} is {data[i]}; it cannot be stored as bf16 weights", nameof(data));
                    bits[i] = SafeTensorsWriter.FloatToBf16(data[i]);
                }
                Bf16 = bits;
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(Format), Format, "packed weights are Int8 or BF16");
        }
    }

    /// <summary>Rows [<paramref name="row0"/>, +count) as float32 into <paramref name="destination"/> (count·K floats).</summary>
    public void Widen(int row0, int count, Span<float> destination)
    {
        int k = Columns;
        if ((uint)row0 > (uint)Rows || count < 0 || row0 + count > Rows)
            throw new ArgumentOutOfRangeException(nameof(row0), $"rows [{row0}, {row0 + count}) outside [0, {Rows})");
        if (destination.Length < (long)count * k) throw new ArgumentException($"destination holds {destination.Length}, need {(long)count * k}", nameof(destination));
        if (Format == CpuWeightFormat.BF16)
        {
            WidenBf16(Bf16.AsSpan(row0 * k, count * k), destination);
            return;
        }
        var q = Int8!.Q;
        for (int r = 0; r < count; r++)
            WidenInt8Row(q.AsSpan((row0 + r) * k, k), Int8.Scales[row0 + r], destination.Slice(r * k, k));
    }

    /// <summary>bf16 bits → float32 (exact), vectorised.</summary>
    private static unsafe void WidenBf16(ReadOnlySpan<ushort> bits, Span<float> dst)
    {
        int n = bits.Length, p = 0;
        fixed (ushort* pb = bits)
        fixed (float* pd = dst)
        {
            if (Avx512F.IsSupported && Vector512.IsHardwareAccelerated)
                for (; p + 16 <= n; p += 16) Vector512.Store(Bf16Widen512.Load1(pb + p), pd + p);
            else if (Avx2.IsSupported)
                for (; p + 8 <= n; p += 8) Vector256.Store(Bf16Widen256.Load1(pb + p), pd + p);
            for (; p < n; p++) pd[p] = Bf16Widen256.Scalar(pb[p]);
        }
    }

    /// <summary>dst[p] = s · q[p] (the value <see cref="Int8RowQuantized.Dequantize"/> gives), vectorised.</summary>
    private static unsafe void WidenInt8Row(ReadOnlySpan<sbyte> q, float s, Span<float> dst)
    {
        int k = q.Length, p = 0;
        fixed (sbyte* pq = q)
        fixed (float* pd = dst)
        {
            if (Avx512F.IsSupported && Vector512.IsHardwareAccelerated)
            {
                var vs = Vector512.Create(s);
                for (; p + 16 <= k; p += 16) Vector512.Store(Avx512F.Multiply(vs, Int8Widen512.Load1(pq + p)), pd + p);
            }
            else if (Avx2.IsSupported)
            {
                var vs = Vector256.Create(s);
                for (; p + 8 <= k; p += 8) Vector256.Store(Avx.Multiply(vs, Int8Widen256.Load1(pq + p)), pd + p);
            }
            for (; p < k; p++) pd[p] = s * pq[p];
        }
    }

    /// <inheritdoc />
    protected override void Free()
    {
        Int8 = null;
        Bf16 = null;
    }
}
