// Fused greedy decode step for one sequence (batch 1): embedding, every layer (add + RMSNorm, in_proj, conv update,
// x_proj, dt_proj + state update, out_proj), norm_f, lm_head and argmax in ONE persistent cooperative kernel.
//
// Why: a batch-1 step is ~150 tiny dependent kernels; even replayed as a CUDA graph each costs a launch gap and
// a memory-latency ramp (0.6 ms for 130m against a 0.06 ms weight-bytes floor). Here every block stays resident
// and the phases are separated by a grid barrier (one atomic per block + a spin on one counter), 4 per layer:
//   P1  residual += out (each block keeps its own copy of the fp32 residual row in shared memory and updates it
//       redundantly, so no block waits for another to write it), RMSNorm, in_proj GEMV (one warp per output
//       column); the warp that produced x[e] also runs the conv update of channel e (conv + SiLU → u[e]).
//   P2  x_proj GEMV → dbc.          P3  dt_proj + softplus + state update + readout + gate → y (G lanes a channel).
//   P4  out_proj GEMV → out.        Final: residual += out, norm_f, lm_head GEMV with a running argmax per warp,
//       block partials, barrier, block 0 reduces them.
// Same bits as the op-by-op path (and so as the captured graph) by construction: every stage calls the building
// blocks of the standalone kernel it replaces (blocks/<op>.cuh), with the same thread mapping — add_rmsnorm_row_kernel's
// (norm_threads logical threads) and its block sum, gemv_kernel's lane-strided 16-byte chunks, fma_chunk and
// butterfly, the conv update step, state_update_group_kernel's lane groups and SSM step, the argmax rule. What stays
// here is the loop structure only this kernel has: weight rows and operands loaded before a grid barrier releases
// the input (preload_rows, warp_dots_pre, the P1 conv operands, P3's ChannelIn), several rows side by side. The barrier counter only grows: the plan adds (4·layers + 1)·grid per step on the host and
// passes the base, so nothing has to be reset between steps. The token comes in as a kernel argument and the
// chosen id goes out through mapped pinned memory: one launch and one stream synchronisation per step.
// A phase costs a barrier (~0.65 us for the last block to arrive and leave) plus its chain of dependent memory round
// trips (~0.5-1 us each), so every load that does not depend on the phase's input is issued before that input is
// read (P1: norm weights, the warp's first in_proj rows and conv operands; P2/P4: whole rows at once; P3: W_dt, A,
// the state, u, z), and the next layer is prefetched into L2 by the blocks that have no work in P2 and P3.
// MAMBA_DECODE_TRACE=<file> writes the last step's per-phase timings when the plan is destroyed (write_trace);
// MAMBA_DECODE_GRID=<blocks> overrides the grid (both diagnostics, read into the context's tuning). The launch shapes
// (threads, rows and chunks in flight, preload depths) are tuning::decode_*, with their measurements.
#include "common.cuh"
#include "blocks/add_rmsnorm.cuh"
#include "blocks/argmax.cuh"
#include "blocks/causal_conv1d_update.cuh"
#include "blocks/linear.cuh"
#include "blocks/selective_state_update.cuh"
#include "grid_barrier.cuh"

#include <algorithm>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

struct mamba_decode_plan {
  int device = 0;
  mamba_dtype dtype = MAMBA_DTYPE_F32;
  int grid = 0;
  size_t smem = 0;
  unsigned long long base = 0;  // barrier arrivals so far
  int barriers_per_step = 0;
  int vocab = 0;
  void* scratch = nullptr;               // device: z, u, dbc, y, out (dtype), best values/indices, counter
  mamba_decode_layer* layers = nullptr;  // device copy of the layer table
  int32_t* host_result = nullptr;        // pinned, mapped
  int32_t* device_result = nullptr;
  // kernel parameters (device pointers into scratch/layers)
  struct Params {
    int layers, D, E, N, R, K, V, G, norm_threads;
    float eps;
    mamba_dtype conv_state_dtype;
    const void* embed;
    const float* norm_f;
    const void* lm_head;
    const mamba_decode_layer* layer;
    void *z, *u, *dbc, *y, *out;
    float* best_v;
    int* best_i;
    unsigned long long* counter;
    int32_t* result;
    unsigned long long* trace;  // MAMBA_DECODE_TRACE: [barriers + 1][grid][8] (see write_trace), else null
  } p{};
  std::string trace_path;
};

