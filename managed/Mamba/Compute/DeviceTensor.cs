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
