namespace Mamba;

/// <summary>A dense row-major float32 array with a shape, as returned to callers (logits, states, hidden states).</summary>
public sealed record HostTensor(float[] Data, int[] Shape)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Data.LongLength;

    /// <summary>The element at a full index.</summary>
    public float this[params int[] index]
    {
        get
        {
            if (index.Length != Shape.Length) throw new ArgumentException($"expected {Shape.Length} indices", nameof(index));
            long offset = 0;
            for (int i = 0; i < index.Length; i++)
            {
                if ((uint)index[i] >= (uint)Shape[i]) throw new ArgumentOutOfRangeException(nameof(index), index[i], $"axis {i} has size {Shape[i]}");
                offset = offset * Shape[i] + index[i];
            }
            return Data[offset];
        }
    }

    /// <summary>The contiguous row at the given leading indices (all but the last axis).</summary>
    public ReadOnlySpan<float> Row(params int[] leading)
    {
        if (leading.Length != Shape.Length - 1) throw new ArgumentException($"expected {Shape.Length - 1} indices", nameof(leading));
        long offset = 0;
        for (int i = 0; i < leading.Length; i++)
        {
            if ((uint)leading[i] >= (uint)Shape[i]) throw new ArgumentOutOfRangeException(nameof(leading), leading[i], $"axis {i} has size {Shape[i]}");
            offset = offset * Shape[i] + leading[i];
        }
        int width = Shape[^1];
        return Data.AsSpan((int)(offset * width), width);
    }

    /// <inheritdoc />
    public override string ToString() => $"HostTensor[{string.Join(", ", Shape)}]";
}
