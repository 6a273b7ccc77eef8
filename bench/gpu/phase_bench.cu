// What one phase of a persistent decode kernel costs (bench/RESULTS.md: both decode targets need a phase of at most
// 1.5–2.6 µs; the fused batch-1 step spends ~5). A cooperative kernel with one 256-thread block per SM runs P phases,
// each ended by the decode step's grid barrier (native/src/grid_barrier.cuh), in four variants:
//   barrier   the barrier alone;
//   exchange  after the barrier every warp reads 16 bytes a lane that another block wrote in the phase before
//             (through L2, like the decode step's activations) and writes its own slot: one dependent round trip;
//   gemv      exchange + a 3 KB weight row a warp read after the barrier (L2-resident, like the decode step's GEMVs
//             with its next-layer L2 prefetch);
//   preload   gemv with the weight row loaded into registers before the barrier (wip/fused-decode-preload).
// Time per phase = (time of P phases − time of 0 phases) / P, CUDA-event medians.
//   cmake -S . -B build/native -DMAMBA_BUILD_BENCH=ON && cmake --build build/native && build/native/phase_bench [phases]
#include "grid_barrier.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CU(x)                                                                          \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s failed: %s\n", #x, cudaGetErrorString(e_));             \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

using mamba::grid_barrier;

constexpr int kThreads = 256;
constexpr int kChunks = 6;  // 16-byte chunks a lane: 6 × 16 B × 32 lanes = 3 KB, one 1536-wide bf16 weight row

enum Mode { kBarrier = 0, kExchange = 1, kGemv = 2, kPreload = 3 };

template <int MODE>
__global__ void __launch_bounds__(kThreads, 1) phases_kernel(int phases, unsigned long long* counter, unsigned long long base,
                                                             const uint4* __restrict__ weights, uint4* exchange, float* sink) {
  const int lane = threadIdx.x & 31;
  const int gwarp = blockIdx.x * (kThreads / 32) + threadIdx.x / 32;
  const int nwarps = gridDim.x * (kThreads / 32);
  // A warp reads the slot of the warp one block further on: always another multiprocessor's write.
  const int peer = (gwarp + kThreads / 32) % nwarps;
  unsigned long long target = base;
  float acc = 0.f;
  uint4 w[kChunks];
  auto load_w = [&](int phase) {
    const uint4* row = weights + ((size_t)(phase & 63) * nwarps + gwarp) * kChunks * 32;
#pragma unroll
    for (int q = 0; q < kChunks; ++q) w[q] = __ldg(row + q * 32 + lane);
  };
  if (MODE == kPreload) load_w(0);
  for (int ph = 0; ph < phases; ++ph) {
    grid_barrier(counter, target += gridDim.x);
    if (MODE == kBarrier) continue;
    // The previous phase's value from another block (L2: written during this kernel, so never cached in L1).
    const uint4 x = __ldcg(exchange + ((size_t)(ph & 1) * nwarps + peer) * 32 + lane);
    float v = __uint_as_float(x.x) + __uint_as_float(x.y) + __uint_as_float(x.z) + __uint_as_float(x.w);
    if (MODE == kGemv) load_w(ph);
    if (MODE >= kGemv) {
#pragma unroll
      for (int q = 0; q < kChunks; ++q) v = fmaf(__uint_as_float(w[q].x), v, __uint_as_float(w[q].y));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    acc += v;
    if (MODE == kPreload && ph + 1 < phases) load_w(ph + 1);  // the next phase's row, before the next barrier
    const uint4 out = make_uint4(__float_as_uint(v), __float_as_uint(acc), 0u, 0u);
    exchange[((size_t)((ph + 1) & 1) * nwarps + gwarp) * 32 + lane] = out;
  }
  if (acc == 12345.f) sink[gwarp] = acc;  // keeps the work alive
}

int main(int argc, char** argv) {
  const int phases = argc > 1 ? std::atoi(argv[1]) : 2000;
  int dev = 0, sms = 0, coop = 0;
  CU(cudaGetDevice(&dev));
  CU(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CU(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  if (!coop) {
    std::fprintf(stderr, "cooperative launch not supported\n");
    return 1;
  }
  const int grid = sms, nwarps = grid * kThreads / 32;
  unsigned long long* counter = nullptr;
  uint4 *weights = nullptr, *exchange = nullptr;
  float* sink = nullptr;
  const size_t wbytes = (size_t)64 * nwarps * kChunks * 32 * sizeof(uint4);  // 64 rows a warp: ~26 MB, L2-resident
  CU(cudaMalloc(&counter, sizeof *counter));
  CU(cudaMemset(counter, 0, sizeof *counter));
  CU(cudaMalloc(&weights, wbytes));
  CU(cudaMemset(weights, 0, wbytes));
  CU(cudaMalloc(&exchange, (size_t)2 * nwarps * 32 * sizeof(uint4)));
  CU(cudaMemset(exchange, 0, (size_t)2 * nwarps * 32 * sizeof(uint4)));
  CU(cudaMalloc(&sink, nwarps * sizeof(float)));
  unsigned long long base = 0;
  cudaEvent_t a, b;
  CU(cudaEventCreate(&a));
  CU(cudaEventCreate(&b));
  auto run = [&](auto kernel, int n) {
    void* args[] = {&n, &counter, &base, &weights, &exchange, &sink};
    CU(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel), dim3(grid), dim3(kThreads), args, 0, 0));
    base += (unsigned long long)n * grid;  // the barrier counter only grows, as in the decode step
  };
  auto time_us = [&](auto kernel, int n) {
    std::vector<float> ts;
    for (int rep = 0; rep < 9; ++rep) {
      CU(cudaEventRecord(a));
      run(kernel, n);
      CU(cudaEventRecord(b));
      CU(cudaEventSynchronize(b));
      float ms = 0.f;
      CU(cudaEventElapsedTime(&ms, a, b));
      ts.push_back(ms * 1000.f);
    }
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
  };
  std::printf("phase cost, %d blocks x %d threads, %d phases (CUDA-event medians of 9)\n", grid, kThreads, phases);
  auto report = [&](const char* name, auto kernel) {
    const float t0 = time_us(kernel, 0), t1 = time_us(kernel, phases);
    std::printf("  %-9s %7.3f us a phase (launch alone %.1f us)\n", name, (t1 - t0) / phases, t0);
  };
  report("barrier", phases_kernel<kBarrier>);
  report("exchange", phases_kernel<kExchange>);
  report("gemv", phases_kernel<kGemv>);
  report("preload", phases_kernel<kPreload>);
  CU(cudaGetLastError());
  for (void* p : {(void*)counter, (void*)weights, (void*)exchange, (void*)sink}) CU(cudaFree(p));
  return 0;
}
