// Selective scan forward (spec §5.4, §11.3) over token-major activations, with the Δ projection in front.
//
// 1. dt_proj: Δr [B·L, E] (fp32) = δ̃ (first R columns of dbc, row stride R+2N) · W_dtᵀ — one cuBLAS GEMM
//    with fp32 accumulation into a reused workspace (fp32, never rounded: the CPU path and the decode step
//    keep Δr in fp32 too, so prefill, decode and the oracle agree to fp32 rounding).
// 2. scan kernel. A block owns CH consecutive channels of one batch row and walks its time range in tiles of TT
//    steps, carrying the fp32 state in registers. Each channel's N states are split over TPC threads, SPT states
//    each (N padded to SPT·TPC with inert states: A = 0, B = C = 0). Tiles are always full: steps past the end
//    get Δ = 0, so ex2(0·A) = 1 and Δu·B = 0 leave the state bit-for-bit unchanged and the recurrence loop has
//    a constant trip count (unrolled 4 steps at a time, so a thread has 4 steps × SPT independent ex2 in flight).
//    Per tile:
//      phase 1  coalesced loads (issued one tile ahead, held in registers during the recurrence) → Δ =
//               softplus(Δr + b_dt) and Δ·u once per (t, e), stored channel-major so a thread reads 4 steps
//               with one 16-byte load; B_t/C_t shared by the block's CH channels (read once per block);
//      phase 2  the recurrence: per step and state { a = ex2(Δ·A·log2 e); h = a·h + (Δu)·B_t; acc += h·C_t }
//               with A pre-scaled by log2 e so the decay is one MUFU.EX2; per-thread partial readouts go to
//               shared memory;
//      phase 3  y = D·u + Σ partials, gated by SiLU(z) in fp32, rounded once, stored coalesced; then phase 1
//               of the next tile (its shared inputs were last read before the barrier that ended phase 2).
// 3. Small batches (fewer blocks than SMs): the sequence is also split into C time chunks so the GPU fills up.
//    Pass 1 runs every chunk but the last from a zero state (chunk 0 from the initial state) and keeps only
//    its end state and ΣΔ per channel; pass 2 (the output pass) rebuilds each chunk's true initial state
//    h_c = ex2(A·log2e·ΣΔ_{c-1})·h_{c-1} + end_{c-1} (exact algebra: the decay over a chunk is the product of
//    its per-step decays) and runs the normal tile loop from it. Twice the ex2 work, a quarter of the
//    sequential steps at C = 8: a win only while the GPU would otherwise idle.
// 4. Variant 1 (MAMBA_SCAN_VARIANT=1, whole-sequence launches only; time-split launches keep variant 0): the same
//    kernel with another phase-2 lane map. Shared memory returns 128 bytes a cycle, one 32-bit register for each
//    of a warp's lanes, so an LDS.128 costs 4 wavefronts; when lane pairs (t, t^1) read the same address the
//    hardware packs two registers a wavefront and it costs 2 (NVIDIA forum "Unexpected shared memory bank
//    conflict", measured on sm_90 in "Discrepancy in LDS.128 wavefronts"). Variant 0 puts a channel's TPC state
//    groups on neighbouring lanes, so the B_t/C_t loads (a lane's SPT states, different for t and t^1) cost 4
//    wavefronts each and are the bulk of the 41.7 M wavefronts RESULTS measured at 8 × 1536 × 2048 × 16 (13 a
//    warp-step, 160 µs at one a cycle). Variant 1 gives lane bit 0 to the channel and lane bit 1 to the state
//    group: B_t/C_t become pair-uniform (2 + 2 wavefronts a step instead of 4 + 4) and Δ/Δu stay shared by lanes
//    (t, t^2) (the t^2 rule is documented for sm_70/75; without it those loads cost 4 instead of 2 every 4
//    steps). Each lane keeps the same (channel, states) work, the same arithmetic in the same order, so states,
//    checkpoints and outputs are variant 0's bits; the partial-readout planes get a pad that keeps the stores
//    conflict-free for the new map, and the checkpoint test runs once per 16 steps instead of every 4.
//    Several channels a thread (B/C reused in registers) was measured slower (RESULTS: 508 µs at 2 channels):
//    at 8 × 1536 × 16 states there are 1,536 warps of 4 states a lane, 2.9 a scheduler; 2 channels a lane leaves
//    768 warps, 1 or 2 a scheduler, and the busiest schedulers then need ~130 µs of MUFU time alone.
// The final state (fp32) is written if asked. mamba_selective_scan_continue starts from that state instead
// of zero (chunked prefill) and overwrites it in place.
#include "common.cuh"
#include "blocks/selective_state_update.cuh"

