// Fused residual add + RMSNorm (spec §11.5, fused mode): residual += delta (stored in its dtype, then
// re-read as stored), statistics and normalisation in fp32, one rounding of out = n * w.
// One block per row (32..256 threads; 12.6 µs -> a few µs for one d = 768 decode row, which one warp left
// latency-bound); the sum of squares is reduced per warp, then over the warps in a fixed order (deterministic).
// MAMBA_LEGACY_KERNELS=1 selects the former one-warp-per-row kernel.
#include "common.cuh"

namespace mamba {

template <class TR>
__global__ void add_rmsnorm_kernel(TR* __restrict__ residual, const void* __restrict__ delta, mamba_dtype ddt,
                                   const void* __restrict__ weight, mamba_dtype wdt, float eps, void* __restrict__ out,
                                   mamba_dtype odt, int64_t rows, int dim) {
  int warps = blockDim.x / 32;
  int64_t row = blockIdx.x * (int64_t)warps + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  TR* r = residual + row * dim;
  float ss = 0.f;
  // Unrolled so that several independent loads are in flight (one warp per row is otherwise latency-bound:
  // ~12 µs for d = 768); the per-lane accumulation order is unchanged, so the results are the same bits.
#pragma unroll 8
  for (int j = lane; j < dim; j += 32) {
    float v = to_f<TR>(r[j]);
    if (delta) {
      v += load_any(delta, ddt, row * dim + j);
      TR st = from_f<TR>(v);
      r[j] = st;
      v = to_f<TR>(st);
    }
    ss = fmaf(v, v, ss);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  float inv = rsqrtf(ss / dim + eps);
#pragma unroll 8
  for (int j = lane; j < dim; j += 32) {
    float v = to_f<TR>(r[j]);
    store_any(out, odt, row * dim + j, (v * inv) * load_any(weight, wdt, j));
  }
}

template <class TR>
__global__ void __launch_bounds__(256) add_rmsnorm_row_kernel(TR* __restrict__ residual, const void* __restrict__ delta, mamba_dtype ddt,
                                                              const void* __restrict__ weight, mamba_dtype wdt, float eps,
                                                              void* __restrict__ out, mamba_dtype odt, int dim) {
  const int64_t row = blockIdx.x;
  TR* r = residual + row * dim;
  float ss = 0.f;
#pragma unroll 4
  for (int j = threadIdx.x; j < dim; j += blockDim.x) {
    float v = to_f<TR>(r[j]);
    if (delta) {
      v += load_any(delta, ddt, row * dim + j);
      TR st = from_f<TR>(v);
      r[j] = st;
      v = to_f<TR>(st);
    }
    ss = fmaf(v, v, ss);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  __shared__ float s_part[8];
  const int w = threadIdx.x / 32, nw = blockDim.x / 32;
  if ((threadIdx.x & 31) == 0) s_part[w] = ss;
  __syncthreads();
  float tot = 0.f;
  for (int i = 0; i < nw; ++i) tot += s_part[i];
  const float inv = rsqrtf(tot / dim + eps);
#pragma unroll 4
  for (int j = threadIdx.x; j < dim; j += blockDim.x) {
    float v = to_f<TR>(r[j]);  // this thread's own write above
    store_any(out, odt, row * dim + j, (v * inv) * load_any(weight, wdt, j));
  }
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_add_rmsnorm(mamba_context* ctx, void* residual, mamba_dtype rdt, const void* delta, mamba_dtype ddt,
                                                    const void* weight, mamba_dtype wdt, float eps, void* out, mamba_dtype odt,
                                                    int64_t rows, int64_t dim) {
  return guard("mamba_add_rmsnorm", [&] { return format("(rows %lld, dim %lld, residual %s, out %s)", (long long)rows, (long long)dim, dtype_name(rdt), dtype_name(odt)); }, [&] {
    activate(ctx);
    check_dtype(rdt, "residual_dtype");
    if (delta) check_dtype(ddt, "delta_dtype");
    check_dtype(wdt, "weight_dtype");
    check_dtype(odt, "out_dtype");
    require(rows >= 0 && dim > 0 && dim <= (1 << 24), "bad shape");
    if (!rows) return;
    require(residual && weight && out, "null pointer");
    require(out != residual, "out must not alias residual");
    if (!legacy_kernels() && rows <= 2147483647LL) {
      // About 3 elements a thread, 32..256 threads.
      int threads = static_cast<int>(((dim + 2) / 3 + 31) / 32 * 32);
      if (threads < 32) threads = 32;
      if (threads > 256) threads = 256;
      MAMBA_DISPATCH_DTYPE(rdt, TR, {
        add_rmsnorm_row_kernel<TR><<<static_cast<unsigned>(rows), threads, 0, ctx->stream>>>(static_cast<TR*>(residual), delta, ddt, weight, wdt, eps,
                                                                                           out, odt, static_cast<int>(dim));
      });
      check_launch(ctx, "add_rmsnorm_row_kernel");
      return;
    }
    const int threads = 256, per = threads / 32;
    unsigned blocks = blocks_for(rows, per);
    MAMBA_DISPATCH_DTYPE(rdt, TR, {
      add_rmsnorm_kernel<TR><<<blocks, threads, 0, ctx->stream>>>(static_cast<TR*>(residual), delta, ddt, weight, wdt, eps, out, odt, rows, static_cast<int>(dim));
    });
    check_launch(ctx, "add_rmsnorm_kernel");
  });
}
