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
/// Owns one device allocation. It holds a reference on its context so that the context (and the device
/// memory pool behind it) outlives every buffer, whatever order the two are disposed or finalized in.
/// </summary>
internal sealed class MambaBufferHandle : SafeHandle
{
    private readonly MambaContextHandle _context;
    private readonly bool _contextRef;

    private MambaBufferHandle(MambaContextHandle context, IntPtr pointer, long bytes) : base(IntPtr.Zero, ownsHandle: true)
    {
        _context = context;
        bool added = false;
        context.DangerousAddRef(ref added);
        _contextRef = added;
        Bytes = bytes;
        SetHandle(pointer);
    }

    /// <summary>Size of the allocation in bytes.</summary>
    public long Bytes { get; }

    public override bool IsInvalid => handle == IntPtr.Zero;

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

    protected override bool ReleaseHandle()
    {
        int status = NativeMethods.mamba_buffer_free(_context.DangerousGetHandle(), handle);
        if (_contextRef) _context.DangerousRelease();
        return status == 0;
    }
}

/// <summary>
/// Owns one instantiated CUDA graph (<c>mamba_graph*</c>). Like a buffer, it holds a reference on its context,
/// so the context outlives it whatever order the two are released in.
/// </summary>
internal sealed class MambaGraphHandle : SafeHandle
{
    private readonly MambaContextHandle _context;
    private readonly bool _contextRef;

    internal MambaGraphHandle(MambaContextHandle context, IntPtr graph) : base(IntPtr.Zero, ownsHandle: true)
    {
        _context = context;
        bool added = false;
        context.DangerousAddRef(ref added);
        _contextRef = added;
        SetHandle(graph);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        int status = NativeMethods.mamba_graph_destroy(_context.DangerousGetHandle(), handle);
        if (_contextRef) _context.DangerousRelease();
        return status == 0;
    }
}

/// <summary>
/// Owns one fused batch-1 decode plan (<c>mamba_decode_plan*</c>). Holds a reference on its context, like a graph.
/// </summary>
internal sealed class MambaDecodePlanHandle : SafeHandle
{
    private readonly MambaContextHandle _context;
    private readonly bool _contextRef;

    internal MambaDecodePlanHandle(MambaContextHandle context, IntPtr plan) : base(IntPtr.Zero, ownsHandle: true)
    {
        _context = context;
        bool added = false;
        context.DangerousAddRef(ref added);
        _contextRef = added;
        SetHandle(plan);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        int status = NativeMethods.mamba_decode_plan_destroy(_context.DangerousGetHandle(), handle);
        if (_contextRef) _context.DangerousRelease();
        return status == 0;
    }
}