#include <algorithm>

namespace mamba {

struct ScanArgs {
  const void* u;
  const void* dbc;
  const void* xz;
  void* y;
  const float* delta;  // Δr [B·L, E], before bias and softplus
  const void* dt_bias;
  mamba_dtype dt_bias_dtype;
  const float* A;
  const float* D;
  float* state;
  int init_state;  // 1: state is also the initial state s_{-1} (continuation), read before it is overwritten
  int B, L, E, N, R, ld;
  int chunks, Lc;      // time chunks per row and their length (chunks = 1: Lc = L)
  float* chunk_end;    // [B][chunks][E][N] pass-1 end states (chunk 0: from the true initial state)
  float* chunk_dsum;   // [B][chunks][E]    pass-1 ΣΔ per channel
  float* chunk_init0;  // [B][E][N]         copy of the initial state (continuation with chunks > 1)
  float* ckpt;         // [B][nck][E][N] the state before every kCkInterval-th step (for the backward), or null
  int nck;
};

constexpr int kCkInterval = MAMBA_SCAN_CHECKPOINT_INTERVAL;

enum ScanPass { kPassWhole = 0, kPassChunkState = 1, kPassChunkOutput = 2 };

// V consecutive channels of one time step: the element loads/stores of phases 1 and 3 are 8- or 16-byte vector
// accesses (V = 4) and their address arithmetic is shared by V channels. Prefetched values stay in these raw
// integer registers until they are used: a struct of V 16-bit elements gets split into V registers right at the
// load, and that split waits for the load (measured: bf16 359 µs against 269 µs for f32 before this).
template <int Bytes> struct RawBits;
template <> struct RawBits<2> { using type = unsigned short; };
template <> struct RawBits<4> { using type = unsigned int; };
template <> struct RawBits<8> { using type = uint2; };
template <> struct RawBits<16> { using type = uint4; };
template <class T, int V> using RawVec = typename RawBits<sizeof(T) * V>::type;

template <class T, int V> __device__ __forceinline__ float raw_get(const RawVec<T, V>& r, int v) {
  T t[V];
  memcpy(t, &r, sizeof(r));
  return to_f<T>(t[v]);
}
template <class T, int V> __device__ __forceinline__ RawVec<T, V> raw_pack(const float (&f)[V]) {
  T t[V];
#pragma unroll
  for (int v = 0; v < V; ++v) t[v] = from_f<T>(f[v]);
  RawVec<T, V> r;
  memcpy(&r, t, sizeof(r));
  return r;
}

// MAP: the phase-2 lane map (0: variant 0, a channel's TPC state groups on neighbouring lanes; 1: variant 1, lane bit
// 0 picks the channel and lane bit 1 the state group, see the notes at the top).
template <int SPT, int TPC, int V, int TT_, int MAP = 0>
struct ScanCfg {
  static constexpr int kThreads = tuning::scan_threads;
  static constexpr int CH = kThreads / TPC;    // channels per block (phase 2: TPC threads a channel)
  static constexpr int TT = TT_;
  static constexpr int NP = SPT * TPC;
  static constexpr int CQ = CH / V;            // phases 1/3: channel groups of V, TSTEP time rows in parallel
  static constexpr int TSTEP = kThreads / CQ;
  static constexpr int IT = TT / TSTEP;        // (t, channel group) items per thread per tile
  static constexpr int TP = TT + 4;            // channel-major row pitch (floats): 16-byte aligned rows, spread banks
  // Partial-readout plane pitch per state group. Variant 0: bank offset 8 per group (a warp stores 8 channels × 4
  // groups). Variant 1: a warp stores 32 / TPC channels × TPC groups (TPC ≥ 2), so the offset is 32 / TPC.
  static constexpr int YQ = TT * CH + ((MAP == 0 || TPC == 1) ? 8 : 32 / TPC);
  static constexpr int kSmemFloats = 2 * CH * TP + 2 * TT * NP + TPC * YQ;
  static_assert(SPT % 4 == 0, "SPT must be a multiple of 4 (16-byte shared loads)");
  static_assert(CH % V == 0 && kThreads % CQ == 0 && TT % 4 == 0 && TSTEP <= TT && TT % TSTEP == 0, "bad tile");
  static_assert(TT % MAMBA_SCAN_CHECKPOINT_INTERVAL == 0, "checkpoints are written at tile starts");
  static_assert(V == 1 || YQ % 4 == 0, "phase 3 reads the partial readouts with 16-byte loads");
  static_assert(MAP == 0 || TPC == 1 || (TPC % 2 == 0 && kThreads % (2 * TPC) == 0), "variant 1 needs an even TPC");
};

// Phase-2 role of thread tid: channel c2 of the block and state group j (see ScanCfg's MAP). Both maps are bijections
// of [0, kThreads) onto [0, CH) × [0, TPC) with CH · TPC = kThreads.
template <int TPC, int MAP> __device__ __forceinline__ void scan_phase2_role(int tid, int& c2, int& j) {
  if constexpr (MAP == 0 || TPC == 1) {
    c2 = tid / TPC;
    j = tid % TPC;
  } else {
    constexpr int H = TPC / 2;  // state-group pairs
    const int rest = tid >> 2;
    j = ((tid >> 1) & 1) + 2 * (rest % H);
    c2 = (tid & 1) + 2 * (rest / H);
  }
}

template <class T, int SPT, int TPC, int V, int TT, int PASS, int MAP>
__global__ void __launch_bounds__(tuning::scan_threads) scan_fwd_kernel(const ScanArgs a) {
  static_assert(MAP == 0 || PASS == kPassWhole, "variant 1 runs whole-sequence launches only");
  using Cfg = ScanCfg<SPT, TPC, V, TT, MAP>;
  constexpr int NT = Cfg::kThreads;
  constexpr int CH = Cfg::CH, NP = Cfg::NP, TP = Cfg::TP, YQ = Cfg::YQ, CQ = Cfg::CQ, TSTEP = Cfg::TSTEP, IT = Cfg::IT;
  constexpr int BIT = (TT * NP + NT - 1) / NT;  // B (and C) items per thread per tile
  constexpr bool kOut = PASS != kPassChunkState;
  using VT = RawVec<T, V>;
  using VF = RawVec<float, V>;
  extern __shared__ float4 smem4[];
  float* s_dl = reinterpret_cast<float*>(smem4);  // [CH][TP]  Δ
  float* s_du = s_dl + CH * TP;                   // [CH][TP]  Δ·u
  float* s_B = s_du + CH * TP;                    // [TT][NP]
  float* s_C = s_B + TT * NP;                     // [TT][NP]
  float* s_yp = s_C + TT * NP;                    // [TPC][YQ] partial readouts, [q][tt·CH + c]

  const int tid = threadIdx.x;
  const int chunk = PASS == kPassWhole ? 0 : static_cast<int>(blockIdx.y) % a.chunks;
  const int b = PASS == kPassWhole ? static_cast<int>(blockIdx.y) : static_cast<int>(blockIdx.y) / a.chunks;
  if (PASS == kPassChunkState && chunk == a.chunks - 1) return;  // the last chunk's end state comes from pass 2
  const int e0 = blockIdx.x * CH;
  const int E = a.E, L = a.L, N = a.N;
  const int tbeg = chunk * a.Lc, tend = min(L, tbeg + a.Lc);

  // phase 1/3 role: channels cq·V .. cq·V + V − 1, time rows tq + k·TSTEP (E % V == 0: a group is all in or out)
  const int cq = tid % CQ, tq = tid / CQ;
  const int el = e0 + cq * V;
  const bool el_ok = el < E;
  float dtb[V], Dv[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    dtb[v] = el_ok ? load_any(a.dt_bias, a.dt_bias_dtype, el + v) : 0.f;
    Dv[v] = (el_ok && a.D) ? a.D[el + v] : 0.f;
  }

  // phase 2 role: channel c2, state group j
  int c2, j;
  scan_phase2_role<TPC, MAP>(tid, c2, j);
  const int e2 = e0 + c2;
  float Ap[SPT], h[SPT];
#pragma unroll
  for (int s = 0; s < SPT; ++s) {
    const int n = j * SPT + s;
    const bool ok = e2 < E && n < N;
    Ap[s] = ok ? ssm_scaled_a(a.A[(size_t)e2 * N + n]) : 0.f;
    const size_t si = ((size_t)b * E + e2) * N + n;
    float h0 = 0.f;
    if (ok) {
      if (PASS == kPassWhole) {
        // Continuation: each thread reads exactly the state entries it writes at the end (no cross-thread hazard).
        if (a.init_state) h0 = a.state[si];
      } else if (PASS == kPassChunkState) {
        if (chunk == 0 && a.init_state) {
          h0 = a.state[si];
          a.chunk_init0[si] = h0;  // pass 2's last chunk overwrites a.state while chunk 0 may not have read it yet
        }
      } else {
        if (chunk > 0) {
          // h_c = ex2(A·ΣΔ_{c-1})·h_{c-1} + end_{c-1}, from chunk 0's end (which already includes the initial state).
          const size_t cs = (size_t)b * a.chunks;
          h0 = a.chunk_end[((cs + 0) * E + e2) * N + n];
          for (int k = 1; k < chunk; ++k)
            h0 = fmaf(ex2_approx(a.chunk_dsum[(cs + k) * E + e2] * Ap[s]), h0, a.chunk_end[((cs + k) * E + e2) * N + n]);
        } else if (a.init_state) {
          h0 = a.chunk_init0[si];
        }
      }
    }
    h[s] = h0;
  }
  float dsum = 0.f;  // pass 1: ΣΔ over the chunk (padding adds zeros)

  // Per-thread element pointers at (t = tbeg + tq, channel el), advanced by one tile per iteration; item k is
  // k·TSTEP rows further. Registers hold the next tile's inputs in their storage type (software pipelining:
  // the loads fly during the recurrence; converting at load time would stall on every 16-bit load).
  const size_t row0 = (size_t)b * L + tbeg + tq;
  const T* __restrict__ u_ptr = static_cast<const T*>(a.u) + row0 * E + el;
  const float* __restrict__ d_ptr = a.delta + row0 * E + el;
  const T* __restrict__ z_ptr = static_cast<const T*>(a.xz) + row0 * 2 * E + E + el;
  T* __restrict__ y_ptr = static_cast<T*>(a.y) + row0 * E + el;
  const T* __restrict__ bc_ptr = static_cast<const T*>(a.dbc) + ((size_t)b * L + tbeg) * a.ld + a.R;
  const int kE = TSTEP * E;            // element distance between items (E ≤ 2^24: checked by scan_impl)
  const size_t tileE = (size_t)TT * E;
  const size_t tileBC = (size_t)TT * a.ld;

  VT ru[IT], rz[kOut ? IT : 1];
  VF rd[IT];
  float uc[kOut ? IT : 1][V];
  T rb[BIT], rc[kOut ? BIT : 1];
  // Loads of the tile starting at t0 (pointers already at that tile).
  auto load_tile = [&](int t0) {
    const bool full = t0 + TT <= tend;
#pragma unroll
    for (int k = 0; k < IT; ++k) {
      const bool ok = el_ok && (full || t0 + tq + k * TSTEP < tend);
      ru[k] = VT{};  // all-zero bits: 0 in every element type
      rd[k] = VF{};
      if (ok) {
        ru[k] = *reinterpret_cast<const VT*>(u_ptr + k * kE);
        rd[k] = *reinterpret_cast<const VF*>(d_ptr + k * kE);
      }
    }
#pragma unroll
    for (int k = 0; k < BIT; ++k) {
      const int i = tid + k * NT;
      const int tt = i / NP, n = i % NP;
      const bool ok = i < TT * NP && n < N && (full || t0 + tt < tend);
      rb[k] = ok ? bc_ptr[(size_t)tt * a.ld + n] : from_f<T>(0.f);
      if constexpr (kOut) rc[k] = ok ? bc_ptr[(size_t)tt * a.ld + N + n] : from_f<T>(0.f);
    }
  };
  // Phase 1 of the tile starting at t0 from the registers, then that tile's z loads and the next tile's loads.
  auto stage = [&](int t0) {
    const bool full = t0 + TT <= tend;
#pragma unroll
    for (int k = 0; k < IT; ++k) {
      const int tt = tq + k * TSTEP;
      const bool ok = el_ok && (full || t0 + tt < tend);
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const float dv = ok ? softplus_fast(raw_get<float, V>(rd[k], v) + dtb[v]) : 0.f;  // padding: Δ = 0 keeps the state
        const float uv = raw_get<T, V>(ru[k], v);
        s_dl[(cq * V + v) * TP + tt] = dv;
        s_du[(cq * V + v) * TP + tt] = dv * uv;
        if constexpr (kOut) uc[k][v] = uv;
      }
    }
#pragma unroll
    for (int k = 0; k < BIT; ++k) {
      const int i = tid + k * NT;
      if (i < TT * NP) {
        s_B[i] = to_f<T>(rb[k]);
        if (kOut) s_C[i] = to_f<T>(rc[k]);
      }
    }
    if constexpr (kOut) {
#pragma unroll
      for (int k = 0; k < IT; ++k) {
        const bool ok = el_ok && (full || t0 + tq + k * TSTEP < tend);
        rz[k] = VT{};
        if (ok) rz[k] = *reinterpret_cast<const VT*>(z_ptr + 2 * k * kE);
      }
    }
    if (t0 + TT < tend) {
      u_ptr += tileE;
      d_ptr += tileE;
      bc_ptr += tileBC;
      load_tile(t0 + TT);
    }
  };

