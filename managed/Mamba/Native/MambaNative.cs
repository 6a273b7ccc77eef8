using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;

namespace Mamba.Native;

/// <summary>
/// Finds, loads and checks libmamba, and turns its status codes into exceptions.
/// Probe order: an explicit path (option), the <c>MAMBA_NATIVE_LIBRARY</c> environment variable,
/// <c>runtimes/&lt;rid&gt;/native/</c> beside the application and beside this assembly, the assembly folder,
/// then the platform's default probing. Every probe is logged (<see cref="ProbeLog"/>). Loading is explicit
/// and idempotent (no static constructor can fail), and can be retried after a failure.
/// </summary>
public static class MambaNative
{
    /// <summary>The ABI version this assembly was written against (MAMBA_ABI_VERSION in mamba.h).</summary>
    public const int ExpectedAbiVersion = 10;

    /// <summary>Environment variable naming the library file to load.</summary>
    public const string EnvironmentVariable = "MAMBA_NATIVE_LIBRARY";

    private static readonly object Gate = new();
    private static IntPtr _handle;
    private static string? _path;
    private static bool _resolverInstalled;
    private static readonly List<string> Log = new();

    /// <summary>True once a library with the expected ABI is loaded.</summary>
    public static bool IsLoaded => _handle != IntPtr.Zero;

    /// <summary>The file the library was loaded from (null until loaded).</summary>
    public static string? LoadedPath => _path;

    /// <summary>A copy of the probe log of every load attempt so far.</summary>
    public static IReadOnlyList<string> ProbeLog
    {
        get { lock (Gate) return Log.ToArray(); }
    }

    /// <summary>The file name of the library on this platform.</summary>
    public static string LibraryFileName =>
        OperatingSystem.IsWindows() ? "mamba.dll" : OperatingSystem.IsMacOS() ? "libmamba.dylib" : "libmamba.so";

    /// <summary>The runtime identifier folder searched under <c>runtimes/</c>.</summary>
    public static string RuntimeIdentifier
    {
        get
        {
            string os = OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux";
            string arch = RuntimeInformation.ProcessArchitecture switch
            {
                Architecture.Arm64 => "arm64",
                Architecture.X86 => "x86",
                _ => "x64",
            };
            return $"{os}-{arch}";
        }
    }

    /// <summary>
    /// Loads libmamba if it is not loaded yet, or throws <see cref="MambaBackendUnavailableException"/> with the
    /// probe log. <paramref name="explicitPath"/> is tried first; <paramref name="probeDefaultLocations"/> false
    /// restricts the search to it.
    /// </summary>
    public static void EnsureLoaded(string? explicitPath = null, bool probeDefaultLocations = true)
    {
        lock (Gate)
        {
            InstallResolver();
            if (_handle != IntPtr.Zero)
            {
                if (explicitPath is null || SamePath(explicitPath, _path)) return;
                Log.Add($"explicit path {explicitPath}: {(File.Exists(explicitPath) ? "exists" : "not found")}, but libmamba is already loaded from {_path}");
                throw new MambaBackendUnavailableException(
                    $"libmamba is already loaded from '{_path}'; it cannot be replaced by '{explicitPath}' in this process", Log.ToArray());
            }
            foreach (var (label, path) in Candidates(explicitPath, probeDefaultLocations))
            {
                if (path is null)
                {
                    Log.Add($"{label}: not set");
                    continue;
                }
                if (TryLoadCandidate(label, path)) return;
            }
            if (probeDefaultLocations)
            {
                try
                {
                    var h = NativeLibrary.Load(NativeMethods.Library, typeof(MambaNative).Assembly, DllImportSearchPath.SafeDirectories | DllImportSearchPath.AssemblyDirectory);
                    if (Accept("default probing of 'mamba'", h, "mamba (default probing)")) return;
                }
                catch (Exception ex)
                {
                    Log.Add($"default probing of 'mamba': failed: {OneLine(ex.Message)}");
                }
            }
            throw new MambaBackendUnavailableException(
                "libmamba could not be loaded (build it with CMake, or set MAMBA_NATIVE_LIBRARY to libmamba.so)", Log.ToArray());
        }
    }

    /// <summary>Tries <see cref="EnsureLoaded"/> and reports the failure instead of throwing.</summary>
    public static bool TryEnsureLoaded(out string? error, string? explicitPath = null, bool probeDefaultLocations = true)
    {
        try
        {
            EnsureLoaded(explicitPath, probeDefaultLocations);
            error = null;
            return true;
        }
        catch (MambaBackendUnavailableException ex)
        {
            error = ex.Message;
            return false;
        }
    }

    /// <summary>Number of CUDA devices the library sees (0 without a driver or GPU). Loads the library.</summary>
    public static int DeviceCount()
    {
        EnsureLoaded();
        ThrowIfFailed(NativeMethods.mamba_get_device_count(out int count), "device count");
        return count;
    }

    /// <summary>
    /// Diagnostics: library path, ABI version, compiled architectures, driver and runtime versions, device
    /// name and memory (for <paramref name="device"/> when it exists). Loads the library.
    /// </summary>
    public static unsafe string Describe(int device = 0)
    {
        EnsureLoaded();
        var sb = new StringBuilder();
        sb.AppendLine($"library path: {_path}");
        sb.AppendLine($"managed ABI: {ExpectedAbiVersion}");
        ThrowIfFailed(NativeMethods.mamba_describe(device, null, 0, out long length), "describe");
        var buffer = new byte[length + 1];
        fixed (byte* p = buffer)
            ThrowIfFailed(NativeMethods.mamba_describe(device, p, buffer.Length, out _), "describe");
        sb.Append(Encoding.UTF8.GetString(buffer, 0, (int)length));
        return sb.ToString();
    }

