using System.Runtime.Intrinsics;
using Mamba.Compute.Cpu;

namespace Mamba.Tests.Cpu;

/// <summary>The width-generic vector math and the backend's description of the width that runs.</summary>
public class CpuVectorTests
{
    [Test]
    public void DescriptionNamesTheInstructionSetAndThreads()
    {
        string expected = Vector512.IsHardwareAccelerated ? "AVX-512" : Vector256.IsHardwareAccelerated ? "AVX2" : "scalar";
        using var backend = new CpuBackend(threads: 3);
        Assert.That(backend.Description, Is.EqualTo($"CPU (C#, float32, {expected}, 3 threads)"));
    }

    /// <summary>
    /// Exp, Softplus and Silu have one body for both widths, so a lane's result does not depend on the width it ran
    /// at (the scan's output is the same with AVX-512 and with AVX2). Needs both widths accelerated.
    /// </summary>
    [Test]
    public unsafe void VectorMathGivesTheSameBitsAtBothWidths()
    {
        if (!Vector512.IsHardwareAccelerated || !Vector256.IsHardwareAccelerated)
            Assert.Ignore("needs AVX-512 and AVX2");
        var rng = new Random(12);
        // The clamp bounds of exp, softplus's threshold (20), ±0, tiny and huge values, then random ones.
        float[] special = [0f, -0f, 1e-30f, -1e-30f, 1e-8f, 20f, 20.000002f, 19.999998f, -87.3f, -87.4f, 88.3f, 88.4f, 1e30f, -1e30f, 1f, -1f];
        var input = new float[1024];
        special.CopyTo(input, 0);
        for (int i = special.Length; i < input.Length; i++) input[i] = (float)((rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-6, 3)));
        var wide = new float[input.Length];
        var narrow = new float[input.Length];
        foreach (var op in new[] { "exp", "softplus", "silu" })
        {
            fixed (float* x = input, y16 = wide, y8 = narrow)
            {
                for (int i = 0; i < input.Length; i += 16)
                    Vector512Ops.Store(Apply<Vector512<float>, Vector512Ops>(op, Vector512.Load(x + i)), y16 + i);
                for (int i = 0; i < input.Length; i += 8)
                    Vector256Ops.Store(Apply<Vector256<float>, Vector256Ops>(op, Vector256.Load(x + i)), y8 + i);
            }
            for (int i = 0; i < input.Length; i++)
                Assert.That(BitConverter.SingleToInt32Bits(wide[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(narrow[i])),
                    $"{op}({input[i]:R}): 16 lanes {wide[i]:R}, 8 lanes {narrow[i]:R}");
        }
    }

    private static TVec Apply<TVec, TOps>(string op, TVec x) where TVec : struct where TOps : IVectorOps<TVec> => op switch
    {
        "exp" => CpuMath.Exp<TVec, TOps>(x),
        "softplus" => CpuMath.Softplus<TVec, TOps>(x),
        _ => CpuMath.Silu<TVec, TOps>(x),
    };
}
