using System.Runtime.InteropServices;

namespace Mamba.Native;

/// <summary>
/// P/Invoke declarations of libmamba (native/include/mamba.h). Blittable signatures only; every fallible
/// function returns a status that callers pass to <see cref="MambaNative.ThrowIfFailed"/>. The library is
/// located by the resolver in <see cref="MambaNative"/>; call <see cref="MambaNative.EnsureLoaded"/> first.
/// </summary>
internal static unsafe partial class NativeMethods
{
    internal const string Library = "mamba";

    [LibraryImport(Library)] internal static partial int mamba_abi_version();
    [LibraryImport(Library)] internal static partial IntPtr mamba_last_error();
    [LibraryImport(Library)] internal static partial int mamba_get_device_count(out int count);
    [LibraryImport(Library)] internal static partial int mamba_describe(int device, byte* buffer, long capacity, out long length);

    [LibraryImport(Library)] internal static partial int mamba_context_create(int device, out IntPtr context);
    [LibraryImport(Library)] internal static partial int mamba_context_destroy(IntPtr context);
    [LibraryImport(Library)] internal static partial int mamba_synchronize(MambaContextHandle context);
    [LibraryImport(Library)] internal static partial int mamba_mem_info(MambaContextHandle context, out long freeBytes, out long totalBytes);

    [LibraryImport(Library)] internal static partial int mamba_buffer_alloc(MambaContextHandle context, long bytes, out IntPtr pointer);
    [LibraryImport(Library)] internal static partial int mamba_buffer_free(IntPtr context, IntPtr pointer);
    [LibraryImport(Library)] internal static partial int mamba_memset_zero(MambaContextHandle context, IntPtr dst, long bytes);
    [LibraryImport(Library)] internal static partial int mamba_copy_h2d(MambaContextHandle context, IntPtr dst, void* hostSrc, long bytes);
    [LibraryImport(Library)] internal static partial int mamba_copy_d2h(MambaContextHandle context, void* hostDst, IntPtr src, long bytes);
    [LibraryImport(Library)] internal static partial int mamba_copy_d2d(MambaContextHandle context, IntPtr dst, IntPtr src, long bytes);
    [LibraryImport(Library)] internal static partial int mamba_upload_f32(MambaContextHandle context, float* hostSrc, long count, IntPtr dst, int dstDType);
    [LibraryImport(Library)] internal static partial int mamba_download_f32(MambaContextHandle context, IntPtr src, int srcDType, long count, float* hostDst);
    [LibraryImport(Library)] internal static partial int mamba_convert(MambaContextHandle context, IntPtr src, int srcDType, IntPtr dst, int dstDType, long count);

    [LibraryImport(Library)]
    internal static partial int mamba_embedding(MambaContextHandle context, IntPtr table, int tableDType, long vocab, long dim,
        int* hostIds, long count, IntPtr output, int outputDType);

    [LibraryImport(Library)]
    internal static partial int mamba_add_rmsnorm(MambaContextHandle context, IntPtr residual, int residualDType, IntPtr delta, int deltaDType,
        IntPtr weight, int weightDType, float epsilon, IntPtr output, int outputDType, long rows, long dim);

    [LibraryImport(Library)]
    internal static partial int mamba_mask_rows(MambaContextHandle context, IntPtr x, int dtype, IntPtr mask, long rows, long cols);

    [LibraryImport(Library)]
    internal static partial int mamba_linear(MambaContextHandle context, IntPtr x, int xDType, IntPtr w, int wDType, IntPtr bias, int biasDType,
        IntPtr y, int yDType, long m, long n, long k);

    [LibraryImport(Library)]
    internal static partial int mamba_causal_conv1d_fwd(MambaContextHandle context, IntPtr xz, int actDType, IntPtr weight, int weightDType,
        IntPtr bias, int biasDType, IntPtr mask, IntPtr u, IntPtr convState, int stateDType, int batch, int length, int channels, int width);

    [LibraryImport(Library)]
    internal static partial int mamba_causal_conv1d_fwd_continue(MambaContextHandle context, IntPtr xz, int actDType, IntPtr weight, int weightDType,
        IntPtr bias, int biasDType, IntPtr u, IntPtr convState, int stateDType, int batch, int length, int channels, int width);