namespace mamba {

constexpr int kDecodeThreads = tuning::decode_threads;
constexpr int kDecodeWarps = kDecodeThreads / 32;
constexpr size_t kHeadPrefetch = tuning::decode_head_prefetch_bytes;
constexpr int kQe = tuning::decode_row_chunks_in_flight;  // x_proj, out_proj
using DecodeParams = mamba_decode_plan::Params;

// Pulls `bytes` at p into L2 (spread over the threads; no registers held, no ordering); only blocks from `first_block`
// on take part (the ones with no work in the current phase). (A Hopper bulk prefetch, cp.async.bulk.prefetch.L2 of 64 KB
// a thread, was measured slower: the issuing threads stalled ~30 us a layer.)
__device__ __forceinline__ void prefetch_l2(const void* p, size_t bytes, int first_block = 0) {
  if (!p || (int)blockIdx.x < first_block) return;
  const size_t stride = (size_t)(gridDim.x - first_block) * blockDim.x;
  const char* c = static_cast<const char*>(p);
  const size_t lines = (bytes + 127) / 128;
  for (size_t i = (size_t)(blockIdx.x - first_block) * blockDim.x + threadIdx.x; i < lines; i += stride)
    asm volatile("prefetch.global.L2 [%0];" : : "l"(c + i * 128));
}

// Loads written by other blocks during this kernel go through L2 only (never a stale L1 line).
template <class T> __device__ __forceinline__ float ld_act(const T* p, int i) {
  if constexpr (sizeof(T) == 4) return __ldcg(reinterpret_cast<const float*>(p) + i);
  else {
    const unsigned short bits = __ldcg(reinterpret_cast<const unsigned short*>(p) + i);
    return to_f<T>(*reinterpret_cast<const T*>(&bits));
  }
}

// The x values of chunk `base`: floats in shared memory already rounded to the weight dtype (XS), or 16 bytes of TW in
// global memory written by other blocks (through L2).
template <class TW, bool XS> __device__ __forceinline__ void load_x_chunk(const void* x, int base, float (&xv)[chunk_elems<TW>()]) {
  if constexpr (XS) {
    const float4* xp = reinterpret_cast<const float4*>(static_cast<const float*>(x) + base);
#pragma unroll
    for (int q = 0; q < 4 / (int)sizeof(TW); ++q) {
      const float4 f = xp[q];
      xv[4 * q] = f.x; xv[4 * q + 1] = f.y; xv[4 * q + 2] = f.z; xv[4 * q + 3] = f.w;
    }
  } else {
    unpack16<TW>(__ldcg(reinterpret_cast<const uint4*>(static_cast<const TW*>(x) + base)), xv);
  }
}

// The lane loop over 16-byte chunks from `base0` on (lane-strided by 32 chunks), C rows side by side; acc is not reset.
template <class TW, bool XS, int C>
__device__ __forceinline__ void warp_dots_vec_from(const TW* const (&wr)[C], int k, int base0, const void* x, float (&acc)[C]) {
  constexpr int V = chunk_elems<TW>();
#pragma unroll 2
  for (int base = base0; base < k; base += 32 * V) {
    float xv[V];
    load_x_chunk<TW, XS>(x, base, xv);
    uint4 raw[C];
#pragma unroll
    for (int c = 0; c < C; ++c) raw[c] = wr[c] ? __ldg(reinterpret_cast<const uint4*>(wr[c] + base)) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int c = 0; c < C; ++c) fma_chunk<TW>(raw[c], xv, acc[c]);
  }
}

// Output columns of y = x·wᵀ: gemv_kernel's arithmetic (lane-strided 16-byte weight loads when vec, per-lane fmaf in
// index order, xor butterfly), for C columns at once (independent accumulators, so C rows' loads are in flight
// together; each column's own order is unchanged). x is in shared memory as floats already rounded to the weight
// dtype (XS) or in global memory in the weight dtype (read 16 bytes at a time, through L2).
template <class TW, bool XS, int C>
__device__ __forceinline__ void warp_dots(const TW* const (&wr)[C], int k, bool vec, int lane, const void* x, float (&acc)[C]) {
#pragma unroll
  for (int c = 0; c < C; ++c) acc[c] = 0.f;
  if (vec) {
    warp_dots_vec_from<TW, XS, C>(wr, k, lane * chunk_elems<TW>(), x, acc);
  } else {
    for (int j = lane; j < k; j += 32) {
      const float xj = XS ? static_cast<const float*>(x)[j] : ld_act(static_cast<const TW*>(x), j);
#pragma unroll
      for (int c = 0; c < C; ++c)
        if (wr[c]) acc[c] = fmaf(to_f<TW>(wr[c][j]), xj, acc[c]);
    }
  }
  warp_sum_each<C>(acc);
}

// Weight chunks of C rows loaded into registers before the phase's input is waited for (weights never depend on it),
// so their round trip overlaps that wait. Chunk q of a row is the 16 bytes at lane·V + q·32·V: the chunks warp_dots
// walks, in its order.
template <class TW, int C, int Q>
__device__ __forceinline__ void preload_rows(const TW* const (&wr)[C], int k, bool vec, int lane, uint4 (&w)[C][Q]) {
  constexpr int V = chunk_elems<TW>();
#pragma unroll
  for (int q = 0; q < Q; ++q) {
    const int base = lane * V + q * 32 * V;
#pragma unroll
    for (int c = 0; c < C; ++c)
      w[c][q] = vec && wr[c] && base < k ? __ldg(reinterpret_cast<const uint4*>(wr[c] + base)) : make_uint4(0, 0, 0, 0);
  }
}

// warp_dots with the first Q chunks of every row taken from preload_rows' registers (same per-lane order of fmaf,
// same butterfly: the same bits). x chunks for those are all requested before the first FMA.
template <class TW, bool XS, int C, int Q>
__device__ __forceinline__ void warp_dots_pre(const TW* const (&wr)[C], int k, bool vec, int lane, const void* x, const uint4 (&w)[C][Q],
                                              float (&acc)[C]) {
  if (!vec) {
    warp_dots<TW, XS, C>(wr, k, vec, lane, x, acc);
    return;
  }
  constexpr int V = chunk_elems<TW>();
#pragma unroll
  for (int c = 0; c < C; ++c) acc[c] = 0.f;
  uint4 xr[XS ? 1 : Q];
  if constexpr (!XS) {
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      const int base = lane * V + q * 32 * V;
      xr[q] = base < k ? __ldcg(reinterpret_cast<const uint4*>(static_cast<const TW*>(x) + base)) : make_uint4(0, 0, 0, 0);
    }
  }
