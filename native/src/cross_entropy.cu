// Cross-entropy sum: per row -log softmax(logits)[target] (fp32 max/sum-exp, double result), summed on the host in float64.
#include "common.cuh"

#include <vector>

namespace mamba {

__global__ void cross_entropy_kernel(const void* __restrict__ logits, mamba_dtype dt, int64_t cols, const int32_t* __restrict__ targets,
                                     int32_t ignore, double* __restrict__ loss) {
  int64_t row = blockIdx.x;
  int32_t t = targets[row];
  if (t == ignore) {
    if (threadIdx.x == 0) loss[row] = 0.0;
    return;
  }
  __shared__ float sh[32];
  int w = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, load_any(logits, dt, row * cols + j));
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  if (lane == 0) sh[w] = mx;
  __syncthreads();
  mx = lane < nw ? sh[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  __syncthreads();
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += expf(load_any(logits, dt, row * cols + j) - mx);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) sh[w] = s;
  __syncthreads();
  if (w == 0) {
    s = lane < nw ? sh[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) loss[row] = log((double)s) + (double)mx - (double)load_any(logits, dt, row * cols + t);
  }
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_cross_entropy_sum(mamba_context* ctx, const void* logits, mamba_dtype dt, int64_t rows, int64_t cols,
                                                          const int32_t* host_targets, int32_t ignore, double* loss_sum, int64_t* count) {
  return guard("mamba_cross_entropy_sum", [&] { return format("(rows %lld, cols %lld, %s)", (long long)rows, (long long)cols, dtype_name(dt)); }, [&] {
    activate(ctx);
    check_dtype(dt, "dtype");
    require(rows >= 0 && cols > 0 && rows <= 2147483647LL, "bad shape");
    require(loss_sum && count, "null output");
    *loss_sum = 0;
    *count = 0;
    if (!rows) return;
    require(logits && host_targets, "null pointer");
    int64_t n = 0;
    for (int64_t m = 0; m < rows; ++m) {
      int32_t t = host_targets[m];
      if (t == ignore) continue;
      if (t < 0 || t >= cols) fail(MAMBA_ERR_INVALID_ARGUMENT, format("target %d at row %lld is outside [0, %lld)", t, (long long)m, (long long)cols));
      ++n;
    }
    size_t tb = (static_cast<size_t>(rows) * 4 + 15) & ~static_cast<size_t>(15);
    char* ws = static_cast<char*>(workspace(ctx, kWsStaging, tb + static_cast<size_t>(rows) * 8));
    auto* dtargets = reinterpret_cast<int32_t*>(ws);
    auto* dloss = reinterpret_cast<double*>(ws + tb);
    check_cuda(cudaMemcpyAsync(dtargets, host_targets, static_cast<size_t>(rows) * 4, cudaMemcpyHostToDevice, ctx->stream), "cudaMemcpyAsync targets");
    cross_entropy_kernel<<<static_cast<unsigned>(rows), 256, 0, ctx->stream>>>(logits, dt, cols, dtargets, ignore, dloss);
    check_launch(ctx, "cross_entropy_kernel");
    std::vector<double> host(static_cast<size_t>(rows));
    check_cuda(cudaMemcpyAsync(host.data(), dloss, static_cast<size_t>(rows) * 8, cudaMemcpyDeviceToHost, ctx->stream), "cudaMemcpyAsync d2h");
    check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
    double sum = 0;
    for (int64_t m = 0; m < rows; ++m)
      if (host_targets[m] != ignore) sum += host[static_cast<size_t>(m)];
    *loss_sum = sum;
    *count = n;
  });
}
