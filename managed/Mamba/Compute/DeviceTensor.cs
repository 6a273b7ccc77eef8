namespace Mamba.Compute;

/// <summary>
/// A dense, row-major tensor owned by one backend (host memory for the CPU backend, device memory
/// for CUDA). The model code above the backend only passes these around; it never reads their memory.
/// </summary>
internal abstract class DeviceTensor : IDisposable
{
    /// <summary>Creates the descriptor; backends fill in storage.</summary>
    protected DeviceTensor(DType dtype, int[] shape)
    {
        long count = 1;
        foreach (var dim in shape)
        {
            if (dim < 0) throw new ArgumentOutOfRangeException(nameof(shape), $"negative dimension {dim}");
            count = checked(count * dim);
        }
        DType = dtype;
        Shape = shape;
        ElementCount = count;
    }

    /// <summary>Element type of the storage.</summary>
    public DType DType { get; }

    /// <summary>Dimensions, outermost first.</summary>
    public int[] Shape { get; }

    /// <summary>Product of <see cref="Shape"/>.</summary>
    public long ElementCount { get; }

    /// <summary>Size of dimension <paramref name="axis"/> (negative counts from the end).</summary>
    public int Dim(int axis) => Shape[axis < 0 ? Shape.Length + axis : axis];

    /// <summary>Shape as text, e.g. [2, 24, 64].</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    /// <summary>True once disposed.</summary>
    public bool IsDisposed { get; private set; }

    /// <summary>Frees the storage.</summary>
    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        Free();
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the backend storage.</summary>
    protected abstract void Free();

    /// <inheritdoc />
    public override string ToString() => $"{DType.ToShortName()}{ShapeText}";
}

/// <summary>The argument checks of <see cref="IMambaBackend.GatherLeading"/>, shared by the backends.</summary>
internal static class LeadingGather
{
    /// <summary>Checks shapes, dtypes and indices; returns the elements per leading index.</summary>
    public static long Check(DeviceTensor source, ReadOnlySpan<int> indices, DeviceTensor destination)
    {
        if (source.DType != destination.DType)
            throw new ArgumentException($"{nameof(destination)} is {destination.DType}, source {source.DType}", nameof(destination));
        if (source.Shape.Length == 0 || destination.Shape.Length != source.Shape.Length || !source.Shape.AsSpan(1).SequenceEqual(destination.Shape.AsSpan(1))
            || destination.Dim(0) != indices.Length)
            throw new ArgumentException($"{nameof(destination)} {destination.ShapeText} is not [{indices.Length}, …] with the trailing shape of {source.ShapeText}", nameof(destination));
        int count = source.Dim(0);
        foreach (var i in indices)
            if ((uint)i >= (uint)count) throw new ArgumentOutOfRangeException(nameof(indices), i, $"index outside [0, {count})");
        return count == 0 ? 0 : source.ElementCount / count;
    }
}