#pragma unroll
  for (int q = 0; q < Q; ++q) {
    const int base = lane * V + q * 32 * V;
    if (base >= k) break;
    float xv[V];
    if constexpr (XS) load_x_chunk<TW, true>(x, base, xv);
    else unpack16<TW>(xr[q], xv);
#pragma unroll
    for (int c = 0; c < C; ++c) fma_chunk<TW>(w[c][q], xv, acc[c]);
  }
  warp_dots_vec_from<TW, XS, C>(wr, k, lane * V + Q * 32 * V, x, acc);  // the chunks past the registers
  warp_sum_each<C>(acc);
}

// warp_dot over x in global memory with the first Q chunks of the row and of x all requested before the first FMA
// (one round trip instead of one per unrolled pair of chunks); same bits.
template <class TW, int Q>
__device__ __forceinline__ float warp_dot_all(const TW* wr, int k, bool vec, int lane, const void* x) {
  const TW* w1[1] = {wr};
  uint4 w[1][Q];
  preload_rows<TW, 1, Q>(w1, k, vec, lane, w);
  float a1[1];
  warp_dots_pre<TW, false, 1, Q>(w1, k, vec, lane, x, w, a1);
  return a1[0];
}

// The fp32 residual row (+= delta) and its RMSNorm statistics as add_rmsnorm_row_kernel computes them with `nt`
// threads (the threads past nt add nothing); returns 1/rms.
template <class T>
__device__ float block_residual_norm(float* h, const T* delta, int D, int nt, float eps, float* s_part) {
  const int tid = threadIdx.x;
  float ss = 0.f;
  if (tid < nt) {
    for (int j = tid; j < D; j += nt) {
      float v = h[j];
      if (delta) {
        v = rmsnorm_add_residual<float>(v, ld_act(delta, j));
        h[j] = v;
      }
      rmsnorm_accumulate(v, ss);
    }
  }
  const float tot = rmsnorm_block_sum(ss, s_part, nt / 32);
  __syncthreads();  // s_part is reused by the next call
  return rmsnorm_inv(tot, D, eps);
}

