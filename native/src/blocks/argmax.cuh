// The argmax rule of every path (mamba.h; the CPU backend follows it too): the index of the largest value; NaN never
// wins; ties go to the lowest index; -inf is a value (an all -inf row gives 0); a row with no non-NaN value gives -1.
// Used by mamba_argmax / mamba_argmax_device and the fused decode step. The answer does not depend on the order
// candidates are merged in.
// A running best (bv, bi) starts at (-inf, kArgmaxNone): kArgmaxNone loses every tie, so a first -inf still wins,
// and a best still at kArgmaxNone at the end had no candidate.
#pragma once
#include "../device_math.cuh"

namespace mamba {

constexpr int kArgmaxNone = 0x7fffffff;

// Merges a candidate (v, i) that is not NaN into the running best.
__device__ __forceinline__ void argmax_merge(float& bv, int& bi, float v, int i) {
  if (v > bv || (v == bv && i < bi)) {
    bv = v;
    bi = i;
  }
}

// Offers element i of the row: NaN is skipped.
__device__ __forceinline__ void argmax_offer(float& bv, int& bi, float v, int i) {
  if (v == v) argmax_merge(bv, bi, v, i);
}

// Every lane ends with the warp's best (xor butterfly).
__device__ __forceinline__ void argmax_warp(float& bv, int& bi) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    argmax_merge(bv, bi, ov, oi);
  }
}

// The row's answer from its final best index.
__device__ __forceinline__ int32_t argmax_result(int bi) { return bi == kArgmaxNone ? -1 : bi; }

}  // namespace mamba
