using Mamba.Native;

namespace Mamba.Compute.Cuda;

/// <summary>Options of <see cref="CudaBackend.Create(int, DType, CudaBackendOptions?)"/>.</summary>
internal sealed record CudaBackendOptions
{
    /// <summary>An explicit libmamba file, tried before every other location.</summary>
    public string? LibraryPath { get; init; }

    /// <summary>False: load only <see cref="LibraryPath"/>, without the environment variable or default probing.</summary>
    public bool ProbeDefaultLocations { get; init; } = true;
}

/// <summary>
/// The CUDA implementation of <see cref="IMambaBackend"/>: every op is a libmamba call queued on the
/// context's stream (asynchronous except where the interface returns host data). Weights, activations and
/// states stay on the device; the native library reuses its workspaces, so a decode loop allocates nothing.
/// </summary>
internal sealed partial class CudaBackend : IMambaBackend
{
    private readonly MambaContextHandle _context;
    private string? _description;

    private CudaBackend(MambaContextHandle context, int deviceId, DType activationDType)
    {
        _context = context;
        DeviceId = deviceId;
        ActivationDType = activationDType;
    }

    /// <summary>
    /// Loads libmamba and opens a context on <paramref name="deviceId"/>. Throws
    /// <see cref="MambaBackendUnavailableException"/> (with the probe log) when the library, the driver or the
    /// device is missing.
    /// </summary>
    public static CudaBackend Create(int deviceId = 0, DType activationDType = DType.F32, CudaBackendOptions? options = null)
    {
        options ??= new CudaBackendOptions();
        MambaNative.EnsureLoaded(options.LibraryPath, options.ProbeDefaultLocations);
        MambaNative.ThrowIfFailed(NativeMethods.mamba_get_device_count(out int count), "device count");
        if (count == 0)
            throw new MambaBackendUnavailableException("no CUDA device or driver was found", MambaNative.ProbeLog, MambaStatus.NoDevice);
        if (deviceId < 0 || deviceId >= count)
            throw new MambaBackendUnavailableException($"CUDA device {deviceId} does not exist ({count} found)", MambaNative.ProbeLog, MambaStatus.NoDevice);
        int status = NativeMethods.mamba_context_create(deviceId, out var ctx);
        if (status != 0)
        {
            var ex = MambaNative.CreateException(status, "context create");
            if (ex is MambaBackendUnavailableException) throw ex;
            throw new MambaBackendUnavailableException(ex.Message, MambaNative.ProbeLog, ex.Status, ex);
        }
        return new CudaBackend(new MambaContextHandle(ctx), deviceId, activationDType);
    }

    /// <summary>The CUDA device index.</summary>
    public int DeviceId { get; }

    /// <summary>The activation dtype the model runs in on this backend (F32, BF16 or F16; the residual stream stays F32).</summary>
    public DType ActivationDType { get; }

    /// <inheritdoc />
    public BackendKind Kind => BackendKind.Cuda;

    /// <inheritdoc />
    public string Description => _description ??= BuildDescription();

    private long _liveTensorBytes, _peakTensorBytes;

    /// <summary>Bytes held by this backend's live tensors (not the context's workspaces).</summary>
    public long LiveTensorBytes => Interlocked.Read(ref _liveTensorBytes);

    /// <summary>The most bytes this backend's tensors held at once since creation or <see cref="ResetPeakTensorBytes"/>.</summary>
    public long PeakTensorBytes => Interlocked.Read(ref _peakTensorBytes);

    /// <summary>Starts a new peak measurement from the bytes held now.</summary>
    public void ResetPeakTensorBytes() => Interlocked.Exchange(ref _peakTensorBytes, LiveTensorBytes);

    internal void OnTensorFreed(long bytes) => Interlocked.Add(ref _liveTensorBytes, -bytes);

    /// <summary>Free and total device memory in bytes.</summary>
    public (long Free, long Total) MemoryInfo()
    {
        Check(NativeMethods.mamba_mem_info(Ctx, out long free, out long total), "memory info");
        return (free, total);
    }

    /// <summary>
    /// Testing hook (<c>mamba_debug_inject_alloc_failures</c>): after <paramref name="skip"/> more successful allocations of
    /// this backend's context (tensors, workspace growth, decode plans), the next <paramref name="count"/> fail as a real
    /// out-of-memory does (<see cref="MambaOutOfMemoryException"/>, the message says "injected"); count 0 disarms. Returns
    /// how many allocations of the context failed by injection before this call. The native library checks the arguments
    /// (a negative one is <see cref="MambaInvalidArgumentException"/>).
    /// </summary>
    internal long InjectAllocationFailures(long skip, long count)
    {
        Check(NativeMethods.mamba_debug_inject_alloc_failures(Ctx, skip, count, out long injected), "inject allocation failures");
        return injected;
    }

    /// <summary>Disarms <see cref="InjectAllocationFailures"/>; returns how many allocations failed by injection so far.</summary>
    internal long DisarmAllocationFailures() => InjectAllocationFailures(0, 0);