template <class T>
__global__ void __launch_bounds__(kDecodeThreads, 1) decode_step_kernel(const DecodeParams p, int token, unsigned long long base) {
  extern __shared__ float smem[];
  float* h = smem;                 // [D] residual row (fp32)
  float* xs = h + p.D;             // [D] normed row rounded to T
  float* s_dbc = xs + p.D;         // [R + 2N]
  float* s_part = s_dbc + p.R + 2 * p.N;  // [8]
  float* s_bv = s_part + 8;        // [8]
  int* s_bi = reinterpret_cast<int*>(s_bv + 8);  // [8]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int gwarp = blockIdx.x * kDecodeWarps + warp, nwarps = gridDim.x * kDecodeWarps;
  const int D = p.D, E = p.E, N = p.N, R = p.R, K = p.K, G = p.G;
  const int ldbc = R + 2 * N;
  T* z = static_cast<T*>(p.z);
  T* u = static_cast<T*>(p.u);
  T* dbc = static_cast<T*>(p.dbc);
  T* y = static_cast<T*>(p.y);
  T* out = static_cast<T*>(p.out);
  unsigned long long target = base;
  const unsigned long long nb = gridDim.x;
  int phase = 0;  // barriers passed this step (the trace's row)
  auto barrier = [&] {
    ++phase;
    grid_barrier(p.counter, target += nb, p.trace ? p.trace + ((size_t)phase * gridDim.x + blockIdx.x) * 8 : nullptr);
  };
  // Sub-phase marks (thread 0's view): stored in the entry of the barrier that ends the current phase.
  auto mark = [&](int i) {
    if (p.trace && tid == 0) p.trace[((size_t)(phase + 1) * gridDim.x + blockIdx.x) * 8 + 4 + i] = clock64();
  };
  if (p.trace && tid == 0) {
    unsigned long long* t0 = p.trace + (size_t)blockIdx.x * 8;
    t0[0] = t0[2] = clock64();
    t0[1] = t0[3] = global_timer_ns();
  }

  const T* erow = static_cast<const T*>(p.embed) + (size_t)token * D;
  for (int j = tid; j < D; j += kDecodeThreads) h[j] = to_f<T>(erow[j]);
  __syncthreads();

  const size_t es = sizeof(T);
  // The next layer's weights and state are streamed into L2 by the blocks that have no work in a phase (issuing ~60 K
  // line prefetches costs ~2 us of a block's time): P1's and P2's inputs during P2, P3's and P4's during P3.
  auto prefetch_front = [&](const mamba_decode_layer& n, int fb) {
    prefetch_l2(n.norm_weight, (size_t)D * 4, fb);
    prefetch_l2(n.in_proj_weight, (size_t)2 * E * D * es, fb);
    prefetch_l2(n.conv_weight, (size_t)E * K * 4, fb);
    prefetch_l2(n.conv_bias, (size_t)E * 4, fb);
    prefetch_l2(n.conv_state, (size_t)E * K * dtype_size(p.conv_state_dtype), fb);
    prefetch_l2(n.x_proj_weight, (size_t)ldbc * E * es, fb);
  };
  auto prefetch_back = [&](const mamba_decode_layer& n, int fb) {
    prefetch_l2(n.dt_proj_weight, (size_t)E * R * es, fb);
    prefetch_l2(n.dt_proj_bias, (size_t)E * 4, fb);
    prefetch_l2(n.A, (size_t)E * N * 4, fb);
    prefetch_l2(n.ssm_state, (size_t)E * N * 4, fb);
    prefetch_l2(n.D, (size_t)E * 4, fb);
    prefetch_l2(n.out_proj_weight, (size_t)D * E * es, fb);
  };
  // First blocks with no x_proj column (P2) and no channel (P3); 0 where every block has work (all prefetch then).
  auto first_idle = [&](int warps_needed) {
    const int b = (warps_needed + kDecodeWarps - 1) / kDecodeWarps;
    return b < (int)gridDim.x ? b : 0;
  };
  const int p2_idle = first_idle(ldbc), p3_idle = first_idle((E + 32 / G - 1) / (32 / G));
  if (p.layers > 0) {
    prefetch_front(p.layer[0], 0);
    prefetch_back(p.layer[0], 0);
  }
  for (int l = 0; l < p.layers; ++l) {
    const mamba_decode_layer& Ly = p.layer[l];
    // ---- P1: residual + norm (every block), in_proj + conv update --------------------------------------
    // Everything that does not depend on `out` (P4's result) is requested first: the norm weights, the warp's first
    // in_proj rows (kQin 16-byte chunks a lane each), and the conv operands of the channels its lanes finish; their
    // round trips overlap the wait for `out` and the norm's reductions. Same arithmetic, same order.
    const T* Win = static_cast<const T*>(Ly.in_proj_weight);
    const bool vin = chunked_rows_ok<T>(Win, D);
    constexpr int C = tuning::decode_in_proj_columns;  // in_proj columns a warp at once
    constexpr int kQin = tuning::decode_in_proj_preload_chunks, kNw = tuning::decode_norm_weights_per_thread;
    const T* rows0[C];
#pragma unroll
    for (int c = 0; c < C; ++c) rows0[c] = gwarp + c * nwarps < 2 * E ? Win + (size_t)(gwarp + c * nwarps) * D : nullptr;
    uint4 win[C][kQin];
    preload_rows<T, C, kQin>(rows0, D, vin, lane, win);
    const float* nw = static_cast<const float*>(Ly.norm_weight);
    float nwr[kNw];
#pragma unroll
    for (int i = 0; i < kNw; ++i) nwr[i] = tid + i * kDecodeThreads < D ? nw[tid + i * kDecodeThreads] : 0.f;
    // conv operands of the channel this lane finishes in the first round (lane c < C, column gwarp + c·nwarps < E)
    const int ccol = gwarp + lane * nwarps;
    const bool conv_pre = lane < C && ccol < E && K <= kConvMaxTaps;
    float cst[kConvMaxTaps], cwr[kConvMaxTaps], cbr = 0.f;  // old columns 1..K-1, taps, bias
    if (conv_pre) {
      const float* cw = static_cast<const float*>(Ly.conv_weight) + (size_t)ccol * K;
      const float* cb = static_cast<const float*>(Ly.conv_bias);
      conv_update_load_history(Ly.conv_state, p.conv_state_dtype, (size_t)ccol * K, K, cst);
#pragma unroll
      for (int k = 0; k < kConvMaxTaps; ++k) cwr[k] = k < K ? cw[k] : 0.f;
      cbr = cb ? cb[ccol] : 0.f;
    }
    const float inv = block_residual_norm<T>(h, l > 0 ? out : nullptr, D, p.norm_threads, p.eps, s_part);
    mark(0);
#pragma unroll
    for (int i = 0; i < kNw; ++i) {
      const int j = tid + i * kDecodeThreads;
      if (j < D) xs[j] = round_to<T>(rmsnorm_scale(h[j], inv, nwr[i]));
    }
    for (int j = tid + kNw * kDecodeThreads; j < D; j += kDecodeThreads) xs[j] = round_to<T>(rmsnorm_scale(h[j], inv, nw[j]));
    __syncthreads();
    mark(1);
    {
      const float* bias = static_cast<const float*>(Ly.in_proj_bias);
      for (int c0 = gwarp; c0 < 2 * E; c0 += C * nwarps) {
        const bool first = c0 == gwarp;
        const T* rows[C];
#pragma unroll
        for (int c = 0; c < C; ++c) rows[c] = c0 + c * nwarps < 2 * E ? Win + (size_t)(c0 + c * nwarps) * D : nullptr;
        float acc[C];
        if (first) warp_dots_pre<T, true, C, kQin>(rows, D, vin, lane, xs, win, acc);
        else warp_dots<T, true, C>(rows, D, vin, lane, xs, acc);
        mark(2);
#pragma unroll
        for (int c = 0; c < C; ++c) {
          const int col = c0 + c * nwarps;
          if (lane != c || !rows[c]) continue;  // lane c finishes column c (the three run side by side)
          const T val = from_f<T>(gemv_output(acc[c], bias ? bias[col] : 0.f));
          if (col < E) {
            // conv_update_kernel's step for channel col (conv_update_shift with the operands already in registers).
            const float x = to_f<T>(val);
            const size_t sb = (size_t)col * K;
            float cacc;
            if (first && conv_pre) {
              cacc = conv_update_shift(Ly.conv_state, p.conv_state_dtype, sb, K, cst, x, [&](int k) { return cwr[k]; }, cbr);
            } else {
              const float* cw = static_cast<const float*>(Ly.conv_weight) + sb;
              const float* cb = static_cast<const float*>(Ly.conv_bias);
              cacc = conv_update_step(Ly.conv_state, p.conv_state_dtype, sb, K, x, [&](int k) { return cw[k]; }, cb ? cb[col] : 0.f);
            }
            u[col] = from_f<T>(conv_activation(cacc));
          } else {
            z[col - E] = val;
          }
        }
      }
    }
    mark(3);
    barrier();
    // ---- P2: x_proj ----------------------------------------------------------------------------------
    {
      const T* W = static_cast<const T*>(Ly.x_proj_weight);
      const bool vec = chunked_rows_ok<T>(W, E);
      for (int col = gwarp; col < ldbc; col += nwarps) {
        const float acc = warp_dot_all<T, kQe>(W + (size_t)col * E, E, vec, lane, u);
        if (lane == 0) dbc[col] = from_f<T>(gemv_output(acc, 0.f));
      }
    }
    // The blocks without an x_proj column stream the next layer's P1/P2 inputs (after the last layer: the first 16 MB
    // of lm_head) into L2. (Issued at the start of P1, where every block has work, the prefetches cost ~1.6 us a layer.)
    if (l + 1 < p.layers) prefetch_front(p.layer[l + 1], p2_idle);
    else prefetch_l2(p.lm_head, (size_t)p.V * D * es < kHeadPrefetch ? (size_t)p.V * D * es : kHeadPrefetch, p2_idle);
    barrier();
    // ---- P3: dt_proj + state update (state_update_group_kernel, G lanes a channel) -----------------------
    {
      const T* dtw = static_cast<const T*>(Ly.dt_proj_weight);
      const float* dtb = static_cast<const float*>(Ly.dt_proj_bias);
      const float* A = Ly.A;
      const float* Dp = Ly.D;
      float* state = Ly.ssm_state;
      const int per_warp = 32 / G;
      const int n = lane % G;
      // Everything a channel needs that does not depend on dbc (W_dt entries, biases, u, z, A, the state) is loaded
      // before the wait for dbc, so those round trips overlap it; the arithmetic and its order are unchanged.
      constexpr int kPreR = tuning::decode_dt_weights_per_lane;  // W_dt entries a lane keeps in registers (R <= kPreR·G: all)
      struct ChannelIn { float w[kPreR], dtb, u, z, a, st, dp; };
      auto load_channel = [&](int e0) {
        ChannelIn c{};
        const int e = e0 + lane / G;
        if (e < E) {
#pragma unroll
          for (int i = 0; i < kPreR; ++i)
            if (n + i * G < R) c.w[i] = to_f<T>(dtw[(size_t)e * R + n + i * G]);
          c.dtb = dtb[e];
          c.u = ld_act(u, e);
          if (n == 0) {
            c.z = ld_act(z, e);
            c.dp = Dp ? Dp[e] : 0.f;
          }
          if (n < N) {
            c.a = A[(size_t)e * N + n];
            c.st = state[(size_t)e * N + n];
          }
        }
        return c;
      };
      int e0 = gwarp * per_warp;
      ChannelIn cin = load_channel(e0);
      for (int i = tid; i < ldbc; i += kDecodeThreads) s_dbc[i] = ld_act(dbc, i);
      __syncthreads();
      mark(0);
      for (; e0 < E; e0 += nwarps * per_warp) {
        if (e0 != gwarp * per_warp) cin = load_channel(e0);
        const int e = e0 + lane / G;
        const bool e_ok = e < E;
        float dr = 0.f;
        if (e_ok) {
#pragma unroll
          for (int i = 0; i < kPreR; ++i)
            if (n + i * G < R) dr = fmaf(cin.w[i], s_dbc[n + i * G], dr);
          for (int r = n + kPreR * G; r < R; r += G) dr = fmaf(to_f<T>(dtw[(size_t)e * R + r]), s_dbc[r], dr);
        }
        dr = group_sum(dr, G);
        const float dv = ssm_delta(dr, e_ok ? cin.dtb : 0.f);
        const float uv = e_ok ? cin.u : 0.f;
        const float duv = dv * uv;
        float part = 0.f;
        if (e_ok && n < N) {
          const float hv = ssm_state_step(dv, ssm_scaled_a(cin.a), cin.st, duv, s_dbc[R + n]);
          state[(size_t)e * N + n] = hv;
          part = hv * s_dbc[R + N + n];
        }
        part = group_sum(part, G);
        if (e_ok && n == 0) y[e] = from_f<T>(ssm_gate_output(part, cin.dp, uv, cin.z));
      }
    }
    if (l + 1 < p.layers) prefetch_back(p.layer[l + 1], p3_idle);
    mark(1);
    barrier();
    // ---- P4: out_proj ------------------------------------------------------------------------------
    {
      const T* W = static_cast<const T*>(Ly.out_proj_weight);
      const bool vec = chunked_rows_ok<T>(W, E);
      const float* bias = static_cast<const float*>(Ly.out_proj_bias);
      for (int col = gwarp; col < D; col += nwarps) {
        const float acc = warp_dot_all<T, kQe>(W + (size_t)col * E, E, vec, lane, y);
        if (lane == 0) out[col] = from_f<T>(gemv_output(acc, bias ? bias[col] : 0.f));
      }
    }
    mark(0);
    barrier();
  }
  // ---- final: residual + norm_f (fp32 output, then rounded to the lm_head dtype), lm_head, argmax --------
  const float inv = block_residual_norm<T>(h, p.layers > 0 ? out : nullptr, D, p.norm_threads, p.eps, s_part);
  for (int j = tid; j < D; j += kDecodeThreads) xs[j] = round_to<T>(rmsnorm_scale(h[j], inv, p.norm_f[j]));
  __syncthreads();
  mark(0);
  float bv = -INFINITY;
  int bi = kArgmaxNone;
  {
    const T* W = static_cast<const T*>(p.lm_head);
    const bool vec = chunked_rows_ok<T>(W, D);
    auto head = [&](auto rows_in_flight) {
      constexpr int C = decltype(rows_in_flight)::value;  // lm_head rows in flight per warp
      for (int c0 = gwarp; c0 < p.V; c0 += C * nwarps) {
        const T* rows[C];
#pragma unroll
        for (int c = 0; c < C; ++c) rows[c] = c0 + c * nwarps < p.V ? W + (size_t)(c0 + c * nwarps) * D : nullptr;
        float acc[C];
        warp_dots<T, true, C>(rows, D, vec, lane, xs, acc);
#pragma unroll
        for (int c = 0; c < C; ++c)
          if (rows[c]) argmax_offer(bv, bi, gemv_output(acc[c], 0.f), c0 + c * nwarps);
      }
    };
    head(std::integral_constant<int, tuning::decode_head_rows>{});
    mark(1);
  }
  if (lane == 0) {
    s_bv[warp] = bv;
    s_bi[warp] = bi;
  }
  __syncthreads();
  if (tid == 0) {
    for (int w = 1; w < kDecodeWarps; ++w) argmax_merge(bv, bi, s_bv[w], s_bi[w]);
    p.best_v[blockIdx.x] = bv;
    p.best_i[blockIdx.x] = bi;
  }
  barrier();
  if (blockIdx.x == 0 && warp == 0) {
    bv = -INFINITY;
    bi = kArgmaxNone;
    for (int b = lane; b < (int)gridDim.x; b += 32) argmax_merge(bv, bi, __ldcg(p.best_v + b), __ldcg(p.best_i + b));
    argmax_warp(bv, bi);
    if (lane == 0) *reinterpret_cast<volatile int32_t*>(p.result) = argmax_result(bi);
  }
}

