// Device-side helpers every op uses: dtype load/store and rounding, the math formulas (softplus, SiLU, ex2) and the
// warp reductions. The per-op arithmetic built from them lives in blocks/<op>.cuh; the context, the error funnel
// and the tuning are in common.cuh.
#pragma once
#include "mamba.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace mamba {

// Bytes of one element of dtype dt (host and device).
__host__ __device__ constexpr size_t dtype_size(mamba_dtype dt) { return dt == MAMBA_DTYPE_F32 ? 4 : 2; }

// log2(e): A is pre-scaled by it so that every decay exp(Δ·A) is one ex2 (MUFU.EX2).
constexpr float kLog2e = 1.4426950408889634f;

// ---- dtype conversion ------------------------------------------------------------------------------------------
template <class T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Rounds v to T's precision (identity for float): what storing it as T and reading it back gives.
template <class T> __device__ __forceinline__ float round_to(float v) { return to_f<T>(from_f<T>(v)); }

__device__ __forceinline__ float load_any(const void* p, mamba_dtype dt, size_t i) {
  switch (dt) {
    case MAMBA_DTYPE_BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case MAMBA_DTYPE_F16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
__device__ __forceinline__ void store_any(void* p, mamba_dtype dt, size_t i, float v) {
  switch (dt) {
    case MAMBA_DTYPE_BF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case MAMBA_DTYPE_F16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

// round_to for a dtype known only at run time.
__device__ __forceinline__ float round_any(float v, mamba_dtype dt) {
  switch (dt) {
    case MAMBA_DTYPE_BF16: return __bfloat162float(__float2bfloat16_rn(v));
    case MAMBA_DTYPE_F16: return __half2float(__float2half_rn(v));
    default: return v;
  }
}

// ---- formulas ----------------------------------------------------------------------------------------------------
__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// PyTorch softplus (beta 1, threshold 20).
__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float silu_f(float x) { return x / (1.f + expf(-x)); }
// MUFU-based forms for the hot kernels (relative error ~1e-7 where the value matters):
// log1p(e) ≈ e below -15, where 1 + e would round to 1.
__device__ __forceinline__ float softplus_fast(float x) {
  if (x > 20.f) return x;
  const float e = __expf(x);
  return x < -15.f ? e : __logf(1.f + e);
}
__device__ __forceinline__ float silu_fast(float x) { return __fdividef(x, 1.f + __expf(-x)); }

// ---- reductions --------------------------------------------------------------------------------------------------
// v summed over each aligned group of W lanes (W a power of two <= 32) by an xor butterfly, offsets W/2 down to 1:
// every lane of a group gets the same bits. W = 32 is the whole warp.
template <int W> __device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, W);
  return v;
}
// The same butterfly for a group width known only at run time (the fused decode step's state update).
__device__ __forceinline__ float group_sum(float v, int width) {
  for (int o = width / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, width);
  return v;
}
__device__ __forceinline__ float warp_sum(float v) { return group_sum<32>(v); }

}  // namespace mamba
