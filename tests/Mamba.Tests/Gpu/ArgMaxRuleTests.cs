using Mamba.Compute.Cuda;

namespace Mamba.Tests.Gpu;

/// <summary>
/// The native argmax rule (mamba.h, blocks/argmax.cuh) on the rows where it matters: the index of the largest value;
/// NaN never wins; ties go to the lowest index; -inf is a value (an all -inf row gives 0); a row with no non-NaN value
/// gives -1. Read from the device result buffer, as the captured decode step reads it, so the raw -1 is visible.
/// </summary>
[Category("Gpu")]
public class ArgMaxRuleTests : GpuOpTestBase
{
    private const float Nan = float.NaN;
    private const float NegInf = float.NegativeInfinity;
    private const float PosInf = float.PositiveInfinity;

    public static IEnumerable<TestCaseData> Rows()
    {
        yield return new TestCaseData(new[] { Nan, 1f, 3f, 3f }, 2).SetName("NaN skipped, tie to the lower index");
        yield return new TestCaseData(new[] { NegInf, NegInf, NegInf }, 0).SetName("all -inf gives 0");
        yield return new TestCaseData(new[] { Nan, NegInf, Nan }, 1).SetName("-inf beats NaN");
        yield return new TestCaseData(new[] { Nan, Nan, Nan, Nan }, -1).SetName("all NaN gives -1");
        yield return new TestCaseData(new[] { PosInf, Nan, PosInf }, 0).SetName("+inf tie to the lower index");
        yield return new TestCaseData(new[] { -2f, -1f, Nan, -1f }, 1).SetName("negative values, tie after a NaN");
    }

    [TestCaseSource(nameof(Rows))]
    public void RowFollowsTheRule(float[] row, int expected)
    {
        // Padded to many columns (NaN) so the row also crosses the kernel's 16-byte body and every thread sees only NaN.
        foreach (var dt in AllDTypes)
        {
            var padded = new float[4099];
            Array.Fill(padded, Nan);
            row.CopyTo(padded, 0);
            Assert.That(DeviceArgMax(padded, dt), Is.EqualTo(expected), $"{dt}, row at the start");
            row.CopyTo(padded, padded.Length - row.Length);
            Array.Fill(padded, Nan, 0, row.Length);
            int shifted = expected < 0 ? -1 : expected + padded.Length - row.Length;
            Assert.That(DeviceArgMax(padded, dt), Is.EqualTo(shifted), $"{dt}, row at the end");
        }
    }

    private int DeviceArgMax(float[] logits, Mamba.DType dt)
    {
        var gpu = RequireGpu();
        var l = Own(gpu.Upload(logits, dt, 1, logits.Length));
        var result = Own(gpu.AllocateUninitialized(Mamba.DType.F32, 1));  // 4 bytes that receive the int32
        gpu.ArgMaxToDevice(l, result);
        var bits = new float[1];
        gpu.Download(result, bits);  // F32: a plain copy of the bits
        return BitConverter.SingleToInt32Bits(bits[0]);
    }
}