template <class T>
void decode_step_launch(mamba_context* ctx, mamba_decode_plan* plan, int token) {
  void* args[] = {&plan->p, &token, &plan->base};
  check_cuda(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(decode_step_kernel<T>), dim3(plan->grid), dim3(kDecodeThreads), args,
                                         plan->smem, ctx->stream),
             "cudaLaunchCooperativeKernel(decode_step_kernel)");
}

template <class T>
int decode_occupancy(size_t smem) {
  if (smem > 48 * 1024)
    check_cuda(cudaFuncSetAttribute(decode_step_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
               "cudaFuncSetAttribute(decode_step_kernel)");
  int blocks = 0;
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, decode_step_kernel<T>, kDecodeThreads, smem), "cudaOccupancy(decode)");
  return blocks;
}

// MAMBA_DECODE_TRACE=<file>: the last step's per-phase timings, written when the plan is destroyed (a diagnostic for
// tuning the kernel; costs two clock reads and stores per block and barrier while on). For each phase: wall time
// (median over blocks of release-to-release, global timer), the work of the blocks between their release and their
// next arrival (max / median / min, SM cycles) and the wait at the barrier of the block that arrived last (= the
// barrier's own latency) and of the median block.
static void write_trace(mamba_decode_plan* plan) {
  const int P = plan->barriers_per_step, G = plan->grid;
  std::vector<unsigned long long> t((size_t)(P + 1) * G * 8);
  if (cudaMemcpy(t.data(), plan->p.trace, t.size() * 8, cudaMemcpyDeviceToHost) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  FILE* f = std::fopen(plan->trace_path.c_str(), "w");
  if (!f) return;
  int khz = 0;
  cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, plan->device);
  const double us_per_cycle = khz > 0 ? 1e3 / khz : 0.0;
  auto at = [&](int k, int b, int i) { return t[((size_t)k * G + b) * 8 + i]; };
  auto median = [](std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; };
  static const char* kinds[5] = {"P1 norm+in_proj+conv", "P2 x_proj", "P3 dt_proj+state", "P4 out_proj", "final lm_head+argmax"};
  double sum_wall[5] = {}, sum_wmax[5] = {}, sum_wmed[5] = {}, sum_last_wait[5] = {}, sum_med_wait[5] = {};
  int count[5] = {};
  double sum_mark[5][4] = {};
  int n_mark[5][4] = {};
  std::fprintf(f, "# decode step trace: %d phases, grid %d, SM clock %d kHz (cycles -> us x %.6f)\n", P, G, khz, us_per_cycle);
  std::fprintf(f, "# phase kind wall_us work_max_us work_med_us work_min_us lastblock_wait_us med_wait_us slowest_block\n");
  for (int k = 1; k <= P; ++k) {
    std::vector<double> wall(G), work(G), wait(G);
    int slow = 0;
    for (int b = 0; b < G; ++b) {
      wall[b] = (double)(at(k, b, 3) - at(k - 1, b, 3)) * 1e-3;
      work[b] = (double)(at(k, b, 0) - at(k - 1, b, 2)) * us_per_cycle;
      wait[b] = (double)(at(k, b, 2) - at(k, b, 0)) * us_per_cycle;
      if (at(k, b, 1) > at(k, slow, 1)) slow = b;  // the last to arrive (global timer)
    }
    const int kind = k == P ? 4 : (k - 1) % 4;
    const double wmax = *std::max_element(work.begin(), work.end()), wmin = *std::min_element(work.begin(), work.end());
    const double mw = median(wall), mwork = median(work), mwait = median(wait);
    std::fprintf(f, "%d %s %.3f %.3f %.3f %.3f %.3f %.3f %d\n", k, k == P ? "final" : ("L" + std::to_string((k - 1) / 4) + "." + std::to_string(kind + 1)).c_str(),
                 mw, wmax, mwork, wmin, wait[slow], mwait, slow);
    for (int m = 0; m < 4; ++m) {  // sub-phase marks: median over the blocks that wrote one, from the phase's release
      std::vector<double> mv;
      for (int b = 0; b < G; ++b)
        if (at(k, b, 4 + m) > at(k - 1, b, 2)) mv.push_back((double)(at(k, b, 4 + m) - at(k - 1, b, 2)) * us_per_cycle);
      if (!mv.empty()) { sum_mark[kind][m] += median(mv); ++n_mark[kind][m]; }
    }
    sum_wall[kind] += mw; sum_wmax[kind] += wmax; sum_wmed[kind] += mwork; sum_last_wait[kind] += wait[slow]; sum_med_wait[kind] += mwait;
    ++count[kind];
  }
  std::vector<double> step(G);
  for (int b = 0; b < G; ++b) step[b] = (double)(at(P, b, 3) - at(0, b, 3)) * 1e-3;
  std::fprintf(f, "# step (first block start to release of the last barrier, median over blocks): %.2f us\n", median(step));
  std::fprintf(f, "# by kind: count mean_wall_us sum_wall_us mean_work_max_us mean_work_med_us mean_lastblock_wait_us mean_med_wait_us\n");
  for (int i = 0; i < 5; ++i)
    if (count[i])
      std::fprintf(f, "# %-22s %3d %7.3f %8.2f %7.3f %7.3f %7.3f %7.3f\n", kinds[i], count[i], sum_wall[i] / count[i], sum_wall[i],
                   sum_wmax[i] / count[i], sum_wmed[i] / count[i], sum_last_wait[i] / count[i], sum_med_wait[i] / count[i]);
  std::fprintf(f, "# marks (mean over phases of the median block, us after the release): kind m0 m1 m2 m3\n");
  for (int i = 0; i < 5; ++i) {
    std::fprintf(f, "# mark %-22s", kinds[i]);
    for (int m = 0; m < 4; ++m) std::fprintf(f, n_mark[i][m] ? " %7.3f" : "       -", n_mark[i][m] ? sum_mark[i][m] / n_mark[i][m] : 0.0);
    std::fprintf(f, "\n");
  }
  std::fclose(f);
}

