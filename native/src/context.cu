// Library-level entries: ABI version, thread-local last error, device count, describe, and the
// context (device, non-blocking stream, cuBLAS handle, grow-only workspaces, tuning); the one allocation path of the
// library (device_alloc, host_alloc_mapped) with its fault injection for tests (mamba_debug_inject_alloc_failures).
#include "common.cuh"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#ifndef MAMBA_VERSION_STRING
#define MAMBA_VERSION_STRING "0.0.0"
#endif
#ifndef MAMBA_CUDA_ARCHS
#define MAMBA_CUDA_ARCHS "unknown"
#endif

namespace mamba {

namespace {
thread_local std::string g_last_error;
}

std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return std::string(buf);
}

void fail(mamba_status status, const std::string& message) { throw Error{status, message}; }

void check_cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear non-sticky errors so the context stays usable
  mamba_status st = MAMBA_ERR_CUDA;
  if (err == cudaErrorMemoryAllocation) st = MAMBA_ERR_OUT_OF_MEMORY;
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver || err == cudaErrorInvalidDevice) st = MAMBA_ERR_NO_DEVICE;
  fail(st, format("%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err)));
}

static const char* cublas_status_name(cublasStatus_t st) {
  switch (st) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

void check_cublas(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  cudaGetLastError();
  fail(st == CUBLAS_STATUS_ALLOC_FAILED ? MAMBA_ERR_OUT_OF_MEMORY : MAMBA_ERR_CUBLAS,
       format("%s: %s (%d)", what, cublas_status_name(st), static_cast<int>(st)));
}

void check_launch(mamba_context* ctx, const char* kernel) {
  check_cuda(cudaGetLastError(), kernel);
#if defined(MAMBA_SYNC_DEBUG)
  check_cuda(cudaStreamSynchronize(ctx->stream), kernel);
#else
  (void)ctx;
#endif
}

void clear_error() { g_last_error.clear(); }

void set_error(const char* op, const std::string& shapes, const std::string& message) {
  try {
    g_last_error = std::string(op) + (shapes.empty() ? "" : " " + shapes) + ": " + message;
  } catch (...) {
  }
}

void activate(mamba_context* ctx) {
  require(ctx != nullptr, "context is null");
  check_cuda(cudaSetDevice(ctx->device), "cudaSetDevice");
}

void* workspace(mamba_context* ctx, int slot, size_t bytes) {
  if (bytes == 0) bytes = 16;
  if (ctx->ws_bytes[slot] >= bytes) return ctx->ws[slot];
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(ctx->stream, &capturing), "cudaStreamIsCapturing");
  if (capturing != cudaStreamCaptureStatusNone)
    fail(MAMBA_ERR_UNSUPPORTED, format("workspace slot %d would have to grow to %zu bytes during graph capture", slot, bytes));
  if (ctx->ws[slot]) {
    check_cuda(cudaStreamSynchronize(ctx->stream), "workspace grow (sync)");
    cudaFree(ctx->ws[slot]);
    ctx->ws[slot] = nullptr;
    ctx->ws_bytes[slot] = 0;
  }
  size_t rounded = (bytes + (1u << 20) - 1) & ~static_cast<size_t>((1u << 20) - 1);
  // On failure the slot stays empty (null, 0 bytes): the next call that needs it allocates again.
  void* p = device_alloc(ctx, rounded, format("workspace allocation of %zu bytes", rounded).c_str());
  ctx->ws[slot] = p;
  ctx->ws_bytes[slot] = rounded;
  return p;
}

namespace {
// Whether this allocation is to fail by injection: armed, and the successful allocations to let through used up.
bool take_injected_failure(mamba_context* ctx) {
  std::lock_guard<std::mutex> lock(ctx->inject_mutex);
  if (ctx->inject_count <= 0 || ctx->inject_skip > 0) return false;
  --ctx->inject_count;
  ++ctx->inject_fired;
  return true;
}

// A real allocation succeeded: one fewer to let through before the injected failures.
void count_allocation(mamba_context* ctx) {
  std::lock_guard<std::mutex> lock(ctx->inject_mutex);
  if (ctx->inject_count > 0 && ctx->inject_skip > 0) --ctx->inject_skip;
}

// What check_cuda reports for a real cudaErrorMemoryAllocation, marked as injected.
[[noreturn]] void fail_injected(const char* what) {
  fail(MAMBA_ERR_OUT_OF_MEMORY, format("%s: %s (%s, injected by mamba_debug_inject_alloc_failures)", what,
                                       cudaGetErrorString(cudaErrorMemoryAllocation), cudaGetErrorName(cudaErrorMemoryAllocation)));
}
}  // namespace

void* device_alloc(mamba_context* ctx, size_t bytes, const char* what) {
  if (take_injected_failure(ctx)) fail_injected(what);
  void* p = nullptr;
  check_cuda(cudaMalloc(&p, bytes), what);
  count_allocation(ctx);
  return p;
}

void* host_alloc_mapped(mamba_context* ctx, size_t bytes, const char* what) {
  if (take_injected_failure(ctx)) fail_injected(what);
  void* p = nullptr;
  check_cuda(cudaHostAlloc(&p, bytes, cudaHostAllocMapped), what);
  count_allocation(ctx);
  return p;
}

const char* dtype_name(mamba_dtype dt) {
  switch (dt) {
    case MAMBA_DTYPE_F32: return "f32";
    case MAMBA_DTYPE_BF16: return "bf16";
    case MAMBA_DTYPE_F16: return "f16";
    default: return "?";
  }
}

void check_dtype(mamba_dtype dt, const char* name) {
  if (dt != MAMBA_DTYPE_F32 && dt != MAMBA_DTYPE_BF16 && dt != MAMBA_DTYPE_F16)
    fail(MAMBA_ERR_INVALID_ARGUMENT, format("%s: unknown dtype %d", name, static_cast<int>(dt)));
#if defined(MAMBA_DISABLE_BF16)
  if (dt == MAMBA_DTYPE_BF16) fail(MAMBA_ERR_UNSUPPORTED, format("%s: bf16 disabled at build time", name));
#endif
#if defined(MAMBA_DISABLE_F16)
  if (dt == MAMBA_DTYPE_F16) fail(MAMBA_ERR_UNSUPPORTED, format("%s: f16 disabled at build time", name));
#endif
}

namespace {
// The switches' environment names, indexed by TuningKnob.
constexpr const char* kKnobNames[kKnobCount] = {"MAMBA_LEGACY_KERNELS", "MAMBA_GEMV_MAX_ROWS", "MAMBA_SCAN_CHUNKS",
                                                "MAMBA_SCAN_VEC",       "MAMBA_DECODE_GRID",   "MAMBA_DECODE_TRACE",
                                                "MAMBA_SCAN_VARIANT"};

// Parses the value string s of integer switch k into t (read_tuning and set_tuning); false for a non-integer switch.
bool parse_knob(tuning& t, TuningKnob k, const char* s) {
  switch (k) {
    case kKnobLegacyKernels: t.legacy_kernels = s[0] != '0'; return true;
    case kKnobGemvMaxRows: t.gemv_max_rows = std::clamp(std::atoi(s), 0, tuning::gemv_rows_max); return true;
    case kKnobScanChunks: t.scan_chunks = std::atoi(s); return true;
    case kKnobScanVec: t.scan_vec = std::atoi(s) != 0; return true;
    case kKnobDecodeGrid: t.decode_grid = std::atoi(s); return true;
    case kKnobScanVariant: t.scan_variant = std::clamp(std::atoi(s), 0, tuning::scan_variant_max); return true;
    default: return false;
  }
}
}  // namespace

tuning read_tuning() {
  tuning t;
  // A switch counts as set when its variable is present and not empty.
  auto env = [&](TuningKnob k) -> const char* {
    const char* s = std::getenv(kKnobNames[k]);
    if (!s || !*s) return nullptr;
    t.from_environment |= 1u << k;
    return s;
  };
  for (int k = 0; k < kKnobCount; ++k) {
    const auto knob = static_cast<TuningKnob>(k);
    if (const char* s = env(knob))
      if (!parse_knob(t, knob, s)) t.decode_trace = s;  // the one string switch: MAMBA_DECODE_TRACE
  }
  return t;
}

bool set_tuning(tuning& t, const char* name, int64_t value) {
  for (int k = 0; k < kKnobCount; ++k)
    if (std::strcmp(name, kKnobNames[k]) == 0) {
      const auto v = static_cast<int>(std::clamp<int64_t>(value, INT32_MIN, INT32_MAX));
      return parse_knob(t, static_cast<TuningKnob>(k), std::to_string(v).c_str());
    }
  return false;
}

std::string describe_tuning(const tuning& t) {
  std::string s;
  auto line = [&](TuningKnob k, const std::string& value, const char* meaning) {
    s += format("tuning %s=%s (%s; %s)\n", kKnobNames[k], value.c_str(), t.from_env(k) ? "from the environment" : "default", meaning);
  };
  line(kKnobLegacyKernels, t.legacy_kernels ? "1" : "0", "1: the pre-ABI-3 decode kernels");
  line(kKnobGemvMaxRows, std::to_string(t.gemv_max_rows), "rows that take the GEMV kernel instead of cuBLAS");
  line(kKnobScanChunks, std::to_string(t.scan_chunks), "scan time chunks, 0: chosen from the grid, 1: no split");
  line(kKnobScanVec, t.scan_vec ? "1" : "0", "0: scan phases 1/3 one channel a thread");
  line(kKnobDecodeGrid, std::to_string(t.decode_grid), "fused decode blocks, 0: one a multiprocessor");
  line(kKnobDecodeTrace, t.decode_trace, "fused decode per-phase trace file, empty: off");
  line(kKnobScanVariant, std::to_string(t.scan_variant), "scan forward kernel, 0: as measured, 1: pair-broadcast B/C lanes");
  return s;
}

}  // namespace mamba