    [LibraryImport(Library)]
    internal static partial int mamba_causal_conv1d_update(MambaContextHandle context, IntPtr xz, int actDType, IntPtr weight, int weightDType,
        IntPtr bias, int biasDType, IntPtr convState, int stateDType, IntPtr u, int batch, int channels, int width);

    [LibraryImport(Library)]
    internal static partial int mamba_selective_scan_fwd(MambaContextHandle context, IntPtr u, IntPtr dbc, IntPtr xz, IntPtr y, int actDType,
        IntPtr dtWeight, int dtWeightDType, IntPtr dtBias, int dtBiasDType, IntPtr a, IntPtr d, IntPtr stateOut,
        int batch, int length, int channels, int dState, int dtRank);

    [LibraryImport(Library)]
    internal static partial int mamba_selective_scan_continue(MambaContextHandle context, IntPtr u, IntPtr dbc, IntPtr xz, IntPtr y, int actDType,
        IntPtr dtWeight, int dtWeightDType, IntPtr dtBias, int dtBiasDType, IntPtr a, IntPtr d, IntPtr state,
        int batch, int length, int channels, int dState, int dtRank);

    [LibraryImport(Library)]
    internal static partial int mamba_selective_state_update(MambaContextHandle context, IntPtr u, IntPtr dbc, IntPtr xz, IntPtr y, int actDType,
        IntPtr dtWeight, int dtWeightDType, IntPtr dtBias, int dtBiasDType, IntPtr a, IntPtr d, IntPtr state,
        int batch, int channels, int dState, int dtRank);

    [LibraryImport(Library)]
    internal static partial int mamba_argmax(MambaContextHandle context, IntPtr logits, int dtype, long rows, long cols, int* hostResult);

    [LibraryImport(Library)]
    internal static partial int mamba_embedding_device_ids(MambaContextHandle context, IntPtr table, int tableDType, long vocab, long dim,
        IntPtr deviceIds, long count, IntPtr output, int outputDType);

    [LibraryImport(Library)]
    internal static partial int mamba_argmax_device(MambaContextHandle context, IntPtr logits, int dtype, long rows, long cols, IntPtr deviceResult);

    [LibraryImport(Library)] internal static partial int mamba_graph_begin_capture(MambaContextHandle context);
    [LibraryImport(Library)] internal static partial int mamba_graph_end_capture(MambaContextHandle context, IntPtr* graph);
    [LibraryImport(Library)]
    internal static partial int mamba_graph_launch(MambaContextHandle context, IntPtr graph, void* hostIn, IntPtr deviceIn, long inBytes,
        void* hostOut, IntPtr deviceOut, long outBytes);
    [LibraryImport(Library)] internal static partial int mamba_graph_destroy(IntPtr context, IntPtr graph);

    [LibraryImport(Library)] internal static partial int mamba_decode_plan_create(MambaContextHandle context, DecodeModelDesc* model, IntPtr* plan);
    [LibraryImport(Library)] internal static partial int mamba_decode_plan_step(MambaContextHandle context, IntPtr plan, int token, int* nextToken);
    [LibraryImport(Library)] internal static partial int mamba_decode_plan_destroy(IntPtr context, IntPtr plan);

    [LibraryImport(Library)]
    internal static partial int mamba_cross_entropy_sum(MambaContextHandle context, IntPtr logits, int dtype, long rows, long cols,
        int* hostTargets, int ignoreIndex, out double lossSum, out long count);
}

/// <summary>One layer of <see cref="DecodeModelDesc"/> (C <c>mamba_decode_layer</c>): device addresses, optional ones zero.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct DecodeLayerDesc
{
    public IntPtr NormWeight, InProjWeight, InProjBias, ConvWeight, ConvBias, ConvState, XProjWeight, DtProjWeight, DtProjBias, A, D, SsmState,
        OutProjWeight, OutProjBias;
}

/// <summary>C <c>mamba_decode_model</c>: what the fused batch-1 decode step reads and updates.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct DecodeModelDesc
{
    public int NumLayers, Hidden, Inner, State, Rank, ConvKernel, Vocab, DType, ConvStateDType;
    public float Eps;
    public IntPtr Embedding, NormF, LmHead;
    public unsafe DecodeLayerDesc* Layers;
}