static void destroy_plan(mamba_decode_plan* plan) {
  if (!plan) return;
  if (plan->p.trace) {
    if (!plan->trace_path.empty()) write_trace(plan);
    cudaFree(plan->p.trace);
  }
  if (plan->scratch) cudaFree(plan->scratch);
  if (plan->layers) cudaFree(plan->layers);
  if (plan->host_result) cudaFreeHost(plan->host_result);
  cudaGetLastError();
  delete plan;
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_decode_plan_create(mamba_context* ctx, const mamba_decode_model* m, mamba_decode_plan** out) {
  return guard("mamba_decode_plan_create", [&] {
    return params_ok(m) ? format("(layers %d, d %d, E %d, N %d, R %d, K %d, vocab %d, %s)", m->num_layers, m->hidden, m->inner, m->state,
                                 m->rank, m->conv_kernel, m->vocab, dtype_name(m->dtype))
                        : std::string();
  }, [&] {
    require(out != nullptr, "out is null");
    *out = nullptr;
    check_params(m, "mamba_decode_model");
    activate(ctx);
    check_dtype(m->dtype, "dtype");
    check_dtype(m->conv_state_dtype, "conv_state_dtype");
    require(m->num_layers >= 0 && m->hidden > 0 && m->inner > 0 && m->state > 0 && m->rank > 0 && m->conv_kernel >= 1 && m->vocab > 0,
            "bad shape");
    if (m->state > 32) fail(MAMBA_ERR_UNSUPPORTED, format("the fused decode step covers d_state <= 32 (got %d)", m->state));
    if (m->hidden > 16384) fail(MAMBA_ERR_UNSUPPORTED, format("the fused decode step covers hidden <= 16384 (got %d)", m->hidden));
    require(m->embedding && m->norm_f && m->lm_head && (m->num_layers == 0 || m->layers), "null pointer");
    for (int l = 0; l < m->num_layers; ++l) {
      // Layer 0's size is read first: only when it is this library's sizeof is the table's stride known.
      const mamba_decode_layer& L = check_params(&m->layers[l], format("mamba_decode_layer %d", l).c_str());
      require(L.norm_weight && L.in_proj_weight && L.conv_weight && L.conv_state && L.x_proj_weight && L.dt_proj_weight && L.dt_proj_bias &&
                  L.A && L.ssm_state && L.out_proj_weight,
              "null layer pointer");
    }
    int coop = 0;
    check_cuda(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, ctx->device), "cudaDeviceGetAttribute(cooperative)");
    if (!coop) fail(MAMBA_ERR_UNSUPPORTED, "the device does not support cooperative launches");

    auto* plan = new (std::nothrow) mamba_decode_plan();
    if (!plan) fail(MAMBA_ERR_OUT_OF_MEMORY, "host out of memory");
    try {
      plan->device = ctx->device;
      plan->dtype = m->dtype;
      plan->vocab = m->vocab;
      const int D = m->hidden, E = m->inner, N = m->state, R = m->rank;
      plan->smem = sizeof(float) * (2 * (size_t)D + R + 2 * N + 24);
      int occ = 0;
      MAMBA_DISPATCH_DTYPE(m->dtype, T, { occ = decode_occupancy<T>(plan->smem); });
      if (occ < 1) fail(MAMBA_ERR_UNSUPPORTED, "the fused decode kernel does not fit on one multiprocessor");
      plan->grid = tuning::decode_blocks_per_sm * ctx->sm_count;  // fewer arrivals per barrier than a fuller grid
      if (ctx->tune.from_env(kKnobDecodeGrid)) {  // diagnostic: phase cost against the arrivals per barrier
        const int want = ctx->tune.decode_grid;
        if (want < 1 || want > occ * ctx->sm_count)
          fail(MAMBA_ERR_INVALID_ARGUMENT, format("MAMBA_DECODE_GRID=%d: between 1 and %d blocks", want, occ * ctx->sm_count));
        plan->grid = want;
      }
      plan->barriers_per_step = 4 * m->num_layers + 1;
      // scratch: z, u, y [E], dbc [R+2N], out [D] in dtype (each 256-byte aligned), best values/indices [grid], counter
      const size_t es = dtype_size(m->dtype);
      auto al = [](size_t b) { return (b + 255) / 256 * 256; };
      const size_t oz = 0, ou = oz + al(E * es), oy = ou + al(E * es), odbc = oy + al(E * es), oout = odbc + al((R + 2 * N) * es);
      const size_t obv = oout + al(D * es), obi = obv + al(plan->grid * 4), octr = obi + al(plan->grid * 4), total = octr + 256;
      plan->scratch = device_alloc(ctx, total, "cudaMalloc(decode scratch)");
      check_cuda(cudaMemsetAsync(plan->scratch, 0, total, ctx->stream), "cudaMemsetAsync(decode scratch)");
      char* s = static_cast<char*>(plan->scratch);
      if (m->num_layers > 0) {
        plan->layers = static_cast<mamba_decode_layer*>(device_alloc(ctx, sizeof(mamba_decode_layer) * m->num_layers, "cudaMalloc(decode layers)"));
        check_cuda(cudaMemcpyAsync(plan->layers, m->layers, sizeof(mamba_decode_layer) * m->num_layers, cudaMemcpyHostToDevice, ctx->stream),
                   "cudaMemcpyAsync(decode layers)");
      }
      void* hr = host_alloc_mapped(ctx, sizeof(int32_t), "cudaHostAlloc(decode result)");
      plan->host_result = static_cast<int32_t*>(hr);
      void* dr = nullptr;
      check_cuda(cudaHostGetDevicePointer(&dr, hr, 0), "cudaHostGetDevicePointer(decode result)");
      plan->device_result = static_cast<int32_t*>(dr);
      check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");  // the host layer table is the caller's again

      auto& p = plan->p;
      p.layers = m->num_layers; p.D = D; p.E = E; p.N = N; p.R = R; p.K = m->conv_kernel; p.V = m->vocab;
      int G = 1;
      while (G < N) G *= 2;
      p.G = G;
      p.norm_threads = add_rmsnorm_threads(D);
      p.eps = m->eps;
      p.conv_state_dtype = m->conv_state_dtype;
      p.embed = m->embedding;
      p.norm_f = static_cast<const float*>(m->norm_f);
      p.lm_head = m->lm_head;
      p.layer = plan->layers;
      p.z = s + oz; p.u = s + ou; p.y = s + oy; p.dbc = s + odbc; p.out = s + oout;
      p.best_v = reinterpret_cast<float*>(s + obv);
      p.best_i = reinterpret_cast<int*>(s + obi);
      p.counter = reinterpret_cast<unsigned long long*>(s + octr);
      p.result = plan->device_result;
      if (!ctx->tune.decode_trace.empty()) {
        const size_t bytes = (size_t)(plan->barriers_per_step + 1) * plan->grid * 8 * sizeof(unsigned long long);
        p.trace = static_cast<unsigned long long*>(device_alloc(ctx, bytes, "cudaMalloc(decode trace)"));
        check_cuda(cudaMemset(p.trace, 0, bytes), "cudaMemset(decode trace)");
        plan->trace_path = ctx->tune.decode_trace;
      }
    } catch (...) {
      cudaStreamSynchronize(ctx->stream);  // the scratch memset and the layer table copy may still be queued
      destroy_plan(plan);
      throw;
    }
    *out = plan;
  });
}

