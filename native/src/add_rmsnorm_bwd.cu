// Backward of the fused add + RMSNorm (spec §12.2) for y = w ⊙ x·r, r = (mean(x²) + ε)^(−1/2) per row of d:
//   g x_j = r·q_j − (r³/d)·x_j·Σ_k q_k x_k with q_j = g y_j·w_j  (added to grad_input, f32);
//   g w_j = Σ_rows g y_j·x_j·r                                   (added to grad_weight, f32).
// Kernel 1: one block a row; r and Σ q·x reduced per warp, then over the warps in order (deterministic); writes
// grad_input and r per row into a workspace. Kernel 2: g w column sums over fixed row slices (partials [S][d]),
// kernel 3 adds the S partials in slice order: deterministic without atomics.
#include "common.cuh"
#include "blocks/add_rmsnorm.cuh"

#include <algorithm>

namespace mamba {

constexpr int kRmsBwdThreads = 256;
constexpr int kColSliceRows = 128;  // rows a thread sums per slice in the column reductions
constexpr int kMaxColSlices = 256;

__device__ __forceinline__ float block_sum_ordered(float v, float* s_part) {
  v = warp_sum(v);
  const int warps = blockDim.x / 32;
  __syncthreads();  // s_part may still be read from a previous call
  if ((threadIdx.x & 31) == 0) s_part[threadIdx.x / 32] = v;
  __syncthreads();
  float tot = 0.f;
  for (int i = 0; i < warps; ++i) tot += s_part[i];
  return tot;
}

__global__ void __launch_bounds__(kRmsBwdThreads) rmsnorm_bwd_row_kernel(const void* __restrict__ x, mamba_dtype xdt, const void* __restrict__ w,
                                                                         mamba_dtype wdt, const void* __restrict__ gy, mamba_dtype gdt, float eps, int dim,
                                                                         float* __restrict__ gx, float* __restrict__ rinv) {
  __shared__ float s_part[kRmsBwdThreads / 32];
  const int64_t row = blockIdx.x;
  const size_t base = (size_t)row * dim;
  float ss = 0.f, qx = 0.f;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) {
    const float xv = load_any(x, xdt, base + j);
    ss = fmaf(xv, xv, ss);
    qx = fmaf(load_any(gy, gdt, base + j) * load_any(w, wdt, j), xv, qx);
  }
  ss = block_sum_ordered(ss, s_part);
  qx = block_sum_ordered(qx, s_part);
  const float r = rmsnorm_inv(ss, dim, eps);
  const float coef = r * r * r / dim * qx;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) {
    const float xv = load_any(x, xdt, base + j);
    const float q = load_any(gy, gdt, base + j) * load_any(w, wdt, j);
    gx[base + j] += r * q - coef * xv;
  }
  if (threadIdx.x == 0) rinv[row] = r;
}

// partial[s][j] = Σ_{rows of slice s} g y_j·x_j·r (rows in order).
__global__ void rmsnorm_bwd_weight_partial_kernel(const void* __restrict__ x, mamba_dtype xdt, const void* __restrict__ gy, mamba_dtype gdt,
                                                  const float* __restrict__ rinv, int64_t rows, int dim, int64_t rows_per_slice,
                                                  float* __restrict__ partial) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= dim) return;
  const int64_t r0 = blockIdx.y * rows_per_slice, r1 = std::min<int64_t>(rows, r0 + rows_per_slice);
  float acc = 0.f;
  for (int64_t r = r0; r < r1; ++r) {
    const size_t i = (size_t)r * dim + j;
    acc = fmaf(load_any(gy, gdt, i) * load_any(x, xdt, i), rinv[r], acc);
  }
  partial[(size_t)blockIdx.y * dim + j] = acc;
}

__global__ void add_column_partials_kernel(const float* __restrict__ partial, int slices, int64_t cols, float* __restrict__ out) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < cols; j += (int64_t)gridDim.x * blockDim.x) {
    float acc = 0.f;
    for (int s = 0; s < slices; ++s) acc += partial[(size_t)s * cols + j];
    out[j] += acc;
  }
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_add_rmsnorm_bwd(mamba_context* ctx, const mamba_add_rmsnorm_params* params, const mamba_add_rmsnorm_grads* grads) {
  auto shapes = [&] {
    return params_ok(params) ? format("(rows %lld, dim %lld, x %s)", (long long)params->rows, (long long)params->dim, dtype_name(params->residual_dtype))
                             : std::string();
  };
  return guard("mamba_add_rmsnorm_bwd", shapes, [&] {
    const mamba_add_rmsnorm_params& p = check_params(params, "mamba_add_rmsnorm_params");
    const mamba_add_rmsnorm_grads& g = check_params(grads, "mamba_add_rmsnorm_grads");
    activate(ctx);
    check_dtype(p.residual_dtype, "residual_dtype");
    check_dtype(p.weight_dtype, "weight_dtype");
    check_dtype(g.grad_out_dtype, "grad_out_dtype");
    require(p.rows >= 0 && p.dim > 0 && p.dim <= (1 << 24), "bad shape");
    if (!p.rows) return;
    require(p.rows <= 2147483647LL, "too many rows");
    require(p.residual && p.weight && g.grad_out && g.grad_input && g.grad_weight, "null pointer");
    const int dim = static_cast<int>(p.dim);
    const int slices = static_cast<int>(std::min<int64_t>(kMaxColSlices, (p.rows + kColSliceRows - 1) / kColSliceRows));
    const int64_t per = (p.rows + slices - 1) / slices;
    const size_t rbytes = ((static_cast<size_t>(p.rows) * 4 + 255) / 256) * 256;
    char* ws = static_cast<char*>(workspace(ctx, kWsTrainB, rbytes + static_cast<size_t>(slices) * dim * 4));
    float* rinv = reinterpret_cast<float*>(ws);
    float* partial = reinterpret_cast<float*>(ws + rbytes);
    rmsnorm_bwd_row_kernel<<<static_cast<unsigned>(p.rows), kRmsBwdThreads, 0, ctx->stream>>>(p.residual, p.residual_dtype, p.weight, p.weight_dtype, g.grad_out,
                                                                                             g.grad_out_dtype, p.epsilon, dim, g.grad_input, rinv);
    check_launch(ctx, "rmsnorm_bwd_row_kernel");
    dim3 grid(blocks_for(dim, 256), static_cast<unsigned>(slices));
    rmsnorm_bwd_weight_partial_kernel<<<grid, 256, 0, ctx->stream>>>(p.residual, p.residual_dtype, g.grad_out, g.grad_out_dtype, rinv, p.rows, dim, per,
                                                                     partial);
    check_launch(ctx, "rmsnorm_bwd_weight_partial_kernel");
    add_column_partials_kernel<<<blocks_for(dim, 256), 256, 0, ctx->stream>>>(partial, slices, dim, g.grad_weight);
    check_launch(ctx, "add_column_partials_kernel");
  });
}