  load_tile(tbeg);
  stage(tbeg);
  __syncthreads();
  for (int t0 = tbeg; t0 < tend; t0 += TT) {
    // ---- phase 2: the recurrence, 4 steps per iteration ---------------------------------------
    // The backward's checkpoints: tiles start on multiples of kCkInterval (TT and the chunk length are multiples).
    auto checkpoint = [&](int tt) {
      float* ck = a.ckpt + (((size_t)b * a.nck + (t0 + tt) / kCkInterval) * E + e2) * N;
#pragma unroll
      for (int s = 0; s < SPT; ++s)
        if (j * SPT + s < N) ck[j * SPT + s] = h[s];
    };
    // Steps tt .. tt + 3 of the tile.
    auto recur4 = [&](int tt) {
      const float4 d4 = *reinterpret_cast<const float4*>(s_dl + c2 * TP + tt);
      const float4 u4 = *reinterpret_cast<const float4*>(s_du + c2 * TP + tt);
      const float dd[4] = {d4.x, d4.y, d4.z, d4.w};
      const float uu[4] = {u4.x, u4.y, u4.z, u4.w};
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const float* Bt = s_B + (tt + r) * NP + j * SPT;
        const float* Ct = s_C + (tt + r) * NP + j * SPT;
        float acc0 = 0.f, acc1 = 0.f;
#pragma unroll
        for (int q = 0; q < SPT / 4; ++q) {
          const float4 bq = reinterpret_cast<const float4*>(Bt)[q];
          const float bb[4] = {bq.x, bq.y, bq.z, bq.w};
          float cc[4] = {0.f, 0.f, 0.f, 0.f};
          if constexpr (kOut) {
            const float4 cq4 = reinterpret_cast<const float4*>(Ct)[q];
            cc[0] = cq4.x; cc[1] = cq4.y; cc[2] = cq4.z; cc[3] = cq4.w;
          }
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int s = 4 * q + i;
            h[s] = ssm_state_step(dd[r], Ap[s], h[s], uu[r], bb[i]);  // the decode step's recurrence
            if constexpr (kOut) {
              if (i & 1) acc1 = fmaf(h[s], cc[i], acc1);
              else acc0 = fmaf(h[s], cc[i], acc0);
            }
          }
        }
        if constexpr (kOut) s_yp[j * YQ + (tt + r) * CH + c2] = acc0 + acc1;
        else dsum += dd[r];
      }
    };
    if constexpr (MAP == 0) {
#pragma unroll 2
      for (int tt = 0; tt < TT; tt += 4) {
        if constexpr (kOut) {
          if (a.ckpt && tt % kCkInterval == 0 && t0 + tt < tend && e2 < E) checkpoint(tt);
        }
        recur4(tt);
      }
    } else {
      // The checkpoint test once per kCkInterval steps instead of once per 4.
#pragma unroll 1
      for (int t16 = 0; t16 < TT; t16 += kCkInterval) {
        if (a.ckpt && t0 + t16 < tend && e2 < E) checkpoint(t16);
#pragma unroll 2
        for (int tt = t16; tt < t16 + kCkInterval; tt += 4) recur4(tt);
      }
    }
    __syncthreads();
    // ---- phase 3: readout, D skip, gate, store; then phase 1 of the next tile -------------------
    if constexpr (kOut) {
      const bool full = t0 + TT <= tend;
#pragma unroll
      for (int k = 0; k < IT; ++k) {
        const int tt = tq + k * TSTEP;
        if (el_ok && (full || t0 + tt < tend)) {
          float yv[V];
#pragma unroll
          for (int v = 0; v < V; ++v) yv[v] = Dv[v] * uc[k][v];
#pragma unroll
          for (int q = 0; q < TPC; ++q) {
            const VF p = *reinterpret_cast<const VF*>(s_yp + q * YQ + tt * CH + cq * V);
#pragma unroll
            for (int v = 0; v < V; ++v) yv[v] += raw_get<float, V>(p, v);
          }
#pragma unroll
          for (int v = 0; v < V; ++v) yv[v] *= silu_fast(raw_get<T, V>(rz[k], v));
          *reinterpret_cast<VT*>(y_ptr + k * kE) = raw_pack<T, V>(yv);
        }
      }
      y_ptr += tileE;
      z_ptr += 2 * tileE;
    }
    if (t0 + TT < tend) {
      stage(t0 + TT);
      __syncthreads();
    }
  }
  if (e2 < E) {
    if (PASS == kPassChunkState) {
      const size_t cs = (size_t)b * a.chunks + chunk;
#pragma unroll
      for (int s = 0; s < SPT; ++s) {
        const int n = j * SPT + s;
        if (n < N) a.chunk_end[(cs * E + e2) * N + n] = h[s];
      }
      if (j == 0) a.chunk_dsum[cs * E + e2] = dsum;
    } else if (a.state && (PASS == kPassWhole || chunk == a.chunks - 1)) {
#pragma unroll
      for (int s = 0; s < SPT; ++s) {
        const int n = j * SPT + s;
        if (n < N) a.state[((size_t)b * E + e2) * N + n] = h[s];
      }
    }
  }
}

