// Internal helpers shared by every op: the context, error funnel, dtype load/store, launch checks.
#pragma once
#include "mamba.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <new>
#include <stdexcept>
#include <string>

struct mamba_context {
  int device = 0;
  int sm_count = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  // Grow-only workspaces, reused across calls (no per-call allocation once warm).
  static constexpr int kSlots = 5;
  void* ws[kSlots] = {};
  size_t ws_bytes[kSlots] = {};
  // cuBLAS workspace set once with cublasSetWorkspace, so captured GEMMs never allocate (graph-safe).
  void* cublas_ws = nullptr;
  size_t cublas_ws_bytes = 0;
};

struct mamba_graph {
  cudaGraphExec_t exec = nullptr;
  int device = 0;
};

namespace mamba {

enum WorkspaceSlot { kWsStaging = 0, kWsDelta = 1, kWsConvertA = 2, kWsConvertB = 3, kWsScanChunks = 4 };

// Largest piece (in floats, 4 MiB) that uploads and downloads with a dtype conversion stage at once.
constexpr int64_t kStagingElements = int64_t{1} << 20;

struct Error {
  mamba_status status;
  std::string message;
};

std::string format(const char* fmt, ...);
[[noreturn]] void fail(mamba_status status, const std::string& message);
void check_cuda(cudaError_t err, const char* what);
void check_cublas(cublasStatus_t st, const char* what);
void check_launch(mamba_context* ctx, const char* kernel);
void clear_error();
void set_error(const char* op, const std::string& shapes, const std::string& message);
void* workspace(mamba_context* ctx, int slot, size_t bytes);
void activate(mamba_context* ctx);  // validates ctx and makes its device current
size_t dtype_size(mamba_dtype dt);
void check_dtype(mamba_dtype dt, const char* name);
const char* dtype_name(mamba_dtype dt);
// MAMBA_LEGACY_KERNELS=1 (read once): the pre-ABI-3 decode kernels (warp-per-row add+RMSNorm, thread-per-channel
// state update, cuBLAS for every linear). For A/B benchmarking and bisecting only.
bool legacy_kernels();
inline void require(bool cond, const char* what) {
  if (!cond) fail(MAMBA_ERR_INVALID_ARGUMENT, what);
}

// The catch-all funnel: every extern "C" entry runs its body through this.
template <class Shapes, class Body>
mamba_status guard(const char* op, Shapes&& shapes, Body&& body) noexcept {
  clear_error();
  try {
    body();
    return MAMBA_OK;
  } catch (const Error& e) {
    std::string s;
    try { s = shapes(); } catch (...) {}
    set_error(op, s, e.message);
    return e.status;
  } catch (const std::bad_alloc&) {
    set_error(op, "", "host out of memory");
    return MAMBA_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_error(op, "", std::string("internal error: ") + e.what());
    return MAMBA_ERR_INTERNAL;
  } catch (...) {
    set_error(op, "", "internal error: unknown exception");
    return MAMBA_ERR_INTERNAL;
  }
}

// ---- device-side dtype helpers ------------------------------------------------------------------
template <class T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

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

// Rounds v to what storing it in dtype dt and reading it back gives.
__device__ __forceinline__ float round_any(float v, mamba_dtype dt) {
  switch (dt) {
    case MAMBA_DTYPE_BF16: return __bfloat162float(__float2bfloat16_rn(v));
    case MAMBA_DTYPE_F16: return __half2float(__float2half_rn(v));
    default: return v;
  }
}

// One conv update step of one channel (spec §11.2): the state [K] at `base` shifts left and takes x as its newest
// column (each value as the state dtype stores it); acc += Σ_k w[k]·state[k] in tap order. The old columns are
// all read before any is written, so the loads are in flight together (the step is latency-bound).
__device__ __forceinline__ void conv_step_taps(void* state, mamba_dtype sdt, size_t base, int K, float x, const float* w, float& acc) {
  constexpr int kMaxTaps = 8;
  if (K <= kMaxTaps) {
    float v[kMaxTaps];
#pragma unroll
    for (int k = 0; k < kMaxTaps; ++k)
      if (k < K) v[k] = k + 1 < K ? load_any(state, sdt, base + k + 1) : round_any(x, sdt);
#pragma unroll
    for (int k = 0; k < kMaxTaps; ++k)
      if (k < K) {
        store_any(state, sdt, base + k, v[k]);
        acc = fmaf(w[k], v[k], acc);
      }
  } else {
    for (int k = 0; k < K; ++k) {
      const float v = k + 1 < K ? load_any(state, sdt, base + k + 1) : round_any(x, sdt);
      store_any(state, sdt, base + k, v);
      acc = fmaf(w[k], v, acc);
    }
  }
}

inline unsigned blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 2147483647LL) b = 2147483647LL;
  return static_cast<unsigned>(b);
}

}  // namespace mamba

// Runs `...` with T bound to the storage type of activation dtype `dt`.
#if defined(MAMBA_DISABLE_BF16)
#define MAMBA_CASE_BF16(T, ...) case MAMBA_DTYPE_BF16: ::mamba::fail(MAMBA_ERR_UNSUPPORTED, "bf16 kernels were disabled at build time (MAMBA_DISABLE_BF16)");
#else
#define MAMBA_CASE_BF16(T, ...) case MAMBA_DTYPE_BF16: { using T = __nv_bfloat16; __VA_ARGS__; } break;
#endif
#if defined(MAMBA_DISABLE_F16)
#define MAMBA_CASE_F16(T, ...) case MAMBA_DTYPE_F16: ::mamba::fail(MAMBA_ERR_UNSUPPORTED, "f16 kernels were disabled at build time (MAMBA_DISABLE_F16)");
#else
#define MAMBA_CASE_F16(T, ...) case MAMBA_DTYPE_F16: { using T = __half; __VA_ARGS__; } break;
#endif
#define MAMBA_DISPATCH_DTYPE(dt, T, ...)                                                    \
  switch (dt) {                                                                             \
    case MAMBA_DTYPE_F32: { using T = float; __VA_ARGS__; } break;                          \
    MAMBA_CASE_BF16(T, __VA_ARGS__)                                                         \
    MAMBA_CASE_F16(T, __VA_ARGS__)                                                          \
    default: ::mamba::fail(MAMBA_ERR_INVALID_ARGUMENT, "unknown activation dtype");        \
  }
