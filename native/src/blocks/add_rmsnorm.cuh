// add + RMSNorm arithmetic shared by add_rmsnorm.cu's kernels and the fused decode step (decode_step.cu), so both
// give the same bits by construction: the residual add rounded once to the residual's dtype, each thread's sum of
// squares in index order, a butterfly in each warp, the warp totals added in warp order, 1/rms, then (v·inv)·w.
#pragma once
#include "../device_math.cuh"

namespace mamba {

// residual + delta as the residual's storage type TR keeps it (the fused step's residual is fp32: TR = float).
template <class TR> __device__ __forceinline__ TR rmsnorm_add_residual(float residual, float delta) { return from_f<TR>(residual + delta); }

// One element into a thread's running sum of squares.
__device__ __forceinline__ void rmsnorm_accumulate(float v, float& ss) { ss = fmaf(v, v, ss); }

// The row's sum of squares from every thread's partial: a butterfly in each warp, then the totals of the first
// `warps` warps added in warp order (deterministic; every thread gets the same bits). s_part holds one float a warp
// of the block; the caller syncs before reusing it.
__device__ __forceinline__ float rmsnorm_block_sum(float ss, float* s_part, int warps) {
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) s_part[threadIdx.x / 32] = ss;
  __syncthreads();
  float tot = 0.f;
  for (int i = 0; i < warps; ++i) tot += s_part[i];
  return tot;
}

// 1 / rms of a row of `dim` elements.
__device__ __forceinline__ float rmsnorm_inv(float sumsq, int dim, float eps) { return rsqrtf(sumsq / dim + eps); }

// The normalised element times its weight, before the one rounding to the output dtype.
__device__ __forceinline__ float rmsnorm_scale(float v, float inv, float weight) { return (v * inv) * weight; }

}  // namespace mamba
