using Mamba.Compute.Cuda;
using Mamba.Native;

namespace Mamba.Tests.Gpu;

/// <summary>The loader's no-library path; runs everywhere (no GPU needed), so it has no Gpu category.</summary>
public class NativeLoaderTests
{
    [Test]
    public void MissingLibraryThrowsBackendUnavailableWithProbeLog()
    {
        const string missing = "/nonexistent/mamba-test/libmamba.so";
        var ex = Assert.Throws<MambaBackendUnavailableException>(() =>
            CudaBackend.Create(0, Mamba.DType.F32, new CudaBackendOptions { LibraryPath = missing, ProbeDefaultLocations = false }));
        Assert.That(ex!.ProbeLog, Is.Not.Empty);
        Assert.That(ex.ProbeLog.Any(line => line.Contains(missing)), $"probe log: {string.Join(" | ", ex.ProbeLog)}");
        Assert.That(ex.Message, Does.Contain("probe log"));
        Assert.That(ex, Is.InstanceOf<MambaException>());
    }

    [Test]
    public void DefaultProbingLoadsOrExplains()
    {
        // With libmamba built (build/native, copied beside the assemblies) it loads, whether or not a GPU exists;
        // without it the failure carries the probe log.
        if (MambaNative.TryEnsureLoaded(out var error))
        {
            Assert.That(MambaNative.LoadedPath, Is.Not.Null);
            Assert.That(MambaNative.ProbeLog.Any(l => l.Contains($"loaded (ABI {MambaNative.ExpectedAbiVersion})")));
            Assert.That(MambaNative.DeviceCount(), Is.GreaterThanOrEqualTo(0));
            Assert.That(MambaNative.Describe(-1), Does.Contain($"abi: {MambaNative.ExpectedAbiVersion}"));
        }
        else
        {
            Assert.That(error, Does.Contain("probe log"));
        }
    }

    [Test]
    public void CreateWithoutDeviceOrLibraryThrowsBackendUnavailable()
    {
        try
        {
            using var backend = CudaBackend.Create();
            Assert.That(backend.Kind, Is.EqualTo(Mamba.Compute.BackendKind.Cuda));
            Assert.That(backend.Description, Does.StartWith("CUDA"));
        }
        catch (MambaBackendUnavailableException ex)
        {
            Assert.That(ex.ProbeLog, Is.Not.Empty);
            Assert.Pass($"unavailable here, as expected without a GPU: {ex.Reason}");
        }
    }
}
