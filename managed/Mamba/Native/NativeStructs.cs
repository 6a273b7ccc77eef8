using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Mamba.Native;

// Mirrors of the parameter structs of native/include/mamba.h, field for field (PascalCase of the C names). Each
// constructor sets StructSize, which the library checks against its own sizeof; NativeStructLayoutTests compares
// every size and offset with mamba_struct_layout. Optional pointers stay zero; dtypes are Mamba.DType values.

/// <summary>C <c>mamba_add_rmsnorm_params</c>: residual += delta, out = RMSNorm(residual) · weight.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AddRmsNormParams
{
    public AddRmsNormParams() => StructSize = Unsafe.SizeOf<AddRmsNormParams>();

    public int StructSize, ResidualDType, DeltaDType, WeightDType, OutDType;
    public float Epsilon;
    public long Rows, Dim;
    public IntPtr Residual, Delta, Weight, Out;
}

/// <summary>C <c>mamba_linear_params</c>: y [M, N] = x [M, K] · wᵀ (+ bias).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct LinearParams
{
    public LinearParams() => StructSize = Unsafe.SizeOf<LinearParams>();

    public int StructSize, XDType, WDType, BiasDType, YDType, Reserved;
    public long M, N, K;
    public IntPtr X, W, Bias, Y;
}

/// <summary>C <c>mamba_causal_conv1d_params</c>: the conv forward, its continuation and the decode update.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct CausalConv1dParams
{
    public CausalConv1dParams() => StructSize = Unsafe.SizeOf<CausalConv1dParams>();

    public int StructSize, ActDType, WeightDType, BiasDType, StateDType, Batch, Length, Channels, Width, Reserved;
    public IntPtr Xz, Weight, Bias, Mask, U, ConvState;
}

/// <summary>C <c>mamba_selective_scan_params</c>: the scan, its continuation and the decode state update.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SelectiveScanParams
{
    public SelectiveScanParams() => StructSize = Unsafe.SizeOf<SelectiveScanParams>();

    public int StructSize, ActDType, DtWeightDType, DtBiasDType, Batch, Length, Channels, DState, DtRank, Reserved;
    public IntPtr U, Dbc, Xz, Y, DtWeight, DtBias, A, D, State, Checkpoints;
}

/// <summary>One layer of <see cref="DecodeModelDesc"/> (C <c>mamba_decode_layer</c>): device addresses, optional ones zero.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct DecodeLayerDesc
{
    public DecodeLayerDesc() => StructSize = Unsafe.SizeOf<DecodeLayerDesc>();

    public int StructSize, Reserved;
    public IntPtr NormWeight, InProjWeight, InProjBias, ConvWeight, ConvBias, ConvState, XProjWeight, DtProjWeight, DtProjBias, A, D, SsmState,
        OutProjWeight, OutProjBias;
}

/// <summary>C <c>mamba_decode_model</c>: what the fused batch-1 decode step reads and updates.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct DecodeModelDesc
{
    public DecodeModelDesc() => StructSize = Unsafe.SizeOf<DecodeModelDesc>();

    public int StructSize, NumLayers, Hidden, Inner, State, Rank, ConvKernel, Vocab, DType, ConvStateDType;
    public float Eps;
    public int Reserved;
    public IntPtr Embedding, NormF, LmHead;
    public unsafe DecodeLayerDesc* Layers;
}

/// <summary>C <c>mamba_add_rmsnorm_grads</c>: the gradients of <c>mamba_add_rmsnorm_bwd</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AddRmsNormGrads
{
    public AddRmsNormGrads() => StructSize = Unsafe.SizeOf<AddRmsNormGrads>();

    public int StructSize, GradOutDType;
    public IntPtr GradOut, GradInput, GradWeight;
}

/// <summary>C <c>mamba_linear_grads</c>: the gradients of <c>mamba_linear_bwd</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct LinearGrads
{
    public LinearGrads() => StructSize = Unsafe.SizeOf<LinearGrads>();

    public int StructSize, GradYDType, GradXDType, AccumulateGradX;
    public IntPtr GradY, GradX, GradW, GradBias;
}

/// <summary>C <c>mamba_causal_conv1d_grads</c>: the gradients of <c>mamba_causal_conv1d_bwd</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct CausalConv1dGrads
{
    public CausalConv1dGrads() => StructSize = Unsafe.SizeOf<CausalConv1dGrads>();

    public int StructSize, GradUDType, GradXzDType, Reserved;
    public IntPtr GradU, GradXz, GradWeight, GradBias;
}

/// <summary>C <c>mamba_selective_scan_grads</c>: the gradients of <c>mamba_selective_scan_bwd</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SelectiveScanGrads
{
    public SelectiveScanGrads() => StructSize = Unsafe.SizeOf<SelectiveScanGrads>();

    public int StructSize, GradYDType, GradUDType, GradDbcDType, GradXzDType, Reserved;
    public IntPtr GradY, GradU, GradDbc, GradXz, GradDtWeight, GradDtBias, GradALog, GradD;
}

/// <summary>C <c>mamba_linear_cross_entropy_params</c>: the fused lm_head + cross-entropy backward.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct LinearCrossEntropyParams
{
    public LinearCrossEntropyParams() => StructSize = Unsafe.SizeOf<LinearCrossEntropyParams>();

    public int StructSize, HiddenDType, WeightDType, IgnoreIndex;
    public float GradScale;
    public int Reserved;
    public long Rows, Vocab, Dim;
    public IntPtr Hidden, Weight;
    public int* HostTargets;
    public IntPtr GradHidden, GradWeight;
    public double* LossSum;
    public long* Count;
}

/// <summary>C <c>mamba_adamw_params</c>: one AdamW step.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AdamWParams
{
    public AdamWParams() => StructSize = Unsafe.SizeOf<AdamWParams>();

    public int StructSize, ParamDType, NegExp;
    public float Lr, Beta1, Beta2, Eps, WeightDecay, BiasCorrection1, BiasCorrection2, GradScale;
    public int Reserved;
    public long Count;
    public IntPtr Master, Grad, M, V, Param;
}
