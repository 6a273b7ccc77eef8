// Device buffers: allocation, zeroing, copies, and float32 upload/download through the staging workspace.
#include <algorithm>
#include "common.cuh"

using namespace mamba;

extern "C" {

MAMBA_API mamba_status mamba_buffer_alloc(mamba_context* ctx, int64_t bytes, void** out) {
  return guard("mamba_buffer_alloc", [&] { return format("(%lld bytes)", (long long)bytes); }, [&] {
    require(out != nullptr, "out is null");
    *out = nullptr;
    require(bytes >= 0, "negative size");
    activate(ctx);
    *out = device_alloc(ctx, bytes == 0 ? 16 : static_cast<size_t>(bytes), "cudaMalloc");
  });
}

MAMBA_API mamba_status mamba_buffer_free(mamba_context* ctx, void* ptr) {
  return guard("mamba_buffer_free", [] { return std::string(); }, [&] {
    if (!ptr) return;
    activate(ctx);
    check_cuda(cudaFree(ptr), "cudaFree");
  });
}

MAMBA_API mamba_status mamba_memset_zero(mamba_context* ctx, void* dst, int64_t bytes) {
  return guard("mamba_memset_zero", [&] { return format("(%lld bytes)", (long long)bytes); }, [&] {
    activate(ctx);
    require(bytes >= 0 && (dst || bytes == 0), "bad destination");
    if (bytes) check_cuda(cudaMemsetAsync(dst, 0, static_cast<size_t>(bytes), ctx->stream), "cudaMemsetAsync");
  });
}

MAMBA_API mamba_status mamba_copy_h2d(mamba_context* ctx, void* dst, const void* src, int64_t bytes) {
  return guard("mamba_copy_h2d", [&] { return format("(%lld bytes)", (long long)bytes); }, [&] {
    activate(ctx);
    require(bytes >= 0 && ((dst && src) || bytes == 0), "bad pointers");
    if (bytes) check_cuda(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, ctx->stream), "cudaMemcpyAsync h2d");
    // pageable source: the runtime has staged it before returning; pinned memory would not be, so sync.
    check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
  });
}

MAMBA_API mamba_status mamba_copy_d2h(mamba_context* ctx, void* dst, const void* src, int64_t bytes) {
  return guard("mamba_copy_d2h", [&] { return format("(%lld bytes)", (long long)bytes); }, [&] {
    activate(ctx);
    require(bytes >= 0 && ((dst && src) || bytes == 0), "bad pointers");
    if (bytes) check_cuda(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost, ctx->stream), "cudaMemcpyAsync d2h");
    check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
  });
}

MAMBA_API mamba_status mamba_copy_d2d(mamba_context* ctx, void* dst, const void* src, int64_t bytes) {
  return guard("mamba_copy_d2d", [&] { return format("(%lld bytes)", (long long)bytes); }, [&] {
    activate(ctx);
    require(bytes >= 0 && ((dst && src) || bytes == 0), "bad pointers");
    if (bytes) check_cuda(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, ctx->stream), "cudaMemcpyAsync d2d");
  });
}

MAMBA_API mamba_status mamba_upload_f32(mamba_context* ctx, const float* src, int64_t count, void* dst, mamba_dtype ddt) {
  return guard("mamba_upload_f32", [&] { return format("(%lld -> %s)", (long long)count, dtype_name(ddt)); }, [&] {
    activate(ctx);
    check_dtype(ddt, "dst_dtype");
    require(count >= 0 && ((dst && src) || count == 0), "bad pointers");
    if (!count) return;
    size_t bytes = static_cast<size_t>(count) * 4;
    if (ddt == MAMBA_DTYPE_F32) {
      check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx->stream), "cudaMemcpyAsync h2d");
    } else {
      // Staged in bounded pieces: the grow-only staging slot then never exceeds tuning::staging_elements floats, instead of
      // keeping a buffer the size of the largest weight (the embedding) for the context's lifetime. Stream order
      // makes reusing the slot safe (each copy starts after the previous conversion).
      const int64_t piece = std::min<int64_t>(count, tuning::staging_elements);
      void* stage = workspace(ctx, kWsStaging, static_cast<size_t>(piece) * 4);
      for (int64_t offset = 0; offset < count; offset += piece) {
        int64_t n = std::min<int64_t>(piece, count - offset);
        check_cuda(cudaMemcpyAsync(stage, src + offset, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice, ctx->stream), "cudaMemcpyAsync h2d");
        launch_convert(ctx, stage, MAMBA_DTYPE_F32, static_cast<char*>(dst) + offset * static_cast<int64_t>(dtype_size(ddt)), ddt, n);
      }
    }
    check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
  });
}

MAMBA_API mamba_status mamba_download_f32(mamba_context* ctx, const void* src, mamba_dtype sdt, int64_t count, float* dst) {
  return guard("mamba_download_f32", [&] { return format("(%lld from %s)", (long long)count, dtype_name(sdt)); }, [&] {
    activate(ctx);
    check_dtype(sdt, "src_dtype");
    require(count >= 0 && ((dst && src) || count == 0), "bad pointers");
    if (!count) return;
    size_t bytes = static_cast<size_t>(count) * 4;
    if (sdt == MAMBA_DTYPE_F32) {
      check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream), "cudaMemcpyAsync d2h");
    } else {
      // Bounded pieces, as in mamba_upload_f32.
      const int64_t piece = std::min<int64_t>(count, tuning::staging_elements);
      void* stage = workspace(ctx, kWsStaging, static_cast<size_t>(piece) * 4);
      for (int64_t offset = 0; offset < count; offset += piece) {
        int64_t n = std::min<int64_t>(piece, count - offset);
        launch_convert(ctx, static_cast<const char*>(src) + offset * static_cast<int64_t>(dtype_size(sdt)), sdt, stage, MAMBA_DTYPE_F32, n);
        check_cuda(cudaMemcpyAsync(dst + offset, stage, static_cast<size_t>(n) * 4, cudaMemcpyDeviceToHost, ctx->stream), "cudaMemcpyAsync d2h");
      }
    }
    check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
  });
}

}  // extern "C"
