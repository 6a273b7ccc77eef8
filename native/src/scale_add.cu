// y = alpha·x + beta·y elementwise (any dtype of x and y; math in fp32, one rounding into y). The LoRA path uses it
// to scale its rank-r activations and to add a low-rank product into a layer's output. beta = 0 writes alpha·x
// without reading y (so y may hold NaN), and x may alias y.
#include "common.cuh"

namespace mamba {
template <class TX, class TY>
__global__ void scale_add_kernel(const TX* x, TY* y, float alpha, float beta, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float xv = alpha * to_f<TX>(x[i]);
    y[i] = from_f<TY>(beta == 0.f ? xv : fmaf(beta, to_f<TY>(y[i]), xv));
  }
}
}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_scale_add(mamba_context* ctx, const void* x, mamba_dtype x_dtype, float alpha, void* y, mamba_dtype y_dtype,
                                                  float beta, int64_t count) {
  return guard("mamba_scale_add", [&] { return format("(count %lld, %s -> %s)", (long long)count, dtype_name(x_dtype), dtype_name(y_dtype)); }, [&] {
    activate(ctx);
    check_dtype(x_dtype, "x_dtype");
    check_dtype(y_dtype, "y_dtype");
    require(count >= 0, "bad shape");
    if (!count) return;
    require(x && y, "null pointer");
    unsigned blocks = blocks_for(count, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    MAMBA_DISPATCH_DTYPE(x_dtype, TX, {
      MAMBA_DISPATCH_DTYPE(y_dtype, TY, {
        scale_add_kernel<TX, TY><<<blocks, 256, 0, ctx->stream>>>(static_cast<const TX*>(x), static_cast<TY*>(y), alpha, beta, count);
      });
    });
    check_launch(ctx, "scale_add_kernel");
  });
}
