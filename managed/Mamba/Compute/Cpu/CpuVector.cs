using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Mamba.Compute.Cpu;

/// <summary>
/// The operations on one float vector width, for kernels written once and specialised per width by the JIT: a method
/// generic over <c>&lt;TVec, TOps&gt; where TOps : IVectorOps&lt;TVec&gt;</c> is compiled separately for
/// (Vector512&lt;float&gt;, <see cref="Vector512Ops"/>) (16 lanes, AVX-512) and (Vector256&lt;float&gt;,
/// <see cref="Vector256Ops"/>) (8 lanes, AVX2), and every member inlines to the instruction the hand-written
/// Vector512 / Vector256 code used, so both instantiations keep that code's bits and speed. The operator-struct
/// pattern of System.Numerics.Tensors (whose own <c>ISimdVector</c> is internal).
/// <para>
/// The vectors stay the runtime's types on purpose: a wrapper struct around them left extra struct temporaries in the
/// loops, so the JIT stopped hoisting the kernels' constant vectors out of them (every constant reloaded each
/// iteration) and, past its inlining budget per method, left member calls in them (20× slower). The members are still
/// calls until inlined and unoptimized (Tier-0) code inlines nothing, so the kernels are compiled optimized from their
/// first call (AggressiveOptimization, where a stackalloc does not already force it). Check a change with
/// DOTNET_JitDisasm: no call to a member may remain in a kernel.
/// </para>
/// </summary>
internal unsafe interface IVectorOps<TVec> where TVec : struct
{
    /// <summary>Lanes per vector.</summary>
    static abstract int Count { get; }

    /// <summary>Whether the JIT maps this width to hardware instructions (else it is emulated, slowly).</summary>
    static abstract bool IsHardwareAccelerated { get; }

    static abstract TVec Zero { get; }

    static abstract TVec One { get; }

    /// <summary>Every lane set to <paramref name="value"/>.</summary>
    static abstract TVec Create(float value);

    static abstract TVec Load(float* source);

    static abstract void Store(TVec value, float* destination);

    /// <summary>One lane (by index: the vector goes through memory).</summary>
    static abstract float GetElement(TVec value, int lane);

    static abstract TVec Add(TVec left, TVec right);

    static abstract TVec Subtract(TVec left, TVec right);

    static abstract TVec Multiply(TVec left, TVec right);

    static abstract TVec Divide(TVec left, TVec right);

    static abstract TVec Negate(TVec value);

    static abstract TVec BitwiseAnd(TVec left, TVec right);

    /// <summary>a·b + c with one rounding.</summary>
    static abstract TVec FusedMultiplyAdd(TVec a, TVec b, TVec c);

    /// <summary>
    /// Min(Max(value, min), max) lane by lane. The bounds are floats so that the JIT sees constant vectors where the
    /// runtime's Min and Max are expanded: with a constant operand they are one vminps/vmaxps, without one a longer
    /// sequence that orders −0 below +0.
    /// </summary>
    static abstract TVec Clamp(TVec value, float min, float max);

    /// <summary>To the nearest integer, ties to even.</summary>
    static abstract TVec Round(TVec value);

    /// <summary>All bits set in the lanes where left == right.</summary>
    static abstract TVec EqualsMask(TVec left, TVec right);

    /// <summary>All bits set in the lanes where left &gt; right.</summary>
    static abstract TVec GreaterThanMask(TVec left, TVec right);

    /// <summary>Bitwise: <paramref name="whenTrue"/> where <paramref name="mask"/> has bits set, else <paramref name="whenFalse"/>.</summary>
    static abstract TVec ConditionalSelect(TVec mask, TVec whenTrue, TVec whenFalse);

    /// <summary>The lanes' sum, in the runtime's order for this width.</summary>
    static abstract float Sum(TVec value);

    /// <summary>The two 256-bit halves added lane by lane (the vector itself at 8 lanes): the first step of a dot product's reduction.</summary>
    static abstract Vector256<float> FoldTo256(TVec value);

    /// <summary>value·2^k for integral k in [−126, 127] (exact: no rounding but that of a subnormal result).</summary>
    static abstract TVec ScaleByPowerOfTwo(TVec value, TVec k);

    /// <summary>x = m·2^e for finite x &gt; 0: returns m in [1, 2) and e as a float.</summary>
    static abstract TVec SplitExponent(TVec x, out TVec exponent);
}