template <class T, int SPT, int TPC, int V, int TT, int PASS, int MAP = 0>
void launch_scan_pass(mamba_context* ctx, const ScanArgs& a, unsigned rows) {
  using Cfg = ScanCfg<SPT, TPC, V, TT, MAP>;
  const size_t smem = sizeof(float) * Cfg::kSmemFloats;
  if (smem > 48 * 1024)  // opt in to more than 48 KB of dynamic shared memory (per function, on the current device)
    check_cuda(cudaFuncSetAttribute(scan_fwd_kernel<T, SPT, TPC, V, TT, PASS, MAP>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
               "cudaFuncSetAttribute(scan)");
  dim3 grid(static_cast<unsigned>((a.E + Cfg::CH - 1) / Cfg::CH), rows);
  scan_fwd_kernel<T, SPT, TPC, V, TT, PASS, MAP><<<grid, Cfg::kThreads, smem, ctx->stream>>>(a);
  check_launch(ctx, "scan_fwd_kernel");
}

// Time chunks for a grid of `blocks` (b, channel-block) pairs: enough to give every SM about
// tuning::scan_chunk_blocks_per_sm blocks, only when the GPU would otherwise be less than full, never shorter than
// tuning::scan_min_chunk_steps steps, at most tuning::scan_max_chunks; MAMBA_SCAN_CHUNKS > 0 forces the count.
static int pick_chunks(mamba_context* ctx, int64_t blocks, int L) {
  const int forced = ctx->tune.scan_chunks;
  int c = 1;
  if (forced > 0) c = forced;
  else if (blocks < ctx->sm_count) c = static_cast<int>(tuning::scan_chunk_blocks_per_sm * ctx->sm_count / std::max<int64_t>(blocks, 1));
  c = std::min(c, std::max(1, L / tuning::scan_min_chunk_steps));
  return std::max(1, std::min(c, tuning::scan_max_chunks));
}

template <class T, int SPT, int TPC, int V, int TT>
void launch_scan(mamba_context* ctx, ScanArgs a) {
  using Cfg = ScanCfg<SPT, TPC, V, TT>;
  const int64_t blocks = (int64_t)((a.E + Cfg::CH - 1) / Cfg::CH) * a.B;
  const int chunks = pick_chunks(ctx, blocks, a.L);
  if (chunks <= 1 || (int64_t)a.B * chunks > 65535) {
    a.chunks = 1;
    a.Lc = a.L;
    // MAMBA_SCAN_VARIANT: 1 takes the pair-broadcast lane map (every d_state row of dispatch_scan has it); the
    // time-split passes below stay on variant 0.
    if (ctx->tune.scan_variant == 1) launch_scan_pass<T, SPT, TPC, V, TT, kPassWhole, 1>(ctx, a, static_cast<unsigned>(a.B));
    else launch_scan_pass<T, SPT, TPC, V, TT, kPassWhole, 0>(ctx, a, static_cast<unsigned>(a.B));
    return;
  }
  // Chunk length rounded up to whole tiles; the chunk count follows from it.
  int Lc = (a.L + chunks - 1) / chunks;
  Lc = (Lc + TT - 1) / TT * TT;
  a.Lc = Lc;
  a.chunks = (a.L + Lc - 1) / Lc;
  const size_t be = (size_t)a.B * a.E;
  const size_t ends = be * a.chunks * a.N, sums = be * a.chunks, init = a.init_state ? be * a.N : 0;
  float* ws = static_cast<float*>(workspace(ctx, kWsScanChunks, (ends + sums + init) * sizeof(float)));
  a.chunk_end = ws;
  a.chunk_dsum = ws + ends;
  a.chunk_init0 = a.init_state ? ws + ends + sums : nullptr;
  launch_scan_pass<T, SPT, TPC, V, TT, kPassChunkState>(ctx, a, static_cast<unsigned>(a.B * a.chunks));
  launch_scan_pass<T, SPT, TPC, V, TT, kPassChunkOutput>(ctx, a, static_cast<unsigned>(a.B * a.chunks));
}

// Phases 1/3 take 4 channels a thread (vector loads) when every row start is 4-element aligned, else 1.
template <class T, int SPT, int TPC, int TT>
void launch_scan_v(mamba_context* ctx, const ScanArgs& a) {
  constexpr int V = 4;
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % (V * sizeof(T)) == 0; };
  const bool vec = a.E % V == 0 && aligned(a.u) && aligned(a.xz) && aligned(a.y) && reinterpret_cast<uintptr_t>(a.delta) % 16 == 0 &&
                   ctx->tune.scan_vec;
  if constexpr (V * TPC <= TT) {  // TSTEP = V·TPC time rows in parallel must fit a tile
    if (vec) return launch_scan<T, SPT, TPC, V, TT>(ctx, a);
  }
  launch_scan<T, SPT, TPC, 1, TT>(ctx, a);
}