    /// <summary>
    /// Testing and A/B hook (<c>mamba_debug_set_tuning</c>): sets the integer tuning switch <paramref name="name"/> (its
    /// environment name, e.g. <c>MAMBA_SCAN_VARIANT</c>) of this backend's context to <paramref name="value"/> for the
    /// ops queued afterwards, parsed and clamped as the environment value would be. An unknown name or a string switch is
    /// <see cref="MambaInvalidArgumentException"/>. Not for use while another thread runs ops on this backend.
    /// </summary>
    internal void SetTuning(string name, long value)
    {
        ArgumentNullException.ThrowIfNull(name);
        Check(NativeMethods.mamba_debug_set_tuning(Ctx, name, value), "set tuning");
    }

    private MambaContextHandle Ctx
    {
        get
        {
            ObjectDisposedException.ThrowIf(_context.IsClosed, this);
            return _context;
        }
    }

    private string BuildDescription()
    {
        try
        {
            var lines = MambaNative.Describe(DeviceId).Split('\n', StringSplitOptions.RemoveEmptyEntries);
            var device = lines.FirstOrDefault(l => l.StartsWith($"device {DeviceId}:", StringComparison.Ordinal)) ?? $"device {DeviceId}";
            return $"CUDA {device} ({ActivationDType.ToShortName()} activations), {MambaNative.LoadedPath}";
        }
        catch (MambaException ex)
        {
            return $"CUDA device {DeviceId} ({ex.Message})";
        }
    }

    // ---- memory ------------------------------------------------------------------------------------

    /// <inheritdoc />
    public DeviceTensor Allocate(DType dtype, params int[] shape)
    {
        var t = AllocateUninitialized(dtype, shape);
        try
        {
            Zero(t);
        }
        catch
        {
            t.Dispose();
            throw;
        }
        return t;
    }

