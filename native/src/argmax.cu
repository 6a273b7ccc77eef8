// Row-wise argmax (the rule of blocks/argmax.cuh), one block per row; result copied to the host (mamba_argmax) or
// left in a device buffer (mamba_argmax_device, graph-capturable).
#include "common.cuh"
#include "blocks/argmax.cuh"

namespace mamba {

// tuning::argmax_threads a row (1024; 256 was latency-bound); the answer does not depend on the reduction order.
constexpr int kArgmaxThreads = tuning::argmax_threads;
// 16-byte loads in flight a thread (a 50,280-wide f32 row is 12 per thread at 1024 threads): the scalar loop it
// replaces waited ~13 dependent round trips.
constexpr int kArgmaxLoads = tuning::argmax_loads_in_flight;
template <class T>
__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(const T* __restrict__ logits, int64_t cols, int32_t* __restrict__ result) {
  constexpr int VE = 16 / sizeof(T);
  const T* __restrict__ p = logits + blockIdx.x * cols;
  float bv = -INFINITY;
  int bi = kArgmaxNone;
  // Scalar head up to the first 16-byte boundary, 16-byte body, scalar tail.
  const int64_t to_boundary = (int64_t)((16 - reinterpret_cast<uintptr_t>(p) % 16) % 16) / (int64_t)sizeof(T);
  const int64_t head = to_boundary < cols ? to_boundary : cols;
  const int64_t nvec = (cols - head) / VE;
  const int64_t tail = head + nvec * VE;
  for (int64_t j = threadIdx.x; j < head; j += kArgmaxThreads) argmax_offer(bv, bi, to_f<T>(p[j]), static_cast<int>(j));
  const uint4* __restrict__ pv = reinterpret_cast<const uint4*>(p + head);
  for (int64_t i0 = threadIdx.x; i0 < nvec; i0 += kArgmaxLoads * kArgmaxThreads) {
    uint4 raw[kArgmaxLoads];
#pragma unroll
    for (int q = 0; q < kArgmaxLoads; ++q) {
      const int64_t i = i0 + q * kArgmaxThreads;
      raw[q] = i < nvec ? pv[i] : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int q = 0; q < kArgmaxLoads; ++q) {
      const int64_t i = i0 + q * kArgmaxThreads;
      if (i >= nvec) break;
      T vals[VE];
      memcpy(vals, &raw[q], 16);
#pragma unroll
      for (int t = 0; t < VE; ++t) argmax_offer(bv, bi, to_f<T>(vals[t]), static_cast<int>(head + i * VE + t));
    }
  }
  for (int64_t j = tail + threadIdx.x; j < cols; j += kArgmaxThreads) argmax_offer(bv, bi, to_f<T>(p[j]), static_cast<int>(j));
  argmax_warp(bv, bi);
  __shared__ float sv[32];
  __shared__ int si[32];
  int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) { sv[w] = bv; si[w] = bi; }
  __syncthreads();
  if (w == 0) {
    int nw = blockDim.x / 32;
    bv = lane < nw ? sv[lane] : -INFINITY;
    bi = lane < nw ? si[lane] : kArgmaxNone;
    argmax_warp(bv, bi);
    if (lane == 0) result[blockIdx.x] = argmax_result(bi);
  }
}

void launch_argmax(mamba_context* ctx, const void* logits, mamba_dtype dt, int64_t rows, int64_t cols, int32_t* result) {
  MAMBA_DISPATCH_DTYPE(dt, T, {
    argmax_kernel<T><<<static_cast<unsigned>(rows), kArgmaxThreads, 0, ctx->stream>>>(static_cast<const T*>(logits), cols, result);
  });
  check_launch(ctx, "argmax_kernel");
}

}  // namespace mamba

using namespace mamba;

// The checks both entries make; false when there are no rows (nothing to do).
static bool check_argmax(mamba_context* ctx, const void* logits, mamba_dtype dt, int64_t rows, int64_t cols, const int32_t* result) {
  activate(ctx);
  check_dtype(dt, "dtype");
  require(rows >= 0 && cols > 0 && cols <= 2147483647LL && rows <= 2147483647LL, "bad shape");
  if (!rows) return false;
  require(logits && result, "null pointer");
  return true;
}

static std::string argmax_shapes(int64_t rows, int64_t cols, mamba_dtype dt) {
  return format("(rows %lld, cols %lld, %s)", (long long)rows, (long long)cols, dtype_name(dt));
}

extern "C" MAMBA_API mamba_status mamba_argmax(mamba_context* ctx, const void* logits, mamba_dtype dt, int64_t rows, int64_t cols, int32_t* host_result) {
  return guard("mamba_argmax", [&] { return argmax_shapes(rows, cols, dt); }, [&] {
    if (!check_argmax(ctx, logits, dt, rows, cols, host_result)) return;
    auto* res = static_cast<int32_t*>(workspace(ctx, kWsStaging, static_cast<size_t>(rows) * 4));
    launch_argmax(ctx, logits, dt, rows, cols, res);
    check_cuda(cudaMemcpyAsync(host_result, res, static_cast<size_t>(rows) * 4, cudaMemcpyDeviceToHost, ctx->stream), "cudaMemcpyAsync d2h");
    check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
  });
}

extern "C" MAMBA_API mamba_status mamba_argmax_device(mamba_context* ctx, const void* logits, mamba_dtype dt, int64_t rows, int64_t cols, int32_t* device_result) {
  return guard("mamba_argmax_device", [&] { return argmax_shapes(rows, cols, dt); }, [&] {
    if (check_argmax(ctx, logits, dt, rows, cols, device_result)) launch_argmax(ctx, logits, dt, rows, cols, device_result);
  });
}