template <class T>
void dispatch_scan(mamba_context* ctx, const ScanArgs& a) {
  // <states a thread SPT, threads a channel TPC, time tile TT> by d_state. Only N <= 16 (130m and every released
  // Mamba-1 size) was measured, on the H200 (B 8, L 2048, bf16; RESULTS "H200, 2026-12-02"): 2 channels a thread
  // 508 µs, 4 channels 1220 µs (spills), time tile 64 670 µs, tile 16 336 µs, against 323 µs here — fewer, fatter
  // threads lose latency hiding. The other rows keep 16..32 states a channel per 4..16 threads, not measured.
  const int N = a.N;
  if (N <= 4) launch_scan_v<T, 4, 1, 16>(ctx, a);
  else if (N <= 8) launch_scan_v<T, 4, 2, 32>(ctx, a);
  else if (N <= 16) launch_scan_v<T, 4, 4, 32>(ctx, a);
  else if (N <= 32) launch_scan_v<T, 8, 4, 32>(ctx, a);
  else if (N <= 64) launch_scan_v<T, 8, 8, 32>(ctx, a);
  else if (N <= 128) launch_scan_v<T, 16, 8, 16>(ctx, a);
  else launch_scan_v<T, 16, 16, 16>(ctx, a);
}

// dt_proj into the Δ workspace: Δr [BL, E] (fp32) = δ̃ [BL, R] (ld) · W_dtᵀ. Returns the workspace pointer.
float* dt_proj(mamba_context* ctx, const void* dbc, mamba_dtype adt, int64_t rows, int64_t ld, const void* w, mamba_dtype wdt, int64_t E, int64_t R) {
  float* delta = static_cast<float*>(workspace(ctx, kWsDelta, static_cast<size_t>(rows * E) * 4));
  const void* wa = w;
  if (wdt != adt) {
    void* t = workspace(ctx, kWsConvertB, static_cast<size_t>(E * R) * 4);
    launch_convert(ctx, w, wdt, t, adt, E * R);
    wa = t;
  }
  gemm_ex(ctx, CUBLAS_OP_T, CUBLAS_OP_N, E, rows, R, wa, adt, R, dbc, adt, ld, 0.f, delta, MAMBA_DTYPE_F32, E);
  return delta;
}

