// Fused residual add + RMSNorm (spec §11.5, fused mode): residual += delta (stored in its dtype, then
// re-read as stored), statistics and normalisation in fp32, one rounding of out = n * w.
// One block per row (32..256 threads; 12.6 µs -> a few µs for one d = 768 decode row, which one warp left
// latency-bound); the sum of squares is reduced per warp, then over the warps in a fixed order (deterministic).
// MAMBA_LEGACY_KERNELS=1 selects the former one-warp-per-row kernel.
#include "common.cuh"
#include "blocks/add_rmsnorm.cuh"

#include <algorithm>

namespace mamba {

// residual[row] += delta[row] (if given; stored, then re-read as stored) and this thread's sum of squares over
// elements start, start + stride, ... in order. Unrolled U times so several independent loads are in flight (one
// warp a row is otherwise latency-bound); the per-thread order is unchanged, so the results are the same bits.
// (Stride is the kernel's own type for it, unsigned blockDim.x or int 32, so each loop compiles as before.)
template <class TR, int U, class Stride>
__device__ __forceinline__ float add_residual_sumsq(TR* r, const void* delta, mamba_dtype ddt, int64_t row, int dim, int start, Stride stride) {
  float ss = 0.f;
#pragma unroll U
  for (int j = start; j < dim; j += stride) {
    float v = to_f<TR>(r[j]);
    if (delta) {
      const TR st = rmsnorm_add_residual<TR>(v, load_any(delta, ddt, row * dim + j));
      r[j] = st;
      v = to_f<TR>(st);
    }
    rmsnorm_accumulate(v, ss);
  }
  return ss;
}

// out[row] = (residual · inv) · weight over the same elements, rounded once to out's dtype.
template <class TR, int U, class Stride>
__device__ __forceinline__ void store_normed(const TR* r, const void* weight, mamba_dtype wdt, float inv, void* out, mamba_dtype odt,
                                             int64_t row, int dim, int start, Stride stride) {
#pragma unroll U
  for (int j = start; j < dim; j += stride)
    store_any(out, odt, row * dim + j, rmsnorm_scale(to_f<TR>(r[j]), inv, load_any(weight, wdt, j)));
}

// The former kernel (MAMBA_LEGACY_KERNELS=1): one warp a row, the sum of squares reduced by the warp alone.
template <class TR>
__global__ void add_rmsnorm_kernel(TR* __restrict__ residual, const void* __restrict__ delta, mamba_dtype ddt,
                                   const void* __restrict__ weight, mamba_dtype wdt, float eps, void* __restrict__ out,
                                   mamba_dtype odt, int64_t rows, int dim) {
  int warps = blockDim.x / 32;
  int64_t row = blockIdx.x * (int64_t)warps + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  TR* r = residual + row * dim;
  const float ss = warp_sum(add_residual_sumsq<TR, 8>(r, delta, ddt, row, dim, lane, 32));
  store_normed<TR, 8>(r, weight, wdt, rmsnorm_inv(ss, dim, eps), out, odt, row, dim, lane, 32);
}

template <class TR>
__global__ void __launch_bounds__(tuning::rmsnorm_max_threads) add_rmsnorm_row_kernel(TR* __restrict__ residual, const void* __restrict__ delta, mamba_dtype ddt,
                                                              const void* __restrict__ weight, mamba_dtype wdt, float eps,
                                                              void* __restrict__ out, mamba_dtype odt, int dim) {
  const int64_t row = blockIdx.x;
  TR* r = residual + row * dim;
  const float ss = add_residual_sumsq<TR, 4>(r, delta, ddt, row, dim, threadIdx.x, blockDim.x);
  __shared__ float s_part[tuning::rmsnorm_max_threads / 32];
  const float inv = rmsnorm_inv(rmsnorm_block_sum(ss, s_part, blockDim.x / 32), dim, eps);
  store_normed<TR, 4>(r, weight, wdt, inv, out, odt, row, dim, threadIdx.x, blockDim.x);  // each thread re-reads its own writes
}

// Threads of add_rmsnorm_row_kernel for a row of dim: about tuning::rmsnorm_elems_per_thread elements a thread, whole
// warps, 32 .. tuning::rmsnorm_max_threads (the fused decode step sums the row with the same count).
int add_rmsnorm_threads(int64_t dim) {
  const int64_t per = tuning::rmsnorm_elems_per_thread;
  const int64_t threads = ((dim + per - 1) / per + 31) / 32 * 32;
  return static_cast<int>(std::clamp<int64_t>(threads, 32, tuning::rmsnorm_max_threads));
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_add_rmsnorm(mamba_context* ctx, const mamba_add_rmsnorm_params* params) {
  auto shapes = [&] {
    return params_ok(params) ? format("(rows %lld, dim %lld, residual %s, out %s)", (long long)params->rows, (long long)params->dim,
                                      dtype_name(params->residual_dtype), dtype_name(params->out_dtype))
                             : std::string();
  };
  return guard("mamba_add_rmsnorm", shapes, [&] {
    const mamba_add_rmsnorm_params& p = check_params(params, "mamba_add_rmsnorm_params");
    activate(ctx);
    check_dtype(p.residual_dtype, "residual_dtype");
    if (p.delta) check_dtype(p.delta_dtype, "delta_dtype");
    check_dtype(p.weight_dtype, "weight_dtype");
    check_dtype(p.out_dtype, "out_dtype");
    require(p.rows >= 0 && p.dim > 0 && p.dim <= (1 << 24), "bad shape");
    if (!p.rows) return;
    require(p.residual && p.weight && p.out, "null pointer");
    require(p.out != p.residual, "out must not alias residual");
    const int dim = static_cast<int>(p.dim);
    if (!ctx->tune.legacy_kernels && p.rows <= 2147483647LL) {
      const int threads = add_rmsnorm_threads(dim);
      MAMBA_DISPATCH_DTYPE(p.residual_dtype, TR, {
        add_rmsnorm_row_kernel<TR><<<static_cast<unsigned>(p.rows), threads, 0, ctx->stream>>>(
            static_cast<TR*>(p.residual), p.delta, p.delta_dtype, p.weight, p.weight_dtype, p.epsilon, p.out, p.out_dtype, dim);
      });
      check_launch(ctx, "add_rmsnorm_row_kernel");
      return;
    }
    const int threads = 256, per = threads / 32;  // the former kernel's shape
    unsigned blocks = blocks_for(p.rows, per);
    MAMBA_DISPATCH_DTYPE(p.residual_dtype, TR, {
      add_rmsnorm_kernel<TR><<<blocks, threads, 0, ctx->stream>>>(static_cast<TR*>(p.residual), p.delta, p.delta_dtype, p.weight, p.weight_dtype,
                                                                  p.epsilon, p.out, p.out_dtype, p.rows, dim);
    });
    check_launch(ctx, "add_rmsnorm_kernel");
  });
}
