namespace Mamba.Native;

/// <summary>Status codes of libmamba (mamba.h), plus <see cref="LibraryUnavailable"/> for a library that could not be loaded.</summary>
public enum MambaStatus
{
    /// <summary>Success.</summary>
    Ok = 0,
    /// <summary>A bad pointer, shape, dtype or value; nothing was queued.</summary>
    InvalidArgument = 1,
    /// <summary>A device (or host) allocation failed; the context is still usable.</summary>
    OutOfMemory = 2,
    /// <summary>A CUDA runtime error.</summary>
    Cuda = 3,
    /// <summary>A cuBLAS error.</summary>
    Cublas = 4,
    /// <summary>No CUDA device or driver, or the device id is out of range.</summary>
    NoDevice = 5,
    /// <summary>A valid request this build cannot serve.</summary>
    Unsupported = 6,
    /// <summary>An unexpected failure inside the library.</summary>
    Internal = 7,
    /// <summary>Managed-side status: libmamba could not be found, loaded or its ABI does not match.</summary>
    LibraryUnavailable = 100,
}

/// <summary>A libmamba call failed; <see cref="Status"/> and <see cref="NativeMessage"/> say how.</summary>
public class MambaNativeException : MambaException
{
    /// <summary>Creates the exception for a failed native call.</summary>
    public MambaNativeException(MambaStatus status, string operation, string nativeMessage, Exception? inner = null)
        : base($"{operation} failed ({status}): {nativeMessage}", inner)
    {
        Status = status;
        Operation = operation;
        NativeMessage = nativeMessage;
    }

    /// <summary>The native status code.</summary>
    public MambaStatus Status { get; }

    /// <summary>The managed operation that made the call.</summary>
    public string Operation { get; }

    /// <summary>The thread-local message of the library (op, shapes, CUDA error string).</summary>
    public string NativeMessage { get; }
}

/// <summary>Device (or host) memory ran out. The backend stays usable; free something and retry.</summary>
public sealed class MambaOutOfMemoryException : MambaNativeException
{
    /// <summary>Creates the exception.</summary>
    public MambaOutOfMemoryException(string operation, string nativeMessage) : base(MambaStatus.OutOfMemory, operation, nativeMessage) { }
}

/// <summary>The native library rejected an argument (shape, dtype, pointer or value).</summary>
public sealed class MambaInvalidArgumentException : MambaNativeException
{
    /// <summary>Creates the exception.</summary>
    public MambaInvalidArgumentException(string operation, string nativeMessage) : base(MambaStatus.InvalidArgument, operation, nativeMessage) { }
}

/// <summary>
/// The CUDA backend cannot run here: libmamba was not found or failed to load, its ABI differs, or there is
/// no CUDA device/driver. <see cref="ProbeLog"/> lists every place that was tried and what happened.
/// </summary>
public sealed class MambaBackendUnavailableException : MambaNativeException
{
    /// <summary>Creates the exception with the loader's probe log.</summary>
    public MambaBackendUnavailableException(string reason, IReadOnlyList<string> probeLog, MambaStatus status = MambaStatus.LibraryUnavailable, Exception? inner = null)
        : base(status, "CUDA backend", reason + (probeLog.Count > 0 ? Environment.NewLine + "probe log:" + Environment.NewLine + "  " + string.Join(Environment.NewLine + "  ", probeLog) : ""), inner)
    {
        Reason = reason;
        ProbeLog = probeLog;
    }

    /// <summary>Why the backend is unavailable, in one line.</summary>
    public string Reason { get; }

    /// <summary>Every probe of the native-library resolver, in order.</summary>
    public IReadOnlyList<string> ProbeLog { get; }
}