/// <summary>16 float lanes (Vector512: AVX-512 on x64).</summary>
internal readonly unsafe struct Vector512Ops : IVectorOps<Vector512<float>>
{
    public static int Count => Vector512<float>.Count;

    public static bool IsHardwareAccelerated => Vector512.IsHardwareAccelerated;

    public static Vector512<float> Zero => Vector512<float>.Zero;

    public static Vector512<float> One => Vector512<float>.One;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Create(float value) => Vector512.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(float* source) => Vector512.Load(source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector512<float> value, float* destination) => value.Store(destination);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float GetElement(Vector512<float> value, int lane) => value[lane];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Add(Vector512<float> left, Vector512<float> right) => left + right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Subtract(Vector512<float> left, Vector512<float> right) => left - right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Multiply(Vector512<float> left, Vector512<float> right) => left * right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Divide(Vector512<float> left, Vector512<float> right) => left / right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Negate(Vector512<float> value) => -value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> BitwiseAnd(Vector512<float> left, Vector512<float> right) => left & right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> FusedMultiplyAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Clamp(Vector512<float> value, float min, float max) =>
        Vector512.Min(Vector512.Max(value, Vector512.Create(min)), Vector512.Create(max));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Round(Vector512<float> value) => Vector512.Round(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> EqualsMask(Vector512<float> left, Vector512<float> right) => Vector512.Equals(left, right);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> GreaterThanMask(Vector512<float> left, Vector512<float> right) => Vector512.GreaterThan(left, right);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ConditionalSelect(Vector512<float> mask, Vector512<float> whenTrue, Vector512<float> whenFalse) =>
        Vector512.ConditionalSelect(mask, whenTrue, whenFalse);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> value) => Vector512.Sum(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> FoldTo256(Vector512<float> value) => value.GetLower() + value.GetUpper();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ScaleByPowerOfTwo(Vector512<float> value, Vector512<float> k)
    {
        // vscalefps: one instruction, exact like the multiply by a built power of two.
        if (Avx512F.IsSupported) return Avx512F.Scale(value, k);
        return value * Vector512.ShiftLeft(Vector512.ConvertToInt32Native(k) + Vector512.Create(127), 23).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> SplitExponent(Vector512<float> x, out Vector512<float> exponent)
    {
        var bits = x.AsInt32();
        exponent = Vector512.ConvertToSingle(Vector512.ShiftRightArithmetic(bits, 23) - Vector512.Create(127));
        return ((bits & Vector512.Create(0x007FFFFF)) | Vector512.Create(0x3F800000)).AsSingle();
    }
}

/// <summary>8 float lanes (Vector256: AVX2 on x64).</summary>
internal readonly unsafe struct Vector256Ops : IVectorOps<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;

    public static bool IsHardwareAccelerated => Vector256.IsHardwareAccelerated;

    public static Vector256<float> Zero => Vector256<float>.Zero;

    public static Vector256<float> One => Vector256<float>.One;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Create(float value) => Vector256.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(float* source) => Vector256.Load(source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector256<float> value, float* destination) => value.Store(destination);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float GetElement(Vector256<float> value, int lane) => value[lane];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Add(Vector256<float> left, Vector256<float> right) => left + right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Subtract(Vector256<float> left, Vector256<float> right) => left - right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Multiply(Vector256<float> left, Vector256<float> right) => left * right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Divide(Vector256<float> left, Vector256<float> right) => left / right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Negate(Vector256<float> value) => -value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> BitwiseAnd(Vector256<float> left, Vector256<float> right) => left & right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> FusedMultiplyAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Clamp(Vector256<float> value, float min, float max) =>
        Vector256.Min(Vector256.Max(value, Vector256.Create(min)), Vector256.Create(max));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Round(Vector256<float> value) => Vector256.Round(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> EqualsMask(Vector256<float> left, Vector256<float> right) => Vector256.Equals(left, right);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> GreaterThanMask(Vector256<float> left, Vector256<float> right) => Vector256.GreaterThan(left, right);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ConditionalSelect(Vector256<float> mask, Vector256<float> whenTrue, Vector256<float> whenFalse) =>
        Vector256.ConditionalSelect(mask, whenTrue, whenFalse);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector256<float> value) => Vector256.Sum(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> FoldTo256(Vector256<float> value) => value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ScaleByPowerOfTwo(Vector256<float> value, Vector256<float> k) =>
        // The native conversion is one instruction (ConvertToInt32's saturating form is four); k is integral and in range.
        value * Vector256.ShiftLeft(Vector256.ConvertToInt32Native(k) + Vector256.Create(127), 23).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> SplitExponent(Vector256<float> x, out Vector256<float> exponent)
    {
        var bits = x.AsInt32();
        exponent = Vector256.ConvertToSingle(Vector256.ShiftRightArithmetic(bits, 23) - Vector256.Create(127));
        return ((bits & Vector256.Create(0x007FFFFF)) | Vector256.Create(0x3F800000)).AsSingle();
    }
}

/// <summary>The widest float vector the kernels use on this machine, for the backend's description.</summary>
internal static class CpuVectorWidth
{
    /// <summary>"AVX-512" (16-lane scan and GEMM), "AVX2" (8 lanes) or "scalar" (neither width accelerated).</summary>
    public static string InstructionSet =>
        Vector512Ops.IsHardwareAccelerated ? "AVX-512" : Vector256Ops.IsHardwareAccelerated ? "AVX2" : "scalar";
}
