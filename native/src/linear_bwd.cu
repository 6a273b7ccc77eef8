// Backward of y = x·wᵀ + b (spec §12.3) through cuBLAS (fp32 accumulation, CUBLAS_COMPUTE_32F, TF32 never enabled):
//   grad_x [m, k] = grad_y·w             (column-major: gemm(N, N, k, m, n, w, grad_y)), overwritten or beta = 1;
//   grad_w [n, k] f32 += grad_yᵀ·x       (column-major: gemm(N, T, k, n, m, x, grad_y), beta = 1, f32 C);
//   grad_b [n] f32 += Σ_rows grad_y      (column sums over fixed row slices, then the slices in order: deterministic).
// The GEMMs run in w's dtype: grad_y and x in another dtype are converted to it first (an f32 grad_y on 16-bit weights
// is rounded, as the forward rounds an f32 x). grad_x in a dtype cuBLAS cannot write for that operand type goes
// through an f32 workspace and an (add-)convert kernel.
#include "common.cuh"

#include <algorithm>

namespace mamba {

constexpr int kBiasSliceRows = 128;
constexpr int kBiasMaxSlices = 256;

__global__ void linear_bias_partial_kernel(const void* __restrict__ gy, mamba_dtype gdt, int64_t rows, int64_t cols, int64_t rows_per_slice,
                                           float* __restrict__ partial) {
  const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (j >= cols) return;
  const int64_t r0 = blockIdx.y * rows_per_slice, r1 = std::min<int64_t>(rows, r0 + rows_per_slice);
  float acc = 0.f;
  for (int64_t r = r0; r < r1; ++r) acc += load_any(gy, gdt, (size_t)r * cols + j);
  partial[(size_t)blockIdx.y * cols + j] = acc;
}

__global__ void linear_bias_add_kernel(const float* __restrict__ partial, int slices, int64_t cols, float* __restrict__ out) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < cols; j += (int64_t)gridDim.x * blockDim.x) {
    float acc = 0.f;
    for (int s = 0; s < slices; ++s) acc += partial[(size_t)s * cols + j];
    out[j] += acc;
  }
}

// dst (any dtype) = (accumulate ? dst : 0) + src, one rounding.
__global__ void linear_store_grad_kernel(const float* __restrict__ src, void* __restrict__ dst, mamba_dtype ddt, int64_t n, int accumulate) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float v = src[i];
    if (accumulate) v += load_any(dst, ddt, i);
    store_any(dst, ddt, i, v);
  }
}

static unsigned grid_stride_blocks(int64_t n) {
  unsigned b = blocks_for(n, 256);
  return b > 65535u * 4 ? 65535u * 4 : b;
}

static void linear_bwd(mamba_context* ctx, const mamba_linear_params& p, const mamba_linear_grads& g) {
  activate(ctx);
  check_dtype(p.x_dtype, "x_dtype");
  check_dtype(p.w_dtype, "w_dtype");
  check_dtype(g.grad_y_dtype, "grad_y_dtype");
  if (g.grad_x) check_dtype(g.grad_x_dtype, "grad_x_dtype");
  require(p.m >= 0 && p.n > 0 && p.k > 0, "bad shape");
  if (!p.m) return;
  require(p.x && p.w && g.grad_y, "null pointer");
  const int64_t m = p.m, n = p.n, k = p.k;
  const mamba_dtype cdt = p.w_dtype;
  const void* gy = g.grad_y;
  if (g.grad_y_dtype != cdt) {
    void* t = workspace(ctx, kWsConvertB, static_cast<size_t>(m * n) * dtype_size(cdt));
    launch_convert(ctx, g.grad_y, g.grad_y_dtype, t, cdt, m * n);
    gy = t;
  }
  const void* x = p.x;
  if (p.x_dtype != cdt) {
    void* t = workspace(ctx, kWsConvertA, static_cast<size_t>(m * k) * dtype_size(cdt));
    launch_convert(ctx, p.x, p.x_dtype, t, cdt, m * k);
    x = t;
  }
  // grad_w (f32) += grad_yᵀ·x (skipped for a frozen weight: NULL)
  if (g.grad_w) gemm_ex(ctx, CUBLAS_OP_N, CUBLAS_OP_T, k, n, m, x, cdt, k, gy, cdt, n, 1.f, g.grad_w, MAMBA_DTYPE_F32, k);
  // grad_b (f32) += Σ_rows grad_y (as rounded)
  if (g.grad_bias) {
    const int slices = static_cast<int>(std::min<int64_t>(kBiasMaxSlices, (m + kBiasSliceRows - 1) / kBiasSliceRows));
    const int64_t per = (m + slices - 1) / slices;
    float* partial = static_cast<float*>(workspace(ctx, kWsTrainB, static_cast<size_t>(slices) * n * 4));
    dim3 grid(blocks_for(n, 256), static_cast<unsigned>(slices));
    linear_bias_partial_kernel<<<grid, 256, 0, ctx->stream>>>(gy, cdt, m, n, per, partial);
    check_launch(ctx, "linear_bias_partial_kernel");
    linear_bias_add_kernel<<<grid_stride_blocks(n), 256, 0, ctx->stream>>>(partial, slices, n, g.grad_bias);
    check_launch(ctx, "linear_bias_add_kernel");
  }
  // grad_x = grad_y·w (or += it)
  if (g.grad_x) {
    const float beta = g.accumulate_grad_x ? 1.f : 0.f;
    const bool direct = g.grad_x_dtype == cdt || g.grad_x_dtype == MAMBA_DTYPE_F32;  // what cublasGemmEx can write
    if (direct) {
      gemm_ex(ctx, CUBLAS_OP_N, CUBLAS_OP_N, k, m, n, p.w, cdt, k, gy, cdt, n, beta, g.grad_x, g.grad_x_dtype, k);
    } else {
      float* t = static_cast<float*>(workspace(ctx, kWsTrainA, static_cast<size_t>(m * k) * 4));
      gemm_ex(ctx, CUBLAS_OP_N, CUBLAS_OP_N, k, m, n, p.w, cdt, k, gy, cdt, n, 0.f, t, MAMBA_DTYPE_F32, k);
      linear_store_grad_kernel<<<grid_stride_blocks(m * k), 256, 0, ctx->stream>>>(t, g.grad_x, g.grad_x_dtype, m * k, g.accumulate_grad_x ? 1 : 0);
      check_launch(ctx, "linear_store_grad_kernel");
    }
  }
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_linear_bwd(mamba_context* ctx, const mamba_linear_params* params, const mamba_linear_grads* grads) {
  auto shapes = [&] {
    const mamba_linear_params* p = params;
    return params_ok(p) ? format("(x [%lld, %lld] %s, w [%lld, %lld] %s)", (long long)p->m, (long long)p->k, dtype_name(p->x_dtype), (long long)p->n,
                                 (long long)p->k, dtype_name(p->w_dtype))
                        : std::string();
  };
  return guard("mamba_linear_bwd", shapes, [&] {
    const mamba_linear_params& p = check_params(params, "mamba_linear_params");
    const mamba_linear_grads& g = check_params(grads, "mamba_linear_grads");
    linear_bwd(ctx, p, g);
  });
}