    /// <summary>The names of the parameter structs the loaded library exchanges (mamba_struct_name). Loads the library.</summary>
    internal static IReadOnlyList<string> NativeStructNames()
    {
        EnsureLoaded();
        var names = new List<string>();
        for (int i = 0; ; i++)
        {
            IntPtr p = NativeMethods.mamba_struct_name(i);
            if (p == IntPtr.Zero) break;
            names.Add(Marshal.PtrToStringUTF8(p)!);
        }
        return names;
    }

    /// <summary>sizeof and the fields (name, offset, in declaration order) of a native parameter struct. Loads the library.</summary>
    internal static unsafe (long Size, IReadOnlyList<(string Name, long Offset)> Fields) NativeStructLayout(string name)
    {
        EnsureLoaded();
        ThrowIfFailed(NativeMethods.mamba_struct_layout(name, out long size, null, null, 0, out int count), $"struct layout of {name}");
        var offsets = new long[count];
        var names = new IntPtr[count];
        fixed (long* po = offsets)
        fixed (IntPtr* pn = names)
            ThrowIfFailed(NativeMethods.mamba_struct_layout(name, out size, po, pn, count, out count), $"struct layout of {name}");
        var fields = new (string, long)[count];
        for (int i = 0; i < count; i++) fields[i] = (Marshal.PtrToStringUTF8(names[i])!, offsets[i]);
        return (size, fields);
    }

    /// <summary>The funnel from a native status to an exception (no-op for success).</summary>
    public static void ThrowIfFailed(int status, string operation)
    {
        if (status == 0) return;
        throw CreateException(status, operation);
    }

    internal static MambaNativeException CreateException(int status, string operation)
    {
        string message = Marshal.PtrToStringUTF8(NativeMethods.mamba_last_error()) ?? "";
        var s = (MambaStatus)status;
        return s switch
        {
            MambaStatus.OutOfMemory => new MambaOutOfMemoryException(operation, message),
            MambaStatus.InvalidArgument => new MambaInvalidArgumentException(operation, message),
            MambaStatus.NoDevice => new MambaBackendUnavailableException($"{operation}: {message}", ProbeLog, MambaStatus.NoDevice),
            _ => new MambaNativeException(s, operation, message),
        };
    }

    private static IEnumerable<(string Label, string? Path)> Candidates(string? explicitPath, bool defaults)
    {
        if (explicitPath is not null) yield return ("explicit path", explicitPath);
        if (!defaults) yield break;
        var env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        yield return ($"${EnvironmentVariable}", string.IsNullOrWhiteSpace(env) ? null : env);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        string rel = Path.Combine("runtimes", RuntimeIdentifier, "native", LibraryFileName);
        string? asmDir = Path.GetDirectoryName(typeof(MambaNative).Assembly.Location);
        foreach (var (label, dir) in new[] { ("application runtimes/ folder", AppContext.BaseDirectory), ("assembly runtimes/ folder", asmDir) })
        {
            if (string.IsNullOrEmpty(dir)) continue;
            var p = Path.GetFullPath(Path.Combine(dir, rel));
            if (seen.Add(p)) yield return (label, p);
        }
        if (!string.IsNullOrEmpty(asmDir))
        {
            var p = Path.GetFullPath(Path.Combine(asmDir, LibraryFileName));
            if (seen.Add(p)) yield return ("assembly folder", p);
        }
    }

    private static bool TryLoadCandidate(string label, string path)
    {
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception ex) { Log.Add($"{label} {path}: invalid path ({OneLine(ex.Message)})"); return false; }
        if (!File.Exists(full))
        {
            Log.Add($"{label} {full}: not found");
            return false;
        }
        IntPtr h;
        try { h = NativeLibrary.Load(full); }
        catch (Exception ex)
        {
            Log.Add($"{label} {full}: failed to load: {OneLine(ex.Message)}");
            return false;
        }
        return Accept($"{label} {full}", h, full);
    }

    private static unsafe bool Accept(string label, IntPtr h, string path)
    {
        if (!NativeLibrary.TryGetExport(h, "mamba_abi_version", out var fn))
        {
            Log.Add($"{label}: loaded, but it has no mamba_abi_version export (not libmamba)");
            NativeLibrary.Free(h);
            return false;
        }
        int abi = ((delegate* unmanaged<int>)fn)();
        if (abi != ExpectedAbiVersion)
        {
            Log.Add($"{label}: ABI version {abi}, expected {ExpectedAbiVersion}; rebuild libmamba from the same commit");
            NativeLibrary.Free(h);
            return false;
        }
        Log.Add($"{label}: loaded (ABI {abi})");
        _handle = h;
        _path = path;
        return true;
    }

    private static void InstallResolver()
    {
        if (_resolverInstalled) return;
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(MambaNative).Assembly, Resolve);
        }
        catch (InvalidOperationException)
        {
            Log.Add("note: another DllImport resolver is installed for this assembly; relying on it and on default probing");
        }
        _resolverInstalled = true;
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath) =>
        name == NativeMethods.Library ? _handle : IntPtr.Zero;

    private static bool SamePath(string a, string? b) =>
        b is not null && string.Equals(Path.GetFullPath(a), Path.GetFullPath(b), StringComparison.Ordinal);

    private static string OneLine(string s) => s.Replace('\n', ' ').Replace('\r', ' ');
}