    /// <summary>Allocates a tensor without clearing it.</summary>
    public CudaTensor AllocateUninitialized(DType dtype, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long count = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentOutOfRangeException(nameof(shape), $"negative dimension {d}");
            count = checked(count * d);
        }
        long bytes = checked(count * dtype.SizeInBytes());
        var buffer = MambaBufferHandle.Allocate(Ctx, bytes);
        long live = Interlocked.Add(ref _liveTensorBytes, bytes);
        long peak;
        while (live > (peak = Interlocked.Read(ref _peakTensorBytes)) && Interlocked.CompareExchange(ref _peakTensorBytes, live, peak) != peak) { }
        return new CudaTensor(this, buffer, dtype, (int[])shape.Clone());
    }

    /// <inheritdoc />
    public unsafe DeviceTensor Upload(ReadOnlySpan<float> data, DType dtype, params int[] shape)
    {
        var t = AllocateUninitialized(dtype, shape);
        try
        {
            if (data.Length != t.ElementCount)
                throw new ArgumentException($"{data.Length} values for shape {t.ShapeText}", nameof(data));
            fixed (float* p = data)
                Check(NativeMethods.mamba_upload_f32(Ctx, p, data.Length, t.Pointer, (int)dtype), "upload");
        }
        catch
        {
            t.Dispose();
            throw;
        }
        return t;
    }

    /// <inheritdoc />
    public unsafe void Download(DeviceTensor source, Span<float> destination)
    {
        var s = Cuda(source, nameof(source));
        if (destination.Length < s.ElementCount)
            throw new ArgumentException($"destination holds {destination.Length}, tensor has {s.ElementCount}", nameof(destination));
        fixed (float* p = destination)
            Check(NativeMethods.mamba_download_f32(Ctx, s.Pointer, (int)s.DType, s.ElementCount, p), "download");
    }

    /// <inheritdoc />
    public void Copy(DeviceTensor source, DeviceTensor destination)
    {
        var s = Cuda(source, nameof(source));
        var d = Cuda(destination, nameof(destination));
        if (s.ElementCount != d.ElementCount)
            throw new ArgumentException($"{nameof(destination)} {d.ShapeText} differs from {s.ShapeText}", nameof(destination));
        if (s.DType == d.DType)
            Check(NativeMethods.mamba_copy_d2d(Ctx, d.Pointer, s.Pointer, s.ByteCount), "copy");
        else
            Check(NativeMethods.mamba_convert(Ctx, s.Pointer, (int)s.DType, d.Pointer, (int)d.DType, s.ElementCount), "copy (convert)");
    }

    /// <inheritdoc />
    public unsafe void GatherRows(DeviceTensor source, ReadOnlySpan<int> rows, DeviceTensor destination)
    {
        var s = Cuda(source, nameof(source));
        var d = Cuda(destination, nameof(destination));
        if (s.DType != d.DType) throw new ArgumentException($"{nameof(destination)} is {d.DType}, source {s.DType}", nameof(destination));
        int width = s.Dim(-1);
        if (width <= 0) throw new ArgumentException($"{nameof(source)} {s.ShapeText} has empty rows", nameof(source));
        long count = s.ElementCount / width;
        if (d.ElementCount != (long)rows.Length * width)
            throw new ArgumentException($"{nameof(destination)} {d.ShapeText} does not hold {rows.Length} rows of {width}", nameof(destination));
        for (int j = 0; j < rows.Length; j++)
            if ((ulong)rows[j] >= (ulong)count) throw new ArgumentOutOfRangeException(nameof(rows), rows[j], $"row outside [0, {count})");
        if (rows.Length == 0) return;
        // One gather kernel (the embedding kernel: a row gather from a [count, width] table).
        fixed (int* p = rows)
            Check(NativeMethods.mamba_embedding(Ctx, s.Pointer, (int)s.DType, count, width, p, rows.Length, d.Pointer, (int)d.DType), "gather rows");
    }

    /// <inheritdoc />
    public unsafe void GatherLeading(DeviceTensor source, ReadOnlySpan<int> indices, DeviceTensor destination)
    {
        var s = Cuda(source, nameof(source));
        var d = Cuda(destination, nameof(destination));
        long width = LeadingGather.Check(s, indices, d);
        if (indices.Length == 0 || width == 0) return;
        // One gather kernel over the source viewed as [dim 0, everything else] (the embedding kernel's row gather).
        fixed (int* p = indices)
            Check(NativeMethods.mamba_embedding(Ctx, s.Pointer, (int)s.DType, s.Dim(0), width, p, indices.Length, d.Pointer, (int)d.DType), "gather (leading dimension)");
    }

    /// <inheritdoc />
    public void Zero(DeviceTensor tensor)
    {
        var t = Cuda(tensor, nameof(tensor));
        Check(NativeMethods.mamba_memset_zero(Ctx, t.Pointer, t.ByteCount), "zero");
    }

    // ---- ops ---------------------------------------------------------------------------------------

    /// <summary>Every id must index a row of a [vocab, d] table.</summary>
    private static void CheckIds(ReadOnlySpan<int> ids, int vocab)
    {
        for (int m = 0; m < ids.Length; m++)
            if ((uint)ids[m] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(ids), ids[m], $"token id at position {m} is outside the vocabulary [0, {vocab})");
    }

    /// <inheritdoc />
    public unsafe void Embedding(DeviceTensor table, ReadOnlySpan<int> ids, DeviceTensor output)
    {
        var t = Cuda(table, nameof(table));
        var o = Cuda(output, nameof(output));
        if (t.Shape.Length != 2) throw new ArgumentException($"table must be [V, d], got {t.ShapeText}", nameof(table));
        int vocab = t.Dim(0), width = t.Dim(1);
        Expect(o, nameof(output), ids.Length, width);
        CheckIds(ids, vocab);
        if (ids.Length == 0) return;
        fixed (int* p = ids)
            Check(NativeMethods.mamba_embedding(Ctx, t.Pointer, (int)t.DType, vocab, width, p, ids.Length, o.Pointer, (int)o.DType), "embedding");
    }

    /// <inheritdoc />
    public void AddRmsNorm(DeviceTensor residual, DeviceTensor? delta, DeviceTensor weight, float epsilon, DeviceTensor output)
    {
        var r = Cuda(residual, nameof(residual));
        var w = Cuda(weight, nameof(weight));
        var o = Cuda(output, nameof(output));
        int width = w.Dim(0);
        if (width <= 0 || w.ElementCount != width) throw new ArgumentException($"weight {w.ShapeText} is not [d]", nameof(weight));
        long rows = r.ElementCount / width;
        Expect(r, nameof(residual), rows, width);
        Expect(o, nameof(output), rows, width);
        IntPtr dp = IntPtr.Zero;
        int ddt = 0;
        if (delta is not null)
        {
            var dl = Cuda(delta, nameof(delta));
            Expect(dl, nameof(delta), rows, width);
            dp = dl.Pointer;
            ddt = (int)dl.DType;
        }
        var p = new AddRmsNormParams
        {
            ResidualDType = (int)r.DType, DeltaDType = ddt, WeightDType = (int)w.DType, OutDType = (int)o.DType, Epsilon = epsilon, Rows = rows, Dim = width,
            Residual = r.Pointer, Delta = dp, Weight = w.Pointer, Out = o.Pointer,
        };
        Check(NativeMethods.mamba_add_rmsnorm(Ctx, in p), "add_rmsnorm");
    }

    /// <inheritdoc />
    public void MaskRows(DeviceTensor x, DeviceTensor mask)
    {
        var t = Cuda(x, nameof(x));
        var mk = Cuda(mask, nameof(mask));
        RequireF32(mk, nameof(mask));
        long rows = mk.ElementCount;
        if (rows == 0 || t.ElementCount % rows != 0)
            throw new ArgumentException($"mask {mk.ShapeText} does not match rows of {t.ShapeText}", nameof(mask));
        Check(NativeMethods.mamba_mask_rows(Ctx, t.Pointer, (int)t.DType, mk.Pointer, rows, t.ElementCount / rows), "mask_rows");
    }

    /// <summary>A Linear's sizes: weight [N, K] and x viewed as M rows of K.</summary>
    private static (int N, int K, long M) LinearShape(CudaTensor x, CudaTensor weight)
    {
        if (weight.Shape.Length != 2) throw new ArgumentException($"weight must be [N, K], got {weight.ShapeText}", nameof(weight));
        int n = weight.Dim(0), k = weight.Dim(1);
        if (k == 0 || x.ElementCount % k != 0)
            throw new ArgumentException($"x {x.ShapeText} has no rows of width {k} for weight {weight.ShapeText}", nameof(x));
        return (n, k, x.ElementCount / k);
    }

    /// <inheritdoc />
    public void ScaleAdd(DeviceTensor x, float alpha, DeviceTensor y, float beta)
    {
        var xt = Cuda(x, nameof(x));
        var yt = Cuda(y, nameof(y));
        if (xt.ElementCount != yt.ElementCount)
            throw new ArgumentException($"x {xt.ShapeText} and y {yt.ShapeText} differ in size", nameof(y));
        Check(NativeMethods.mamba_scale_add(Ctx, xt.Pointer, (int)xt.DType, alpha, yt.Pointer, (int)yt.DType, beta, xt.ElementCount), "scale_add");
    }

    /// <inheritdoc />
    public void Linear(DeviceTensor x, DeviceTensor weight, DeviceTensor? bias, DeviceTensor y)
    {
        var xt = Cuda(x, nameof(x));
        var w = Cuda(weight, nameof(weight));
        var yt = Cuda(y, nameof(y));
        var (n, k, m) = LinearShape(xt, w);
        Expect(yt, nameof(y), m, n);
        IntPtr bp = IntPtr.Zero;
        int bdt = 0;
        if (bias is not null)
        {
            var bt = Cuda(bias, nameof(bias));
            if (bt.ElementCount != n) throw new ArgumentException($"bias {bt.ShapeText} does not match {n} outputs", nameof(bias));
            bp = bt.Pointer;
            bdt = (int)bt.DType;
        }
        var p = new LinearParams
        {
            XDType = (int)xt.DType, WDType = (int)w.DType, BiasDType = bdt, YDType = (int)yt.DType, M = m, N = n, K = k,
            X = xt.Pointer, W = w.Pointer, Bias = bp, Y = yt.Pointer,
        };
        Check(NativeMethods.mamba_linear(Ctx, in p), "linear");
    }

    /// <inheritdoc />
    public void CausalConv1d(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor? mask, DeviceTensor u, DeviceTensor? convState)
    {
        var x = Cuda(xz, nameof(xz));
        if (x.Shape.Length != 3) throw new ArgumentException($"xz must be [B, L, 2E], got {x.ShapeText}", nameof(xz));
        if (x.Dim(2) % 2 != 0) throw new ArgumentException($"xz must have an even last dimension (x and z), got {x.ShapeText}", nameof(xz));
        int batch = x.Dim(0), length = x.Dim(1), inner = x.Dim(2) / 2;
        var w = Cuda(weight, nameof(weight));
        int kernel = w.Dim(-1);
        if (w.ElementCount != (long)inner * kernel) throw new ArgumentException($"weight {w.ShapeText} is not [{inner}, K]", nameof(weight));
        var ut = Cuda(u, nameof(u));
        Expect(ut, nameof(u), (long)batch * length, inner);
        SameDType(x, ut, nameof(u));
        var (bp, bdt) = Optional(bias, inner, nameof(bias));
        IntPtr mp = IntPtr.Zero;
        if (mask is not null)
        {
            var mk = Cuda(mask, nameof(mask));
            RequireF32(mk, nameof(mask));
            if (mk.ElementCount != (long)batch * length) throw new ArgumentException($"mask {mk.ShapeText} is not [{batch}, {length}]", nameof(mask));
            mp = mk.Pointer;
        }
        IntPtr sp = IntPtr.Zero;
        int sdt = 0;
        if (convState is not null)
        {
            var st = Cuda(convState, nameof(convState));
            Expect(st, nameof(convState), (long)batch * inner, kernel);
            sp = st.Pointer;
            sdt = (int)st.DType;
        }
        var p = ConvParams(x, w, bp, bdt, ut, sp, sdt, batch, length, inner, kernel);
        p.Mask = mp;
        Check(NativeMethods.mamba_causal_conv1d_fwd(Ctx, in p), "causal_conv1d");
    }

    /// <inheritdoc />
    public void CausalConv1dContinue(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor u, DeviceTensor convState)
    {
        var x = Cuda(xz, nameof(xz));
        if (x.Shape.Length != 3) throw new ArgumentException($"xz must be [B, L, 2E], got {x.ShapeText}", nameof(xz));
        if (x.Dim(2) % 2 != 0) throw new ArgumentException($"xz must have an even last dimension (x and z), got {x.ShapeText}", nameof(xz));
        int batch = x.Dim(0), length = x.Dim(1), inner = x.Dim(2) / 2;
        var w = Cuda(weight, nameof(weight));
        int kernel = w.Dim(-1);
        if (w.ElementCount != (long)inner * kernel) throw new ArgumentException($"weight {w.ShapeText} is not [{inner}, K]", nameof(weight));
        var ut = Cuda(u, nameof(u));
        Expect(ut, nameof(u), (long)batch * length, inner);
        SameDType(x, ut, nameof(u));
        var (bp, bdt) = Optional(bias, inner, nameof(bias));
        var st = Cuda(convState, nameof(convState));
        Expect(st, nameof(convState), (long)batch * inner, kernel);
        var p = ConvParams(x, w, bp, bdt, ut, st.Pointer, (int)st.DType, batch, length, inner, kernel);
        Check(NativeMethods.mamba_causal_conv1d_fwd_continue(Ctx, in p), "causal_conv1d_continue");
    }

    /// <inheritdoc />
    public void CausalConv1dStep(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor convState, DeviceTensor u)
    {
        var x = Cuda(xz, nameof(xz));
        var w = Cuda(weight, nameof(weight));
        var st = Cuda(convState, nameof(convState));
        var ut = Cuda(u, nameof(u));
        int inner = ut.Dim(-1);
        if (inner <= 0) throw new ArgumentException($"u {ut.ShapeText} is empty", nameof(u));
        int batch = (int)(ut.ElementCount / inner);
        int kernel = w.Dim(-1);
        Expect(x, nameof(xz), batch, 2L * inner);
        Expect(st, nameof(convState), (long)batch * inner, kernel);
        SameDType(x, ut, nameof(u));
        if (w.ElementCount != (long)inner * kernel) throw new ArgumentException($"weight {w.ShapeText} is not [{inner}, {kernel}]", nameof(weight));
        var (bp, bdt) = Optional(bias, inner, nameof(bias));
        var p = ConvParams(x, w, bp, bdt, ut, st.Pointer, (int)st.DType, batch, 1, inner, kernel);
        Check(NativeMethods.mamba_causal_conv1d_update(Ctx, in p), "causal_conv1d_step");
    }

    /// <inheritdoc />
    public void SelectiveScan(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor y, DeviceTensor? ssmState,
        DeviceTensor? checkpoints = null)
    {
        var p = Ssm(ssm, u, dbc, xz, y, out int rows);
        var ut = Cuda(u, nameof(u));
        int batch = ut.Shape.Length == 3 ? ut.Dim(0) : 1;
        if (batch <= 0 || rows % batch != 0) throw new ArgumentException($"u {ut.ShapeText} has no whole batch rows", nameof(u));
        int length = rows / batch;
        IntPtr sp = IntPtr.Zero;
        if (ssmState is not null)
        {
            var st = Cuda(ssmState, nameof(ssmState));
            RequireF32(st, nameof(ssmState));
            Expect(st, nameof(ssmState), (long)batch * p.Inner, p.State);
            sp = st.Pointer;
        }
        var sc = ScanParams(p, ut, dbc, xz, y, sp, batch, length);
        sc.Checkpoints = CheckpointPointer(checkpoints, batch, length, p);
        Check(NativeMethods.mamba_selective_scan_fwd(Ctx, in sc), "selective_scan");
    }

    /// <inheritdoc />
    public int[]? ScanCheckpointShape(int batch, int length, int inner, int state) =>
        [batch, (length + ScanCheckpointInterval - 1) / ScanCheckpointInterval, inner, state];

    /// <summary>C <c>MAMBA_SCAN_CHECKPOINT_INTERVAL</c>: steps between two saved scan states.</summary>
    private const int ScanCheckpointInterval = 16;

    private IntPtr CheckpointPointer(DeviceTensor? checkpoints, int batch, int length, SsmView p)
    {
        if (checkpoints is null) return IntPtr.Zero;
        var ck = Cuda(checkpoints, nameof(checkpoints));
        RequireF32(ck, nameof(checkpoints));
        var shape = ScanCheckpointShape(batch, length, (int)p.Inner, (int)p.State)!;
        if (!ck.Shape.SequenceEqual(shape))
            throw new ArgumentException($"checkpoints {ck.ShapeText} must be [{string.Join(", ", shape)}]", nameof(checkpoints));
        return ck.Pointer;
    }

    /// <inheritdoc />
    public void SelectiveScanContinue(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor y, DeviceTensor ssmState)
    {
        var p = Ssm(ssm, u, dbc, xz, y, out int rows);
        var ut = Cuda(u, nameof(u));
        int batch = ut.Shape.Length == 3 ? ut.Dim(0) : 1;
        if (batch <= 0 || rows % batch != 0) throw new ArgumentException($"u {ut.ShapeText} has no whole batch rows", nameof(u));
        int length = rows / batch;
        var st = Cuda(ssmState, nameof(ssmState));
        RequireF32(st, nameof(ssmState));
        Expect(st, nameof(ssmState), (long)batch * p.Inner, p.State);
        var sc = ScanParams(p, ut, dbc, xz, y, st.Pointer, batch, length);
        Check(NativeMethods.mamba_selective_scan_continue(Ctx, in sc), "selective_scan_continue");
    }

    /// <inheritdoc />
    public void SelectiveStateStep(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor ssmState, DeviceTensor y)
    {
        var p = Ssm(ssm, u, dbc, xz, y, out int rows);
        var ut = Cuda(u, nameof(u));
        var st = Cuda(ssmState, nameof(ssmState));
        RequireF32(st, nameof(ssmState));
        Expect(st, nameof(ssmState), (long)rows * p.Inner, p.State);
        var sc = ScanParams(p, ut, dbc, xz, y, st.Pointer, rows, 1);
        Check(NativeMethods.mamba_selective_state_update(Ctx, in sc), "selective_state_step");
    }

    /// <inheritdoc />
    public unsafe void ArgMax(DeviceTensor logits, Span<int> result)
    {
        var l = Cuda(logits, nameof(logits));
        int vocab = l.Dim(-1);
        if (vocab <= 0) throw new ArgumentException($"logits {l.ShapeText} are empty", nameof(logits));
        long rows = l.ElementCount / vocab;
        if (result.Length < rows) throw new ArgumentException($"result holds {result.Length}, need {rows}", nameof(result));
        if (rows == 0) return;
        fixed (int* p = result)
            Check(NativeMethods.mamba_argmax(Ctx, l.Pointer, (int)l.DType, rows, vocab, p), "argmax");
    }

    /// <inheritdoc />
    public unsafe double CrossEntropySum(DeviceTensor logits, ReadOnlySpan<int> targets, int ignoreIndex, out int count)
    {
        var l = Cuda(logits, nameof(logits));
        int vocab = l.Dim(-1);
        if (vocab <= 0) throw new ArgumentException($"logits {l.ShapeText} are empty", nameof(logits));
        long rows = l.ElementCount / vocab;
        if (targets.Length != rows) throw new ArgumentException($"{targets.Length} targets for {rows} rows", nameof(targets));
        for (int m = 0; m < targets.Length; m++)
            if (targets[m] != ignoreIndex && (uint)targets[m] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(targets), targets[m], $"target at row {m} is outside [0, {vocab})");
        count = 0;
        if (rows == 0) return 0;
        double sum;
        long n;
        fixed (int* p = targets)
            Check(NativeMethods.mamba_cross_entropy_sum(Ctx, l.Pointer, (int)l.DType, rows, vocab, p, ignoreIndex, out sum, out n), "cross_entropy");
        count = (int)n;
        return sum;
    }

    /// <inheritdoc />
    public void Synchronize() => Check(NativeMethods.mamba_synchronize(Ctx), "synchronize");

    // ---- CUDA graphs and device-side ids (the captured greedy decode step) ------------------------

    /// <summary>True while this backend's context is open.</summary>
    internal bool IsOpen => !_context.IsClosed;

    /// <summary>output[m, :] = table[ids[m], :] with ids read from the device buffer <paramref name="ids"/> (int32 [count]); the caller validated them.</summary>
    internal void EmbeddingFromDevice(DeviceTensor table, CudaTensor ids, int count, DeviceTensor output)
    {
        var t = Cuda(table, nameof(table));
        var o = Cuda(output, nameof(output));
        if (t.Shape.Length != 2) throw new ArgumentException($"table must be [V, d], got {t.ShapeText}", nameof(table));
        if (ids.ByteCount < 4L * count) throw new ArgumentException($"ids buffer holds {ids.ByteCount} bytes, need {4L * count}", nameof(ids));
        int vocab = t.Dim(0), width = t.Dim(1);
        Expect(o, nameof(output), count, width);
        Check(NativeMethods.mamba_embedding_device_ids(Ctx, t.Pointer, (int)t.DType, vocab, width, Cuda(ids, nameof(ids)).Pointer, count, o.Pointer, (int)o.DType),
            "embedding (device ids)");
    }

    /// <summary>Row-wise argmax of logits [M, V] into the device buffer <paramref name="result"/> (int32 [M]); no synchronization.</summary>
    internal void ArgMaxToDevice(DeviceTensor logits, CudaTensor result)
    {
        var l = Cuda(logits, nameof(logits));
        int vocab = l.Dim(-1);
        if (vocab <= 0) throw new ArgumentException($"logits {l.ShapeText} are empty", nameof(logits));
        long rows = l.ElementCount / vocab;
        if (result.ByteCount < 4L * rows) throw new ArgumentException($"result buffer holds {result.ByteCount} bytes, need {4L * rows}", nameof(result));
        Check(NativeMethods.mamba_argmax_device(Ctx, l.Pointer, (int)l.DType, rows, vocab, Cuda(result, nameof(result)).Pointer), "argmax (device)");
    }

    /// <summary>Starts capturing this backend's stream: ops queued until <see cref="EndCapture"/> are recorded, not run.</summary>
    internal void BeginCapture() => Check(NativeMethods.mamba_graph_begin_capture(Ctx), "graph capture begin");

    /// <summary>Ends the capture and instantiates the graph.</summary>
    internal unsafe MambaGraphHandle EndCapture()
    {
        IntPtr graph;
        Check(NativeMethods.mamba_graph_end_capture(Ctx, &graph), "graph capture end");
        return new MambaGraphHandle(Ctx, graph);
    }

    /// <summary>Ends a capture and drops what it recorded (after an op failed while capturing); never throws.</summary>
    internal unsafe void AbortCapture()
    {
        if (_context.IsClosed) return;
        try { NativeMethods.mamba_graph_end_capture(_context, null); } catch (Exception) { /* best effort */ }
    }

    /// <summary>Copies <paramref name="input"/> into <paramref name="deviceInput"/>, replays the graph, copies <paramref name="deviceOutput"/> into <paramref name="output"/>, and waits.</summary>
    internal unsafe void LaunchGraph(MambaGraphHandle graph, ReadOnlySpan<int> input, CudaTensor deviceInput, Span<int> output, CudaTensor deviceOutput)
    {
        if (deviceInput.ByteCount < 4L * input.Length) throw new ArgumentException("device input buffer too small", nameof(deviceInput));
        if (deviceOutput.ByteCount < 4L * output.Length) throw new ArgumentException("device output buffer too small", nameof(deviceOutput));
        bool added = false;
        graph.DangerousAddRef(ref added);
        try
        {
            fixed (int* pin = input)
            fixed (int* pout = output)
                Check(NativeMethods.mamba_graph_launch(Ctx, graph.DangerousGetHandle(), pin, deviceInput.Pointer, 4L * input.Length,
                    pout, deviceOutput.Pointer, 4L * output.Length), "graph launch");
        }
        finally
        {
            if (added) graph.DangerousRelease();
        }
    }

    /// <summary>Creates a fused batch-1 decode plan over the given device tensors (see <c>mamba_decode_plan_create</c>).</summary>
    internal unsafe MambaDecodePlanHandle CreateDecodePlan(ref DecodeModelDesc model, DecodeLayerDesc[] layers)
    {
        IntPtr plan;
        fixed (DecodeLayerDesc* pl = layers)
        fixed (DecodeModelDesc* pm = &model)
        {
            pm->Layers = pl;
            Check(NativeMethods.mamba_decode_plan_create(Ctx, pm, &plan), "fused decode plan");
            pm->Layers = null;
        }
        return new MambaDecodePlanHandle(Ctx, plan);
    }

    /// <summary>Runs one fused decode step for <paramref name="token"/> and returns the greedy next token.</summary>
    internal unsafe int DecodePlanStep(MambaDecodePlanHandle plan, int token)
    {
        bool added = false;
        plan.DangerousAddRef(ref added);
        try
        {
            int next;
            Check(NativeMethods.mamba_decode_plan_step(Ctx, plan.DangerousGetHandle(), token, &next), "fused decode step");
            return next;
        }
        finally
        {
            if (added) plan.DangerousRelease();
        }
    }

    private readonly List<IDisposable> _dependents = new();

    /// <summary>Registers an object (e.g. a captured graph with its buffers) to dispose when this backend is disposed.</summary>
    internal void AddDependent(IDisposable dependent)
    {
        lock (_dependents) _dependents.Add(dependent);
    }

    /// <summary>Forgets a dependent that was disposed by its owner.</summary>
    internal void RemoveDependent(IDisposable dependent)
    {
        lock (_dependents) _dependents.Remove(dependent);
    }

    /// <summary>Waits for queued work, then releases the context (it is destroyed once every tensor of it is freed too).</summary>
    public void Dispose()
    {
        if (_context.IsClosed) return;
        try { NativeMethods.mamba_synchronize(_context); } catch (Exception) { /* best effort */ }
        IDisposable[] dependents;
        lock (_dependents)
        {
            dependents = _dependents.ToArray();
            _dependents.Clear();
        }
        foreach (var d in dependents)
        {
            try { d.Dispose(); } catch (Exception) { /* best effort */ }
        }
        _context.Dispose();
    }

    // ---- helpers -----------------------------------------------------------------------------------

    private readonly record struct SsmView(CudaTensor W, CudaTensor Bias, CudaTensor A, CudaTensor D, int Inner, int State, int Rank);

    private SsmView Ssm(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor y, out int rows)
    {
        ArgumentNullException.ThrowIfNull(ssm);
        var a = Cuda(ssm.A, "ssm.A");
        var w = Cuda(ssm.DtProjWeight, "ssm.DtProjWeight");
        var b = Cuda(ssm.DtProjBias, "ssm.DtProjBias");
        var d = Cuda(ssm.D, "ssm.D");
        RequireF32(a, "ssm.A");
        RequireF32(d, "ssm.D");
        if (a.Shape.Length != 2) throw new ArgumentException($"ssm.A must be [E, N], got {a.ShapeText}", "ssm");
        int inner = a.Dim(0), n = a.Dim(1);
        if (w.Shape.Length != 2) throw new ArgumentException($"ssm.DtProjWeight must be [E, R], got {w.ShapeText}", "ssm");
        int rank = w.Dim(1);
        Expect(w, "ssm.DtProjWeight", inner, rank);
        if (b.ElementCount != inner) throw new ArgumentException($"ssm.DtProjBias {b.ShapeText} is not [{inner}]", "ssm");
        if (d.ElementCount != inner) throw new ArgumentException($"ssm.D {d.ShapeText} is not [{inner}]", "ssm");
        var ut = Cuda(u, nameof(u));
        if (inner <= 0 || ut.ElementCount % inner != 0) throw new ArgumentException($"u {ut.ShapeText} has no rows of {inner}", nameof(u));
        rows = checked((int)(ut.ElementCount / inner));
        var dt = Cuda(dbc, nameof(dbc));
        var xt = Cuda(xz, nameof(xz));
        var yt = Cuda(y, nameof(y));
        Expect(dt, nameof(dbc), rows, rank + 2L * n);
        Expect(xt, nameof(xz), rows, 2L * inner);
        Expect(yt, nameof(y), rows, inner);
        SameDType(ut, dt, nameof(dbc));
        SameDType(ut, xt, nameof(xz));
        SameDType(ut, yt, nameof(y));
        return new SsmView(w, b, a, d, inner, n, rank);
    }

    /// <summary>The scan entries' parameters (mamba_selective_scan_params) for checked tensors.</summary>
    private SelectiveScanParams ScanParams(SsmView p, CudaTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor y, IntPtr state, int batch, int length) =>
        new()
        {
            ActDType = (int)u.DType, DtWeightDType = (int)p.W.DType, DtBiasDType = (int)p.Bias.DType,
            Batch = batch, Length = length, Channels = p.Inner, DState = p.State, DtRank = p.Rank,
            U = u.Pointer, Dbc = Cuda(dbc, nameof(dbc)).Pointer, Xz = Cuda(xz, nameof(xz)).Pointer, Y = Cuda(y, nameof(y)).Pointer,
            DtWeight = p.W.Pointer, DtBias = p.Bias.Pointer, A = p.A.Pointer, D = p.D.Pointer, State = state,
        };

    /// <summary>The conv entries' parameters (mamba_causal_conv1d_params) for checked tensors; no mask.</summary>
    private static CausalConv1dParams ConvParams(CudaTensor xz, CudaTensor weight, IntPtr bias, int biasDType, CudaTensor u, IntPtr state, int stateDType,
        int batch, int length, int inner, int kernel) =>
        new()
        {
            ActDType = (int)xz.DType, WeightDType = (int)weight.DType, BiasDType = biasDType, StateDType = stateDType,
            Batch = batch, Length = length, Channels = inner, Width = kernel,
            Xz = xz.Pointer, Weight = weight.Pointer, Bias = bias, U = u.Pointer, ConvState = state,
        };

    private (IntPtr Pointer, int DType) Optional(DeviceTensor? tensor, long size, string name)
    {
        if (tensor is null) return (IntPtr.Zero, 0);
        var t = Cuda(tensor, name);
        if (t.ElementCount != size) throw new ArgumentException($"{name} {t.ShapeText} is not [{size}]", name);
        return (t.Pointer, (int)t.DType);
    }

    private CudaTensor Cuda(DeviceTensor tensor, string name)
    {
        ArgumentNullException.ThrowIfNull(tensor, name);
        ObjectDisposedException.ThrowIf(tensor.IsDisposed, tensor);
        if (tensor is not CudaTensor c)
            throw new ArgumentException($"{name} lives on another backend ({tensor.GetType().Name})", name);
        if (!ReferenceEquals(c.Owner, this))
            throw new ArgumentException($"{name} belongs to another CUDA backend instance", name);
        return c;
    }

    private static void Expect(CudaTensor t, string name, long rows, long cols)
    {
        if (t.ElementCount != rows * cols)
            throw new ArgumentException($"{name} {t.ShapeText} does not hold {rows} rows of {cols}", name);
    }

    private static void SameDType(CudaTensor reference, CudaTensor t, string name)
    {
        if (t.DType != reference.DType)
            throw new ArgumentException($"{name} is {t.DType.ToShortName()}, expected {reference.DType.ToShortName()} like the other activations", name);
    }

    private static void RequireF32(CudaTensor t, string name)
    {
        if (t.DType != DType.F32) throw new ArgumentException($"{name} must be f32, got {t.DType.ToShortName()}", name);
    }

    private static void Check(int status, string operation) => MambaNative.ThrowIfFailed(status, operation);
}
