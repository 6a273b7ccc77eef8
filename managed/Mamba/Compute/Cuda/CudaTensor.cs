using Mamba.Native;

namespace Mamba.Compute.Cuda;

/// <summary>A dense row-major tensor in device memory, owned by a <see cref="CudaBackend"/>.</summary>
internal sealed class CudaTensor : DeviceTensor
{
    private readonly MambaBufferHandle _buffer;

    internal CudaTensor(CudaBackend owner, MambaBufferHandle buffer, DType dtype, int[] shape) : base(dtype, shape)
    {
        Owner = owner;
        _buffer = buffer;
    }

    /// <summary>The backend that allocated the tensor.</summary>
    public CudaBackend Owner { get; }

    /// <summary>Size of the storage in bytes.</summary>
    public long ByteCount => ElementCount * DType.SizeInBytes();

    /// <summary>The device address (valid until disposed).</summary>
    internal IntPtr Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(IsDisposed, this);
            return _buffer.DangerousGetHandle();
        }
    }

    /// <inheritdoc />
    protected override void Free()
    {
        _buffer.Dispose();
        Owner.OnTensorFreed(ByteCount);
    }
}