void scan(mamba_context* ctx, const mamba_selective_scan_params& p, bool cont) {
  const void *u = p.u, *dbc = p.dbc, *xz = p.xz, *dt_w = p.dt_weight, *dt_b = p.dt_bias;
  void* y = p.y;
  const mamba_dtype adt = p.act_dtype, wdt = p.dt_weight_dtype, bdt = p.dt_bias_dtype;
  const float *A = p.A, *D = p.D;
  float* state = p.state;
  const int32_t B = p.batch, L = p.length, E = p.channels, N = p.d_state, R = p.dt_rank;
  activate(ctx);
  check_dtype(adt, "act_dtype");
  check_dtype(wdt, "dt_weight_dtype");
  check_dtype(bdt, "dt_bias_dtype");
  require(B >= 0 && L >= 0 && E > 0 && N > 0 && R > 0, "bad shape");
  require(B <= 65535, "batch exceeds 65535");
  require(E <= (1 << 24), "d_inner exceeds 2^24");
  if (N > 256) fail(MAMBA_ERR_UNSUPPORTED, format("d_state %d > 256 is not supported", N));
  if (!B) return;
  require(dt_w && dt_b && A, "null parameter pointer");
  require(!cont || state, "continuation needs a state");
  require(!cont || !p.checkpoints, "checkpoints must be NULL for a continuation");
  if (L == 0) {
    if (state && !cont) check_cuda(cudaMemsetAsync(state, 0, (size_t)B * E * N * 4, ctx->stream), "cudaMemsetAsync state");
    return;
  }
  require(u && dbc && xz && y, "null activation pointer");
  const int ld = R + 2 * N;
  ScanArgs a{};
  a.u = u; a.dbc = dbc; a.xz = xz; a.y = y;
  a.delta = dt_proj(ctx, dbc, adt, (int64_t)B * L, ld, dt_w, wdt, E, R);
  a.dt_bias = dt_b; a.dt_bias_dtype = bdt; a.A = A; a.D = D; a.state = state;
  a.init_state = cont ? 1 : 0;
  a.ckpt = p.checkpoints;
  a.nck = (L + kCkInterval - 1) / kCkInterval;
  a.B = B; a.L = L; a.E = E; a.N = N; a.R = R; a.ld = ld;
  MAMBA_DISPATCH_DTYPE(adt, T, { dispatch_scan<T>(ctx, a); });
}

// "(B .., L .., E .., N .., R .., dtype)" for error messages, when the struct may be read.
std::string scan_shapes(const mamba_selective_scan_params* p) {
  return params_ok(p) ? format("(B %d, L %d, E %d, N %d, R %d, %s)", p->batch, p->length, p->channels, p->d_state, p->dt_rank, dtype_name(p->act_dtype))
                      : std::string();
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_selective_scan_fwd(mamba_context* ctx, const mamba_selective_scan_params* params) {
  return guard("mamba_selective_scan_fwd", [&] { return scan_shapes(params); },
               [&] { scan(ctx, check_params(params, "mamba_selective_scan_params"), false); });
}

extern "C" MAMBA_API mamba_status mamba_selective_scan_continue(mamba_context* ctx, const mamba_selective_scan_params* params) {
  return guard("mamba_selective_scan_continue", [&] { return scan_shapes(params); },
               [&] { scan(ctx, check_params(params, "mamba_selective_scan_params"), true); });
}
