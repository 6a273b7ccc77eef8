using Mamba.Native;

namespace Mamba.Tests.Gpu;

/// <summary>
/// mamba_describe lists every tuning switch of the library (native/src/tuning.cuh) with its value and where the value
/// came from. Needs only the library, not a device; ignored with the reason when the library cannot be loaded.
/// </summary>
public class NativeTuningTests
{
    private static readonly string[] Switches =
        ["MAMBA_LEGACY_KERNELS", "MAMBA_GEMV_MAX_ROWS", "MAMBA_SCAN_CHUNKS", "MAMBA_SCAN_VEC", "MAMBA_DECODE_GRID", "MAMBA_DECODE_TRACE",
         "MAMBA_SCAN_VARIANT"];

    [Test]
    public void DescribeListsEverySwitchWithItsSource()
    {
        if (!MambaNative.TryEnsureLoaded(out var error)) Assert.Ignore($"libmamba cannot be loaded here: {error}");
        var lines = MambaNative.Describe(-1).Split('\n');
        foreach (var name in Switches)
        {
            var line = lines.SingleOrDefault(l => l.StartsWith($"tuning {name}=", StringComparison.Ordinal));
            Assert.That(line, Is.Not.Null, $"no tuning line for {name}");
            string expected = string.IsNullOrEmpty(Environment.GetEnvironmentVariable(name)) ? "(default;" : "(from the environment;";
            Assert.That(line, Does.Contain(expected), line);
        }
    }
}
