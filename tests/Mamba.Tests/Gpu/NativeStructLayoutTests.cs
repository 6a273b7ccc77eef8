using System.Reflection;
using System.Runtime.InteropServices;
using Mamba.Native;

namespace Mamba.Tests.Gpu;

/// <summary>
/// The C# mirrors of mamba.h's parameter structs (managed/Mamba/Native/NativeStructs.cs) against the layout the loaded
/// library was compiled with (mamba_struct_layout): size, field order, names and offsets; and the library's refusal of
/// a struct_size or reserved field it does not know. Needs only the library, not a device (CI loads it without a
/// driver), so it has no Gpu category; ignored with the reason when the library cannot be loaded.
/// </summary>
public class NativeStructLayoutTests
{
    /// <summary>Every struct that crosses the ABI, by its C name.</summary>
    private static readonly Dictionary<string, Type> Mirrors = new()
    {
        ["mamba_add_rmsnorm_params"] = typeof(AddRmsNormParams),
        ["mamba_linear_params"] = typeof(LinearParams),
        ["mamba_causal_conv1d_params"] = typeof(CausalConv1dParams),
        ["mamba_selective_scan_params"] = typeof(SelectiveScanParams),
        ["mamba_decode_layer"] = typeof(DecodeLayerDesc),
        ["mamba_decode_model"] = typeof(DecodeModelDesc),
        ["mamba_add_rmsnorm_grads"] = typeof(AddRmsNormGrads),
        ["mamba_linear_grads"] = typeof(LinearGrads),
        ["mamba_causal_conv1d_grads"] = typeof(CausalConv1dGrads),
        ["mamba_selective_scan_grads"] = typeof(SelectiveScanGrads),
        ["mamba_linear_cross_entropy_params"] = typeof(LinearCrossEntropyParams),
        ["mamba_adamw_params"] = typeof(AdamWParams),
    };

    public static IEnumerable<string> MirroredNames => Mirrors.Keys;

    [OneTimeSetUp]
    public void LoadLibrary()
    {
        if (!MambaNative.TryEnsureLoaded(out var error)) Assert.Ignore($"libmamba cannot be loaded here: {error}");
    }

    [Test]
    public void EveryNativeStructHasAMirror()
    {
        Assert.That(MambaNative.NativeStructNames(), Is.EquivalentTo(Mirrors.Keys));
    }

    [TestCaseSource(nameof(MirroredNames))]
    public void MirrorHasTheNativeLayout(string name)
    {
        var type = Mirrors[name];
        var (size, nativeFields) = MambaNative.NativeStructLayout(name);
        Assert.That(Marshal.SizeOf(type), Is.EqualTo(size), $"{name}: size");
        var fields = type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)
            .Select(f => (Name: f.Name, Offset: (long)Marshal.OffsetOf(type, f.Name)))
            .OrderBy(f => f.Offset)
            .ToArray();
        Assert.That(fields.Select(f => Normalize(f.Name)), Is.EqualTo(nativeFields.Select(f => Normalize(f.Name))), $"{name}: fields in order");
        Assert.That(fields.Select(f => f.Offset), Is.EqualTo(nativeFields.Select(f => f.Offset)), $"{name}: offsets");
        var made = type.GetConstructor(Type.EmptyTypes)!.Invoke(null);
        Assert.That(type.GetField("StructSize")!.GetValue(made), Is.EqualTo((int)size), $"{name}: the constructor's StructSize");
    }

    [Test]
    public void UnknownStructNameIsAnInvalidArgument()
    {
        var ex = Assert.Throws<MambaInvalidArgumentException>(() => MambaNative.NativeStructLayout("mamba_no_such_params"));
        Assert.That(ex!.NativeMessage, Does.Contain("mamba_no_such_params"));
    }

    [Test]
    public void AnotherStructSizeIsRefusedBeforeTheContextIsUsed()
    {
        // No context: the struct is checked first, so this needs no device. A right size then fails on the context.
        using var none = new MambaContextHandle();
        var linear = new LinearParams();
        Assert.That(Status(() => NativeMethods.mamba_linear(none, in linear)), Does.Contain("context is null"));
        linear.StructSize -= 8;
        Assert.That(Status(() => NativeMethods.mamba_linear(none, in linear)), Does.Contain("mamba_linear_params.struct_size"));
        linear = new LinearParams { Reserved = 1 };
        Assert.That(Status(() => NativeMethods.mamba_linear(none, in linear)), Does.Contain("reserved must be 0"));

        var norm = new AddRmsNormParams { StructSize = 0 };
        Assert.That(Status(() => NativeMethods.mamba_add_rmsnorm(none, in norm)), Does.Contain("struct_size"));
        var conv = new CausalConv1dParams();
        conv.StructSize += 8;
        Assert.That(Status(() => NativeMethods.mamba_causal_conv1d_fwd(none, in conv)), Does.Contain("struct_size"));
        Assert.That(Status(() => NativeMethods.mamba_causal_conv1d_fwd_continue(none, in conv)), Does.Contain("struct_size"));
        Assert.That(Status(() => NativeMethods.mamba_causal_conv1d_update(none, in conv)), Does.Contain("struct_size"));
        var scan = new SelectiveScanParams { StructSize = 4 };
        Assert.That(Status(() => NativeMethods.mamba_selective_scan_fwd(none, in scan)), Does.Contain("struct_size"));
        Assert.That(Status(() => NativeMethods.mamba_selective_scan_continue(none, in scan)), Does.Contain("struct_size"));
        Assert.That(Status(() => NativeMethods.mamba_selective_state_update(none, in scan)), Does.Contain("struct_size"));
    }

    /// <summary>Runs a native call that must fail with MAMBA_ERR_INVALID_ARGUMENT; returns its message.</summary>
    private static string Status(Func<int> call)
    {
        int status = call();
        string message = Marshal.PtrToStringUTF8(NativeMethods.mamba_last_error()) ?? "";
        Assert.That((MambaStatus)status, Is.EqualTo(MambaStatus.InvalidArgument), message);
        return message;
    }

    /// <summary>C snake_case and C# PascalCase names compare equal: lower case, no underscores (dt_weight_dtype = DtWeightDType).</summary>
    private static string Normalize(string name) => name.Replace("_", "", StringComparison.Ordinal).ToLowerInvariant();
}
