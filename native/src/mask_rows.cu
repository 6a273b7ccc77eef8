// x[m, :] *= mask[m] (attention mask applied to token rows).
#include "common.cuh"

namespace mamba {
template <class T>
__global__ void mask_rows_kernel(T* __restrict__ x, const float* __restrict__ mask, int64_t rows, int64_t cols) {
  int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] = from_f<T>(to_f<T>(x[i]) * mask[i / cols]);
}
}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_mask_rows(mamba_context* ctx, void* x, mamba_dtype dt, const float* mask, int64_t rows, int64_t cols) {
  return guard("mamba_mask_rows", [&] { return format("(rows %lld, cols %lld, %s)", (long long)rows, (long long)cols, dtype_name(dt)); }, [&] {
    activate(ctx);
    check_dtype(dt, "dtype");
    require(rows >= 0 && cols >= 0, "bad shape");
    if (!rows || !cols) return;
    require(x && mask, "null pointer");
    unsigned blocks = blocks_for(rows * cols, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    MAMBA_DISPATCH_DTYPE(dt, T, { mask_rows_kernel<T><<<blocks, 256, 0, ctx->stream>>>(static_cast<T*>(x), mask, rows, cols); });
    check_launch(ctx, "mask_rows_kernel");
  });
}