extern "C" MAMBA_API mamba_status mamba_decode_plan_step(mamba_context* ctx, mamba_decode_plan* plan, int32_t token, int32_t* next_token) {
  return guard("mamba_decode_plan_step", [&] { return format("(token %d)", token); }, [&] {
    activate(ctx);
    require(plan != nullptr && next_token != nullptr, "null pointer");
    require(plan->device == ctx->device, "the plan belongs to another device");
    if (token < 0 || token >= plan->vocab) fail(MAMBA_ERR_INVALID_ARGUMENT, format("token %d is outside [0, %d)", token, plan->vocab));
    MAMBA_DISPATCH_DTYPE(plan->dtype, T, { decode_step_launch<T>(ctx, plan, token); });
    check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize(decode step)");
    plan->base += static_cast<unsigned long long>(plan->barriers_per_step) * plan->grid;
    *next_token = *reinterpret_cast<volatile int32_t*>(plan->host_result);
  });
}

extern "C" MAMBA_API mamba_status mamba_decode_plan_destroy(mamba_context* ctx, mamba_decode_plan* plan) {
  return guard("mamba_decode_plan_destroy", [] { return std::string(); }, [&] {
    if (!plan) return;
    if (ctx) {
      cudaSetDevice(ctx->device);
      if (ctx->stream) cudaStreamSynchronize(ctx->stream);
    }
    destroy_plan(plan);
  });
}
