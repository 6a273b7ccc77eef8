// Σ x² over an f32 buffer in float64 (the global gradient norm). Deterministic: a fixed grid of blocks, each thread
// sums a fixed grid-stride set of elements in order, a fixed tree in each block; the per-block partials are added in
// block order on the host.
#include "common.cuh"

#include <algorithm>
#include <vector>

namespace mamba {

constexpr int kSsqThreads = 256;
constexpr int kSsqMaxBlocks = 1024;

__global__ void __launch_bounds__(kSsqThreads) sum_of_squares_kernel(const float* __restrict__ x, int64_t n, double* __restrict__ partial) {
  __shared__ double s[kSsqThreads];
  double acc = 0.0;
  for (int64_t i = blockIdx.x * (int64_t)kSsqThreads + threadIdx.x; i < n; i += (int64_t)gridDim.x * kSsqThreads) {
    const double v = x[i];
    acc = fma(v, v, acc);
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kSsqThreads / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) s[threadIdx.x] += s[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_sum_of_squares(mamba_context* ctx, const float* x, int64_t count, double* host_result) {
  return guard("mamba_sum_of_squares", [&] { return format("(%lld values)", (long long)count); }, [&] {
    activate(ctx);
    require(host_result && count >= 0, "bad arguments");
    *host_result = 0;
    if (!count) return;
    require(x, "null pointer");
    int blocks = static_cast<int>(std::min<int64_t>(kSsqMaxBlocks, (count + kSsqThreads - 1) / kSsqThreads));
    auto* partial = static_cast<double*>(workspace(ctx, kWsStaging, static_cast<size_t>(blocks) * 8));
    sum_of_squares_kernel<<<blocks, kSsqThreads, 0, ctx->stream>>>(x, count, partial);
    check_launch(ctx, "sum_of_squares_kernel");
    std::vector<double> host(static_cast<size_t>(blocks));
    check_cuda(cudaMemcpyAsync(host.data(), partial, static_cast<size_t>(blocks) * 8, cudaMemcpyDeviceToHost, ctx->stream), "cudaMemcpyAsync d2h");
    check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
    double sum = 0;
    for (double v : host) sum += v;
    *host_result = sum;
  });
}
