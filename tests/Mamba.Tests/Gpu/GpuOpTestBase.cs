using Mamba.Compute;
using Mamba.Compute.Cpu;
using Mamba.Compute.Cuda;
using Mamba.Native;

namespace Mamba.Tests.Gpu;

/// <summary>
/// Shared plumbing of the GPU op tests: one CUDA backend per fixture (ignored with the reason when unavailable), the
/// CPU oracle, tensor pairs holding the same (device-rounded) values on both backends, NaN-poisoned outputs, and a
/// max-error comparison relative to the largest reference value.
/// </summary>
public abstract class GpuOpTestBase
{
    private CudaBackend? _gpu;
    private string? _unavailable;
    private readonly List<DeviceTensor> _owned = new();

    /// <summary>The CPU oracle.</summary>
    private protected static readonly CpuBackend Cpu = new(threads: 2);

    /// <summary>Every storage dtype.</summary>
    public static readonly DType[] AllDTypes = [DType.F32, DType.BF16, DType.F16];

    [OneTimeSetUp]
    public void Open()
    {
        try
        {
            _gpu = CudaBackend.Create(0, DType.F32);
            TestContext.Progress.WriteLine(MambaNative.Describe(0));
        }
        catch (MambaBackendUnavailableException ex)
        {
            _unavailable = ex.Message;
        }
    }

    [OneTimeTearDown]
    public void Close()
    {
        FreeTensors();
        _gpu?.Dispose();
        _gpu = null;
    }

    [TearDown]
    public void FreeTensors()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }

    /// <summary>The backend, or Assert.Ignore with the reason it is unavailable.</summary>
    private protected CudaBackend RequireGpu()
    {
        if (_gpu is null) Assert.Ignore($"CUDA backend unavailable: {_unavailable}");
        return _gpu!;
    }

    /// <summary>The backend when it could be opened, else null (for tear-downs, which must not Assert.Ignore).</summary>
    private protected CudaBackend? GpuOrNull => _gpu;

    /// <summary>Relative tolerance of an op's own arithmetic and output rounding.</summary>
    protected static double Tol(DType dt) => dt == DType.F32 ? 2e-5 : 3e-2;

    protected static float[] Rand(Random rng, long count, double lo = -1, double hi = 1)
    {
        var a = new float[count];
        for (long i = 0; i < count; i++) a[i] = (float)(lo + rng.NextDouble() * (hi - lo));
        return a;
    }

    /// <summary>Registers a tensor to be freed after the test.</summary>
    private protected T Own<T>(T t) where T : DeviceTensor
    {
        _owned.Add(t);
        return t;
    }

    /// <summary>The same values on both backends: uploaded to the GPU in <paramref name="dt"/>, read back, given to the CPU (F32).</summary>
    private protected (DeviceTensor G, DeviceTensor C) Pair(float[] data, DType dt, params int[] shape)
    {
        var gpu = RequireGpu();
        var g = Own(gpu.Upload(data, dt, shape));
        var rounded = new float[data.Length];
        gpu.Download(g, rounded);
        var c = Own(Cpu.Upload(rounded, DType.F32, shape));
        return (g, c);
    }

    /// <summary>
    /// Random scan parameters on both backends, drawn in the order dt_proj weight, dt bias, A, D: W [E, R] in
    /// <paramref name="dt"/> (±0.5), the dt bias in <paramref name="biasDType"/> (default <paramref name="dt"/>; −4..−1,
    /// or zeros), A [E, N] F32 (−8..−0.05), D F32 (0.5..1.5, or zeros). A zeroed vector draws nothing.
    /// </summary>
    private protected (SsmParameters G, SsmParameters C) RandomSsm(Random rng, DType dt, int inner, int n, int rank,
        DType? biasDType = null, bool zeroBias = false, bool zeroD = false)
    {
        var w = Pair(Rand(rng, (long)inner * rank, -0.5, 0.5), dt, inner, rank);
        var bias = Pair(zeroBias ? new float[inner] : Rand(rng, inner, -4, -1), biasDType ?? dt, inner);
        var a = Pair(Rand(rng, (long)inner * n, -8, -0.05), DType.F32, inner, n);
        var d = Pair(zeroD ? new float[inner] : Rand(rng, inner, 0.5, 1.5), DType.F32, inner);
        return (new SsmParameters(w.G, bias.G, a.G, d.G), new SsmParameters(w.C, bias.C, a.C, d.C));
    }

    /// <summary>Random scan inputs on both backends, drawn in the order u [B, L, E], dbc [B, L, ld], xz [B, L, 2E] (±2).</summary>
    private protected ((DeviceTensor G, DeviceTensor C) U, (DeviceTensor G, DeviceTensor C) Dbc, (DeviceTensor G, DeviceTensor C) Xz) RandomScanInputs(
        Random rng, DType dt, int batch, int length, int inner, int ld)
    {
        var u = Pair(Rand(rng, (long)batch * length * inner), dt, batch, length, inner);
        var dbc = Pair(Rand(rng, (long)batch * length * ld), dt, batch, length, ld);
        var xz = Pair(Rand(rng, (long)batch * length * 2 * inner, -2, 2), dt, batch, length, 2 * inner);
        return (u, dbc, xz);
    }

    /// <summary>An output pair: the GPU one filled with NaN, the CPU one zero.</summary>
    private protected (DeviceTensor G, DeviceTensor C) Out(DType dt, params int[] shape)
    {
        long n = 1;
        foreach (var d in shape) n *= d;
        var nan = new float[n];
        Array.Fill(nan, float.NaN);
        return (Own(RequireGpu().Upload(nan, dt, shape)), Own(Cpu.Allocate(DType.F32, shape)));
    }

    private protected static float[] Get(IMambaBackend b, DeviceTensor t)
    {
        var a = new float[t.ElementCount];
        b.Download(t, a);
        return a;
    }

    /// <summary>max|gpu − cpu| ≤ tol · max|cpu|; NaN or ∞ on the GPU side always fails.</summary>
    protected static void AssertClose(float[] g, float[] c, double tol, string what)
    {
        Assert.That(g, Has.Length.EqualTo(c.Length), what);
        double maxRef = 0, maxErr = 0;
        int worst = -1;
        for (int i = 0; i < c.Length; i++)
        {
            maxRef = Math.Max(maxRef, Math.Abs(c[i]));
            double err = float.IsNaN(g[i]) || float.IsInfinity(g[i]) ? double.PositiveInfinity : Math.Abs(g[i] - (double)c[i]);
            if (err > maxErr || worst < 0 && double.IsInfinity(err)) { maxErr = err; worst = i; }
        }
        Assert.That(maxErr, Is.LessThanOrEqualTo(tol * Math.Max(maxRef, 1e-20)),
            $"{what}: max error {maxErr:E3} at {worst} (cpu {(worst >= 0 ? c[worst] : 0)}, gpu {(worst >= 0 ? g[worst] : 0)}), max|ref| {maxRef:E3}");
    }

    private protected void AssertClose((DeviceTensor G, DeviceTensor C) pair, double tol, string what) =>
        AssertClose(Get(RequireGpu(), pair.G), Get(Cpu, pair.C), tol, what);
}
