// Host-side internals shared by every op: the context (with its tuning), the error funnel, launch checks, the
// dtype dispatch, and the launchers one op file calls in another. Device-side helpers: device_math.cuh (dtype,
// formulas, reductions) and blocks/<op>.cuh (the arithmetic an op's kernels share with the fused decode step).
#pragma once
#include "mamba.h"
#include "device_math.cuh"
#include "tuning.cuh"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>

struct mamba_context {
  int device = 0;
  int sm_count = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  // Grow-only workspaces, reused across calls (no per-call allocation once warm).
  static constexpr int kSlots = 8;
  void* ws[kSlots] = {};
  size_t ws_bytes[kSlots] = {};
  // cuBLAS workspace set once with cublasSetWorkspace, so captured GEMMs never allocate (graph-safe).
  void* cublas_ws = nullptr;
  size_t cublas_ws_bytes = 0;
  // The environment switches, read once at creation (read_tuning); every launcher consults them here.
  mamba::tuning tune;
  // Allocation fault injection (mamba_debug_inject_alloc_failures), consulted by device_alloc/host_alloc_mapped: after
  // inject_skip more successful allocations the next inject_count fail; inject_fired counts the failures injected so far.
  // Under a mutex: buffers may be allocated from another thread than the one running ops.
  std::mutex inject_mutex;
  int64_t inject_skip = 0;
  int64_t inject_count = 0;
  int64_t inject_fired = 0;
};

struct mamba_graph {
  cudaGraphExec_t exec = nullptr;
  int device = 0;
};

namespace mamba {

enum WorkspaceSlot { kWsStaging = 0, kWsDelta = 1, kWsConvertA = 2, kWsConvertB = 3, kWsScanChunks = 4, kWsTrainA = 5, kWsTrainB = 6, kWsTrainC = 7 };

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
// Every allocation of the library goes through these two (cudaMalloc; cudaHostAlloc mapped, for pinned host memory the
// device writes). A failure, real or injected by mamba_debug_inject_alloc_failures, throws MAMBA_ERR_OUT_OF_MEMORY
// naming `what`; nothing is allocated then.
void* device_alloc(mamba_context* ctx, size_t bytes, const char* what);
void* host_alloc_mapped(mamba_context* ctx, size_t bytes, const char* what);
void activate(mamba_context* ctx);  // validates ctx and makes its device current
void check_dtype(mamba_dtype dt, const char* name);
const char* dtype_name(mamba_dtype dt);
inline void require(bool cond, const char* what) {
  if (!cond) fail(MAMBA_ERR_INVALID_ARGUMENT, what);
}

// Parameter structs of the entries (mamba.h). params_ok: not null and struct_size is this library's sizeof (only then
// may its fields be read, e.g. by an entry's error-message lambda). check_params also requires `reserved` (where the
// struct has one) to be 0, and returns the struct.
template <class Params> bool params_ok(const Params* p) { return p && p->struct_size == static_cast<int32_t>(sizeof(Params)); }

template <class Params, class = void> struct has_reserved : std::false_type {};
template <class Params> struct has_reserved<Params, std::void_t<decltype(&Params::reserved)>> : std::true_type {};

template <class Params>
const Params& check_params(const Params* p, const char* type_name) {
  if (!p) fail(MAMBA_ERR_INVALID_ARGUMENT, format("%s is null", type_name));
  if (!params_ok(p))
    fail(MAMBA_ERR_INVALID_ARGUMENT, format("%s.struct_size is %d, but this library (ABI %d) takes %d: rebuild against its mamba.h",
                                            type_name, static_cast<int>(p->struct_size), MAMBA_ABI_VERSION, static_cast<int>(sizeof(Params))));
  if constexpr (has_reserved<Params>::value)
    if (p->reserved != 0) fail(MAMBA_ERR_INVALID_ARGUMENT, format("%s.reserved must be 0", type_name));
  return *p;
}

// Launchers and launch shapes one op file uses from another.
int add_rmsnorm_threads(int64_t dim);  // add_rmsnorm.cu (the fused decode step reproduces its row sum)
std::string conv_shapes(const mamba_causal_conv1d_params* p);   // causal_conv1d_fwd.cu, for the conv entries' messages
std::string scan_shapes(const mamba_selective_scan_params* p);  // selective_scan.cu, for the scan entries' messages
// dt_proj of the scan (selective_scan.cu): Δr [rows, E] f32 in the kWsDelta workspace (uses kWsConvertB when wdt != adt).
// The scan forward from zero (cont = false) or from p.state (selective_scan.cu); writes p.checkpoints when not null.
void scan(mamba_context* ctx, const mamba_selective_scan_params& p, bool cont);
float* dt_proj(mamba_context* ctx, const void* dbc, mamba_dtype adt, int64_t rows, int64_t ld, const void* w, mamba_dtype wdt, int64_t E, int64_t R);
void launch_convert(mamba_context* ctx, const void* src, mamba_dtype sdt, void* dst, mamba_dtype ddt, int64_t count);  // convert.cu
// Column-major C = op(A)·op(B) + beta·C through cublasGemmEx with fp32 accumulation (linear.cu).
void gemm_ex(mamba_context* ctx, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const void* a, mamba_dtype adt,
             int64_t lda, const void* b, mamba_dtype bdt, int64_t ldb, float beta, void* c, mamba_dtype cdt, int64_t ldc);

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
