// Grid-wide barrier of the persistent kernels (decode_step.cu) and of bench/gpu/phase_bench.cu, which measures
// its cost. Needs a cooperative launch (every block resident).
#pragma once

namespace mamba {

// All blocks arrive, then wait for the counter to reach `target` (monotonic across steps).
// The block's writes are ordered before thread 0's release (bar.sync, then red.release is cumulative); the acquire
// load that sees the target orders every block's earlier writes before this block's later reads.
// With `trace`, thread 0 stores {SM clock, global timer} at arrival and at release into trace[0..3] (the decode
// step's MAMBA_DECODE_TRACE diagnostic: which phases are slow, and how long the slowest block waits).
__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ void grid_barrier(unsigned long long* counter, unsigned long long target, unsigned long long* trace = nullptr) {
  __syncthreads();
  if (threadIdx.x == 0) {
    if (trace) {
      trace[0] = clock64();
      trace[1] = global_timer_ns();
    }
    asm volatile("red.release.gpu.global.add.u64 [%0], 1;" : : "l"(counter) : "memory");
    unsigned long long v;
    do {
      asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(counter) : "memory");
    } while (v < target);
    if (trace) {
      trace[2] = clock64();
      trace[3] = global_timer_ns();
    }
  }
  __syncthreads();
}

}  // namespace mamba
