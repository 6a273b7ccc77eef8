using System.Runtime.InteropServices;

namespace Mamba.Native;

/// <summary>
/// P/Invoke declarations of libmamba (native/include/mamba.h); its parameter structs are mirrored in NativeStructs.cs
/// and passed by reference. Blittable signatures only; every fallible function returns a status that callers pass to
/// <see cref="MambaNative.ThrowIfFailed"/>. The library is located by the resolver in <see cref="MambaNative"/>; call
/// <see cref="MambaNative.EnsureLoaded"/> first.
/// </summary>
internal static unsafe partial class NativeMethods
{
    internal const string Library = "mamba";

    [LibraryImport(Library)] internal static partial int mamba_abi_version();
    [LibraryImport(Library)] internal static partial IntPtr mamba_last_error();
    [LibraryImport(Library)] internal static partial int mamba_get_device_count(out int count);
    [LibraryImport(Library)] internal static partial int mamba_describe(int device, byte* buffer, long capacity, out long length);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int mamba_struct_layout(string name, out long size, long* offsets, IntPtr* fieldNames, int capacity, out int count);
    [LibraryImport(Library)] internal static partial IntPtr mamba_struct_name(int index);

    [LibraryImport(Library)] internal static partial int mamba_context_create(int device, out IntPtr context);
    [LibraryImport(Library)] internal static partial int mamba_context_destroy(IntPtr context);
    [LibraryImport(Library)] internal static partial int mamba_synchronize(MambaContextHandle context);
    [LibraryImport(Library)] internal static partial int mamba_mem_info(MambaContextHandle context, out long freeBytes, out long totalBytes);
    [LibraryImport(Library)]
    internal static partial int mamba_debug_inject_alloc_failures(MambaContextHandle context, long skip, long count, out long injectedTotal);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int mamba_debug_set_tuning(MambaContextHandle context, string name, long value);

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

    [LibraryImport(Library)] internal static partial int mamba_add_rmsnorm(MambaContextHandle context, in AddRmsNormParams parameters);

    [LibraryImport(Library)]
    internal static partial int mamba_mask_rows(MambaContextHandle context, IntPtr x, int dtype, IntPtr mask, long rows, long cols);

    [LibraryImport(Library)]
    internal static partial int mamba_scale_add(MambaContextHandle context, IntPtr x, int xDType, float alpha, IntPtr y, int yDType, float beta, long count);

    [LibraryImport(Library)] internal static partial int mamba_linear(MambaContextHandle context, in LinearParams parameters);

    [LibraryImport(Library)] internal static partial int mamba_causal_conv1d_fwd(MambaContextHandle context, in CausalConv1dParams parameters);
    [LibraryImport(Library)] internal static partial int mamba_causal_conv1d_fwd_continue(MambaContextHandle context, in CausalConv1dParams parameters);
    [LibraryImport(Library)] internal static partial int mamba_causal_conv1d_update(MambaContextHandle context, in CausalConv1dParams parameters);

    [LibraryImport(Library)] internal static partial int mamba_selective_scan_fwd(MambaContextHandle context, in SelectiveScanParams parameters);
    [LibraryImport(Library)] internal static partial int mamba_selective_scan_continue(MambaContextHandle context, in SelectiveScanParams parameters);
    [LibraryImport(Library)] internal static partial int mamba_selective_state_update(MambaContextHandle context, in SelectiveScanParams parameters);

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

    // ---- training (backward) ops
    [LibraryImport(Library)]
    internal static partial int mamba_embedding_bwd(MambaContextHandle context, int* hostIds, long count, IntPtr gradOut, long vocab, long dim, IntPtr gradTable);
    [LibraryImport(Library)] internal static partial int mamba_linear_cross_entropy_bwd(MambaContextHandle context, in LinearCrossEntropyParams parameters);
    [LibraryImport(Library)]
    internal static partial int mamba_add_rmsnorm_bwd(MambaContextHandle context, in AddRmsNormParams parameters, in AddRmsNormGrads grads);
    [LibraryImport(Library)] internal static partial int mamba_linear_bwd(MambaContextHandle context, in LinearParams parameters, in LinearGrads grads);
    [LibraryImport(Library)]
    internal static partial int mamba_causal_conv1d_bwd(MambaContextHandle context, in CausalConv1dParams parameters, in CausalConv1dGrads grads);
    [LibraryImport(Library)]
    internal static partial int mamba_selective_scan_bwd(MambaContextHandle context, in SelectiveScanParams parameters, in SelectiveScanGrads grads);
    [LibraryImport(Library)] internal static partial int mamba_sum_of_squares(MambaContextHandle context, IntPtr x, long count, out double result);
    [LibraryImport(Library)] internal static partial int mamba_adamw_step(MambaContextHandle context, in AdamWParams parameters);
}