using namespace mamba;

extern "C" {

MAMBA_API int32_t mamba_abi_version(void) { return MAMBA_ABI_VERSION; }

MAMBA_API const char* mamba_last_error(void) { return g_last_error.c_str(); }

MAMBA_API mamba_status mamba_get_device_count(int32_t* count) {
  return guard("mamba_get_device_count", [] { return std::string(); }, [&] {
    require(count != nullptr, "count is null");
    *count = 0;
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
      cudaGetLastError();
      return;  // zero devices is an answer, not an error
    }
    check_cuda(err, "cudaGetDeviceCount");
    *count = n;
  });
}

MAMBA_API mamba_status mamba_describe(int32_t device, char* buffer, int64_t capacity, int64_t* length) {
  return guard("mamba_describe", [&] { return format("(device %d)", device); }, [&] {
    std::string s;
    s += format("library: libmamba %s\n", MAMBA_VERSION_STRING);
    s += format("abi: %d\n", MAMBA_ABI_VERSION);
    s += format("compiled architectures: %s\n", MAMBA_CUDA_ARCHS);
    s += format("built with CUDA: %d.%d\n", CUDART_VERSION / 1000, (CUDART_VERSION % 1000) / 10);
    int drv = 0, rt = 0;
    if (cudaDriverGetVersion(&drv) == cudaSuccess)
      s += format("driver CUDA version: %d.%d\n", drv / 1000, (drv % 1000) / 10);
    else
      s += "driver CUDA version: none\n";
    if (cudaRuntimeGetVersion(&rt) == cudaSuccess) s += format("runtime version: %d.%d\n", rt / 1000, (rt % 1000) / 10);
    int cbm = 0, cbn = 0, cbp = 0;
    if (cublasGetProperty(MAJOR_VERSION, &cbm) == CUBLAS_STATUS_SUCCESS && cublasGetProperty(MINOR_VERSION, &cbn) == CUBLAS_STATUS_SUCCESS &&
        cublasGetProperty(PATCH_LEVEL, &cbp) == CUBLAS_STATUS_SUCCESS)
      s += format("cuBLAS: %d.%d.%d\n", cbm, cbn, cbp);
    cudaGetLastError();
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      s += format("devices: 0 (%s)\n", cudaGetErrorString(err));
      cudaGetLastError();
    } else {
      s += format("devices: %d\n", n);
    }
    s += describe_tuning(read_tuning());
    if (device >= 0 && device < n) {
      cudaDeviceProp p;
      check_cuda(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
      s += format("device %d: %s, compute capability %d.%d, %d SMs, %.1f GiB\n", device, p.name, p.major, p.minor,
                  p.multiProcessorCount, p.totalGlobalMem / 1073741824.0);
      size_t fr = 0, tot = 0;
      if (cudaSetDevice(device) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
        s += format("memory: %.2f GiB free of %.2f GiB\n", fr / 1073741824.0, tot / 1073741824.0);
      cudaGetLastError();
    }
    if (length) *length = static_cast<int64_t>(s.size());
    if (buffer && capacity > 0) {
      size_t n2 = s.size() < static_cast<size_t>(capacity - 1) ? s.size() : static_cast<size_t>(capacity - 1);
      std::memcpy(buffer, s.data(), n2);
      buffer[n2] = 0;
    }
  });
}

MAMBA_API mamba_status mamba_context_create(int32_t device, mamba_context** out) {
  return guard("mamba_context_create", [&] { return format("(device %d)", device); }, [&] {
    require(out != nullptr, "out is null");
    *out = nullptr;
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      cudaGetLastError();
      fail(MAMBA_ERR_NO_DEVICE, format("no usable CUDA device: %s (%s)", cudaGetErrorString(err), cudaGetErrorName(err)));
    }
    if (device < 0 || device >= n) fail(MAMBA_ERR_NO_DEVICE, format("device %d out of range (%d devices)", device, n));
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    auto* ctx = new mamba_context();
    ctx->device = device;
    ctx->tune = read_tuning();
    try {
      check_cuda(cudaDeviceGetAttribute(&ctx->sm_count, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
      check_cuda(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking), "cudaStreamCreate");
      check_cublas(cublasCreate(&ctx->cublas), "cublasCreate");
      check_cublas(cublasSetStream(ctx->cublas, ctx->stream), "cublasSetStream");
      // A fixed cuBLAS workspace (after SetStream, which resets it): captured GEMMs then never allocate, and
      // eager and captured calls see the same workspace, hence the same algorithms and bits.
      ctx->cublas_ws_bytes = tuning::cublas_workspace_bytes;
      ctx->cublas_ws = device_alloc(ctx, ctx->cublas_ws_bytes, "cuBLAS workspace allocation");  // before any arming: never injected
      check_cublas(cublasSetWorkspace(ctx->cublas, ctx->cublas_ws, ctx->cublas_ws_bytes), "cublasSetWorkspace");
      // No TF32: fp32 GEMMs are true fp32 (spec §6, §11.6).
      check_cublas(cublasSetMathMode(ctx->cublas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    } catch (...) {
      if (ctx->cublas) cublasDestroy(ctx->cublas);
      if (ctx->cublas_ws) cudaFree(ctx->cublas_ws);
      if (ctx->stream) cudaStreamDestroy(ctx->stream);
      delete ctx;
      throw;
    }
    *out = ctx;
  });
}

MAMBA_API mamba_status mamba_context_destroy(mamba_context* ctx) {
  return guard("mamba_context_destroy", [] { return std::string(); }, [&] {
    if (!ctx) return;
    cudaSetDevice(ctx->device);
    if (ctx->stream) cudaStreamSynchronize(ctx->stream);
    for (int i = 0; i < mamba_context::kSlots; ++i)
      if (ctx->ws[i]) cudaFree(ctx->ws[i]);
    if (ctx->cublas) cublasDestroy(ctx->cublas);
    if (ctx->cublas_ws) cudaFree(ctx->cublas_ws);
    if (ctx->stream) cudaStreamDestroy(ctx->stream);
    cudaGetLastError();
    delete ctx;
  });
}

MAMBA_API mamba_status mamba_synchronize(mamba_context* ctx) {
  return guard("mamba_synchronize", [] { return std::string(); }, [&] {
    activate(ctx);
    check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
  });
}

MAMBA_API mamba_status mamba_debug_inject_alloc_failures(mamba_context* ctx, int64_t skip, int64_t count, int64_t* injected_total) {
  return guard("mamba_debug_inject_alloc_failures", [&] { return format("(skip %lld, count %lld)", (long long)skip, (long long)count); }, [&] {
    require(ctx != nullptr, "context is null");
    require(skip >= 0 && count >= 0, "skip and count must be >= 0");
    std::lock_guard<std::mutex> lock(ctx->inject_mutex);
    if (injected_total) *injected_total = ctx->inject_fired;
    ctx->inject_skip = count > 0 ? skip : 0;
    ctx->inject_count = count;
  });
}

MAMBA_API mamba_status mamba_debug_set_tuning(mamba_context* ctx, const char* name, int64_t value) {
  return guard("mamba_debug_set_tuning", [&] { return format("(%s = %lld)", name ? name : "(null)", (long long)value); }, [&] {
    require(ctx != nullptr, "context is null");
    require(name != nullptr, "name is null");
    if (!set_tuning(ctx->tune, name, value)) fail(MAMBA_ERR_INVALID_ARGUMENT, format("%s is not an integer tuning switch", name));
  });
}

MAMBA_API mamba_status mamba_mem_info(mamba_context* ctx, int64_t* free_bytes, int64_t* total_bytes) {
  return guard("mamba_mem_info", [] { return std::string(); }, [&] {
    activate(ctx);
    size_t f = 0, t = 0;
    check_cuda(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
    if (free_bytes) *free_bytes = static_cast<int64_t>(f);
    if (total_bytes) *total_bytes = static_cast<int64_t>(t);
  });
}

}  // extern "C"
