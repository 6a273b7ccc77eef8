using System.Runtime.InteropServices;

namespace Mamba.Native;

/// <summary>Owns a <c>mamba_context*</c> (device, stream, cuBLAS handle, workspaces).</summary>
internal sealed class MambaContextHandle : SafeHandle
{
    public MambaContextHandle() : base(IntPtr.Zero, ownsHandle: true) { }

    internal MambaContextHandle(IntPtr context) : this() => SetHandle(context);

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => NativeMethods.mamba_context_destroy(handle) == 0;
}

/// <summary>
/// A native object that belongs to a context (buffer, graph, decode plan). It holds a reference on its context so that
/// the context (and the device memory behind it) outlives the object, whatever order the two are disposed or
/// finalized in; <see cref="Destroy"/> runs while that reference is still held.
/// </summary>
internal abstract class ContextBoundHandle : SafeHandle
{
    private readonly MambaContextHandle _context;
    private readonly bool _contextRef;

    protected ContextBoundHandle(MambaContextHandle context, IntPtr native) : base(IntPtr.Zero, ownsHandle: true)
    {
        _context = context;
        bool added = false;
        context.DangerousAddRef(ref added);
        _contextRef = added;
        SetHandle(native);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>Frees the native object with the library call for its kind; returns the status.</summary>
    protected abstract int Destroy(IntPtr context, IntPtr native);

    protected sealed override bool ReleaseHandle()
    {
        int status = Destroy(_context.DangerousGetHandle(), handle);
        if (_contextRef) _context.DangerousRelease();
        return status == 0;
    }
}

/// <summary>Owns one device allocation.</summary>
internal sealed class MambaBufferHandle : ContextBoundHandle
{
    private MambaBufferHandle(MambaContextHandle context, IntPtr pointer, long bytes) : base(context, pointer) => Bytes = bytes;

    /// <summary>Size of the allocation in bytes.</summary>
    public long Bytes { get; }

    /// <summary>Allocates <paramref name="bytes"/> of device memory (uninitialised).</summary>
    public static MambaBufferHandle Allocate(MambaContextHandle context, long bytes)
    {
        MambaNative.ThrowIfFailed(NativeMethods.mamba_buffer_alloc(context, bytes, out var pointer), "allocate");
        try
        {
            return new MambaBufferHandle(context, pointer, bytes);
        }
        catch
        {
            NativeMethods.mamba_buffer_free(context.DangerousGetHandle(), pointer);
            throw;
        }
    }

    protected override int Destroy(IntPtr context, IntPtr native) => NativeMethods.mamba_buffer_free(context, native);
}

/// <summary>Owns one instantiated CUDA graph (<c>mamba_graph*</c>).</summary>
internal sealed class MambaGraphHandle : ContextBoundHandle
{
    internal MambaGraphHandle(MambaContextHandle context, IntPtr graph) : base(context, graph) { }

    protected override int Destroy(IntPtr context, IntPtr native) => NativeMethods.mamba_graph_destroy(context, native);
}

/// <summary>Owns one fused batch-1 decode plan (<c>mamba_decode_plan*</c>).</summary>
internal sealed class MambaDecodePlanHandle : ContextBoundHandle
{
    internal MambaDecodePlanHandle(MambaContextHandle context, IntPtr plan) : base(context, plan) { }

    protected override int Destroy(IntPtr context, IntPtr native) => NativeMethods.mamba_decode_plan_destroy(context, native);
}
