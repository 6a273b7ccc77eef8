// dtype conversion f32 <-> bf16/f16 (device to device), round to nearest even.
#include "common.cuh"

namespace mamba {

template <class TS, class TD>
__global__ void convert_kernel(const TS* __restrict__ src, TD* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = from_f<TD>(to_f<TS>(src[i]));
}

void launch_convert(mamba_context* ctx, const void* src, mamba_dtype sdt, void* dst, mamba_dtype ddt, int64_t count) {
  if (count <= 0) return;
  if (sdt == ddt) {
    if (src != dst)
      check_cuda(cudaMemcpyAsync(dst, src, static_cast<size_t>(count) * dtype_size(sdt), cudaMemcpyDeviceToDevice, ctx->stream), "convert copy");
    return;
  }
  unsigned blocks = blocks_for(count, 256);
  if (blocks > 65535u * 4) blocks = 65535u * 4;
  MAMBA_DISPATCH_DTYPE(sdt, TS, MAMBA_DISPATCH_DTYPE(ddt, TD, {
    convert_kernel<TS, TD><<<blocks, 256, 0, ctx->stream>>>(static_cast<const TS*>(src), static_cast<TD*>(dst), count);
  }));
  check_launch(ctx, "convert_kernel");
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_convert(mamba_context* ctx, const void* src, mamba_dtype sdt, void* dst, mamba_dtype ddt, int64_t count) {
  return guard("mamba_convert", [&] { return format("(%lld, %s -> %s)", (long long)count, dtype_name(sdt), dtype_name(ddt)); }, [&] {
    activate(ctx);
    check_dtype(sdt, "src_dtype");
    check_dtype(ddt, "dst_dtype");
    require(count >= 0 && ((src && dst) || count == 0), "bad pointers");
    require(src != dst || sdt == ddt, "in-place conversion between different dtypes");
    launch_convert(ctx, src, sdt, dst, ddt, count);
  });
}
