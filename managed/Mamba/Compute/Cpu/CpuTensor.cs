namespace Mamba.Compute.Cpu;

/// <summary>A float32 tensor in managed memory, owned by <see cref="CpuBackend"/>.</summary>
internal sealed class CpuTensor : DeviceTensor
{
    internal CpuTensor(int[] shape, float[] data) : base(DType.F32, shape)
    {
        if (data.Length != ElementCount)
            throw new ArgumentException($"data has {data.Length} elements, shape {ShapeText} needs {ElementCount}", nameof(data));
        Data = data;
    }

    /// <summary>The storage (row-major).</summary>
    public float[] Data { get; }

    /// <summary>The storage as a span.</summary>
    public Span<float> Span => Data;

    /// <inheritdoc />
    protected override void Free()
    {
        // Managed memory: the GC reclaims it once unreferenced.
    }
}
