// Backward of the selective scan with dt_proj fused in front (spec §12.4), from a zero state. Never stores L×E×N
// states: it starts from the forward's saved states (mamba_selective_scan_params.checkpoints, one every
// kCk = MAMBA_SCAN_CHECKPOINT_INTERVAL steps; when they are not given, it runs the forward first to make them).
//
// 1. Δr [B·L, E] f32 = δ̃·W_dtᵀ: the forward's own dt_proj (same GEMM, same bits).
// 2. scan_bwd_tile_kernel (d_state ≤ 64): a block owns CH channels of one batch row, TPC threads a channel with 4
//    states each (the forward's layout, so the recomputed states are the forward's bits). Time runs in tiles of kCk
//    steps from the last to the first; per tile:
//      phase 1  Δ = softplus(Δr + b), u, g y = g out·SiLU(z) into channel-major shared memory, B and C by step;
//      phase 2  from the tile's checkpoint, the recurrence forward over the tile with the states kept in registers
//               (readouts Σ_n h·C as per-thread partials; g C terms g y·h reduced over the warp's channels at once),
//               then the adjoint in reverse: λ_t = g y_t·C_t + a_{t+1}·λ_{t+1}, with per (t, e) the partials of
//               Σ_n λ·B and Σ_n A·λ·a_t·h_{t−1} (h_{t−1} from the registers, no reverse-time division), per (e, n) the
//               sum over t of g A, and per (t, n) the g B terms λ·Δu reduced over the warp's channels;
//      phase 3  per (t, e): g u = Δ·Σλ·B + D·g y, g Δ = u·Σλ·B + ΣA·λ·a·h → softplus′ → g Δr, g z from the readout;
//               per (t, n): g B and g C summed over the block's warps → per-block partials.
//    Channel sums within a warp are reduce-scatters (each shuffle level halves the values a lane holds), so a warp
//    spends 7 shuffles, not 24, on its 8 channels × 4 states of one step. One exp2 a state-step forward and one in
//    reverse; every reduction has a fixed order, so results are deterministic run to run. The next tile's global
//    inputs are loaded as raw bits before this tile's phase 3 (their latency hides behind it).
//    Small batches (fewer blocks than ~3 a multiprocessor) split a row's tiles into chunks: kBwdLambda runs only the
//    adjoint of each chunk from λ = 0, kBwdChunk joins those right to left into the λ entering its chunk and runs the
//    tiles (TileBwdPass). g A, g D and g b_dt then have (row, chunk) partials.
//    Measured (H100, 130m shape, bf16): 1,670 µs at 8 × 2048, 318 µs at 1 × 2048 (bench/RESULTS.md).
//    d_state > 64: scan_bwd_kernel, the first version (a thread a state, segment checkpoints of its own, libm exp).
// 3. scan_bwd_bc_kernel: g B and g C = Σ over channel blocks (in order) of the partials → grad_dbc columns R..R+2N−1.
// 4. g δ̃ [B·L, R] = g Δr·W_dt and grad_dt_weight += g Δrᵀ·δ̃ (f32 cuBLAS GEMMs on f32 copies of W_dt and δ̃);
//    g δ̃ → grad_dbc columns 0..R−1.
// 5. grad_A_log += A ⊙ Σ gA, grad_D += Σ gD, grad_dt_bias += Σ gb over the (row, chunk) partials, in order.
// The per-block g B/g C partials take G·B·L·2N floats (G = E/CH channel blocks); the batch runs in slices that keep
// them under kPartialBytes.
#include "common.cuh"
#include "blocks/selective_state_update.cuh"

#include <algorithm>

namespace mamba {

constexpr int kBwdTT = 16;    // time tile
constexpr int kBwdSeg = 128;  // checkpoint segment (multiple of kBwdTT)
constexpr size_t kPartialBytes = 256u << 20;

struct ScanBwdArgs {
  const void* u;
  const void* dbc;
  const void* xz;
  mamba_dtype adt;
  const void* gout;
  mamba_dtype godt;
  const float* dr;  // Δr [B·L, E]
  const void* dt_bias;
  mamba_dtype bdt;
  const float* A;
  const float* D;
  void* gu;
  mamba_dtype gudt;
  void* gxz;
  mamba_dtype gxdt;
  float* gdr;       // g Δr [B·L, E]
  float* part_bc;   // [G][Bs][L][2N] for the slice
  float* part_A;    // [B][E][N]
  float* part_D;    // [B][E]
  float* part_db;   // [B][E]
  float* ck;        // [G·Bs][nseg][NT] segment checkpoints for the slice (scan_bwd_kernel)
  const float* fck; // [B][nck][E][N] the forward's checkpoints (scan_bwd_tile_kernel)
  int nck;
  int chunks, ck_per_chunk;  // time split (scan_bwd_tile_kernel): chunks of ck_per_chunk tiles a row
  float* ch_lam;    // [B][chunks][E][N] λ at each chunk's first step from a zero λ after it (pass kBwdLambda)
  float* ch_dsum;   // [B][chunks][E] Σ Δ over each chunk
  float* ch_dfirst; // [B][chunks][E] Δ at each chunk's first step
  int b0, Bs;       // batch slice
  int L, E, N, R, ld, nseg;
};

__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }

template <int NP>
struct BwdCfg {
  static constexpr int CH = NP >= 4 ? 256 / NP : 64;  // channels a block
  static constexpr int NT = CH * NP;                  // threads a block
  static constexpr int NW = NP > 32 ? NP / 32 : 1;    // warps a channel (NP > 32)
  static constexpr int kSmemFloats = 3 * kBwdTT * NT + (kBwdSeg / kBwdTT) * NT + 5 * kBwdTT * CH + 2 * kBwdTT * NP + 4 * (NT / 32 + 1);
};

// Σ over the NP threads of a channel, the same bits in each. NP > 32: warp butterflies, then the channel's warps in
// order through s_red (slot q of a double buffer picked by `parity`; one barrier; every thread must call it).
template <int NP>
__device__ __forceinline__ float chan_sum(float v, float* s_red, int q, int parity) {
  if constexpr (NP <= 32) {
    return group_sum<NP>(v);
  } else {
    constexpr int NT = BwdCfg<NP>::NT, NW = BwdCfg<NP>::NW;
    v = group_sum<32>(v);
    float* buf = s_red + (parity * 2 + q) * (NT / 32);
    if ((threadIdx.x & 31) == 0) buf[threadIdx.x / 32] = v;
    __syncthreads();
    const int c = threadIdx.x / NP;
    float r = 0.f;
    for (int w = 0; w < NW; ++w) r += buf[c * NW + w];
    return r;
  }
}

template <int NP>
__global__ void __launch_bounds__(BwdCfg<NP>::NT) scan_bwd_kernel(const ScanBwdArgs a) {
  using Cfg = BwdCfg<NP>;
  constexpr int CH = Cfg::CH, NT = Cfg::NT, TT = kBwdTT, NSUB = kBwdSeg / kBwdTT;
  extern __shared__ float4 smem4[];
  float* s_h = reinterpret_cast<float*>(smem4);  // [TT][NT] states of the tile
  float* s_gb = s_h + TT * NT;                   // [TT][NT] per-thread g B terms
  float* s_gc = s_gb + TT * NT;                  // [TT][NT] per-thread g C terms
  float* s_ck = s_gc + TT * NT;                  // [NSUB][NT] tile-start states of the segment
  float* s_dl = s_ck + NSUB * NT;                // [TT][CH] Δ
  float* s_p = s_dl + TT * CH;                   // [TT][CH] Δr + b_dt
  float* s_u = s_p + TT * CH;                    // [TT][CH] u
  float* s_gy = s_u + TT * CH;                   // [TT][CH] g y (after the gate)
  float* s_y = s_gy + TT * CH;                   // [TT][CH] readout Σ_n s·C
  float* s_B = s_y + TT * CH;                    // [TT][NP]
  float* s_C = s_B + TT * NP;                    // [TT][NP]
  float* s_red = s_C + TT * NP;                  // [4][NT/32] (NP > 32)

  const int tid = threadIdx.x;
  const int g = blockIdx.x, bl = blockIdx.y, b = a.b0 + bl;
  const int e0 = g * CH;
  const int E = a.E, L = a.L, N = a.N;
  const int c = tid / NP, n = tid % NP;
  const int e = e0 + c;
  const bool ok = e < E && n < N;
  const float An = ok ? a.A[(size_t)e * N + n] : 0.f;
  const float Dv = (e < E && a.D) ? a.D[e] : 0.f;
  const size_t row0 = (size_t)b * L;
  float* ck = a.ck + ((size_t)(bl * gridDim.x + g) * a.nseg) * NT;

  // Loads the tile at t0 into shared memory (zeros past L and for padded channels/states).
  auto load_tile = [&](int t0) {
    for (int i = tid; i < TT * CH; i += NT) {
      const int tt = i / CH, cc = i % CH, t = t0 + tt, ee = e0 + cc;
      float dl = 0.f, pv = 0.f, uv = 0.f;
      if (t < L && ee < E) {
        const size_t r = row0 + t;
        pv = a.dr[r * E + ee] + load_any(a.dt_bias, a.bdt, ee);
        dl = softplus_f(pv);
        uv = load_any(a.u, a.adt, r * E + ee);
      }
      s_dl[i] = dl;
      s_p[i] = pv;
      s_u[i] = uv;
    }
    for (int i = tid; i < TT * NP; i += NT) {
      const int tt = i / NP, nn = i % NP, t = t0 + tt;
      float bv = 0.f, cv = 0.f;
      if (t < L && nn < N) {
        const size_t r = (row0 + t) * a.ld + a.R;
        bv = load_any(a.dbc, a.adt, r + nn);
        cv = load_any(a.dbc, a.adt, r + N + nn);
      }
      s_B[i] = bv;
      s_C[i] = cv;
    }
  };
  // The recurrence over the loaded tile from h (no stores).
  auto advance = [&](float& h) {
    for (int tt = 0; tt < TT; ++tt) {
      const float dl = s_dl[tt * CH + c];
      h = fmaf(expf(dl * An), h, dl * s_u[tt * CH + c] * s_B[tt * NP + n]);
    }
  };

  // ---- pass 1: segment checkpoints ----
  float h = 0.f;
  ck[tid] = 0.f;
  const int tlast = (a.nseg - 1) * kBwdSeg;  // the last segment's start; every tile before it is full
  for (int t0 = 0; t0 < tlast; t0 += TT) {
    __syncthreads();
    load_tile(t0);
    __syncthreads();
    advance(h);
    if ((t0 + TT) % kBwdSeg == 0) ck[(size_t)((t0 + TT) / kBwdSeg) * NT + tid] = h;
  }

  // ---- pass 2: segments and tiles in reverse ----
  float lam = 0.f, a_next = 1.f;
  float gA = 0.f, gD = 0.f, gbias = 0.f;
  for (int seg = a.nseg - 1; seg >= 0; --seg) {
    const int s0 = seg * kBwdSeg;
    const int ntile = (min(kBwdSeg, L - s0) + TT - 1) / TT;
    h = ck[(size_t)seg * NT + tid];
    for (int j = 0; j < ntile; ++j) {
      s_ck[j * NT + tid] = h;
      if (j + 1 == ntile) break;
      __syncthreads();
      load_tile(s0 + j * TT);
      __syncthreads();
      advance(h);
    }
    for (int j = ntile - 1; j >= 0; --j) {
      const int t0 = s0 + j * TT;
      __syncthreads();
      load_tile(t0);
      __syncthreads();
      // recompute the tile's states and readouts
      const float h0 = s_ck[j * NT + tid];
      h = h0;
      for (int tt = 0; tt < TT; ++tt) {
        const float dl = s_dl[tt * CH + c];
        h = fmaf(expf(dl * An), h, dl * s_u[tt * CH + c] * s_B[tt * NP + n]);
        s_h[tt * NT + tid] = h;
        const float rd = chan_sum<NP>(h * s_C[tt * NP + n], s_red, 0, tt & 1);
        if (n == 0) s_y[tt * CH + c] = rd;
      }
      __syncthreads();
      // gate: g z (stored) and g y
      for (int i = tid; i < TT * CH; i += NT) {
        const int tt = i / CH, cc = i % CH, t = t0 + tt, ee = e0 + cc;
        float gy = 0.f;
        if (t < L && ee < E) {
          const size_t r = row0 + t;
          const float go = load_any(a.gout, a.godt, r * E + ee);
          const float z = load_any(a.xz, a.adt, r * 2 * E + E + ee);
          const float y = s_y[i] + (a.D ? a.D[ee] : 0.f) * s_u[i];
          const float sz = sigmoid_f(z);
          store_any(a.gxz, a.gxdt, r * 2 * E + E + ee, go * y * sz * (1.f + z * (1.f - sz)));
          gy = go * z * sz;
        }
        s_gy[i] = gy;
      }
      __syncthreads();
      // reverse adjoint
      for (int tt = TT - 1; tt >= 0; --tt) {
        const int t = t0 + tt;
        const float dl = s_dl[tt * CH + c], uv = s_u[tt * CH + c], gy = s_gy[tt * CH + c];
        const float Bn = s_B[tt * NP + n], Cn = s_C[tt * NP + n];
        const float at = expf(dl * An);
        const float sprev = tt > 0 ? s_h[(tt - 1) * NT + tid] : h0;
        lam = fmaf(a_next, lam, gy * Cn);
        a_next = at;
        s_gc[tt * NT + tid] = gy * s_h[tt * NT + tid];
        s_gb[tt * NT + tid] = lam * dl * uv;
        const float as = An * at * sprev;
        gA = fmaf(lam * dl, at * sprev, gA);
        const float su = chan_sum<NP>(lam * dl * Bn, s_red, 0, tt & 1);
        const float sd = chan_sum<NP>(lam * (Bn * uv + as), s_red, 1, tt & 1);
        if (n == 0 && t < L && e < E) {
          const size_t r = row0 + t;
          const float pv = s_p[tt * CH + c];
          const float gp = pv > 20.f ? sd : sd * sigmoid_f(pv);
          a.gdr[r * E + e] = gp;
          gbias += gp;
          gD = fmaf(gy, uv, gD);
          store_any(a.gu, a.gudt, r * E + e, fmaf(gy, Dv, su));
        }
      }
      __syncthreads();
      // g B, g C: the block's channels summed in order → per-block partials
      for (int i = tid; i < TT * NP; i += NT) {
        const int tt = i / NP, nn = i % NP, t = t0 + tt;
        if (t >= L || nn >= N) continue;
        float sb = 0.f, sc = 0.f;
        for (int cc = 0; cc < CH; ++cc) {
          sb += s_gb[tt * NT + cc * NP + nn];
          sc += s_gc[tt * NT + cc * NP + nn];
        }
        float* pr = a.part_bc + (((size_t)g * a.Bs + bl) * L + t) * 2 * N;
        pr[nn] = sb;
        pr[N + nn] = sc;
      }
    }
  }
  if (ok) a.part_A[((size_t)b * E + e) * N + n] = gA;
  if (n == 0 && e < E) {
    a.part_D[(size_t)b * E + e] = gD;
    a.part_db[(size_t)b * E + e] = gbias;
  }
}

// grad_dbc[b, t, R + j] = Σ_g part_bc[g][bl][t][j] (g in order), j < 2N, for the slice's rows.
__global__ void scan_bwd_bc_kernel(const float* __restrict__ part, int G, int Bs, int b0, int L, int N, int R, int ld, void* __restrict__ gdbc,
                                   mamba_dtype gdt) {
  const int64_t total = (int64_t)Bs * L * 2 * N;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    float acc = 0.f;
    for (int g = 0; g < G; ++g) acc += part[(size_t)g * total + i];
    const int64_t row = i / (2 * N);
    const int j = static_cast<int>(i % (2 * N));
    store_any(gdbc, gdt, ((size_t)b0 * L + row) * ld + R + j, acc);
  }
}

// dst [rows, R] f32 = the first R columns of dbc (row stride ld).
__global__ void scan_bwd_gather_dtilde_kernel(const void* __restrict__ dbc, mamba_dtype adt, int64_t rows, int R, int ld, float* __restrict__ dst) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * R; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = load_any(dbc, adt, (size_t)(i / R) * ld + i % R);
}

// grad_dbc[:, 0:R] = src [rows, R].
__global__ void scan_bwd_store_dtilde_kernel(const float* __restrict__ src, int64_t rows, int R, int ld, void* __restrict__ gdbc, mamba_dtype gdt) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * R; i += (int64_t)gridDim.x * blockDim.x)
    store_any(gdbc, gdt, (size_t)(i / R) * ld + i % R, src[i]);
}

// Parameter gradients: Σ over the batch (in order) of the per-row partials.
__global__ void scan_bwd_params_kernel(const float* __restrict__ part_A, const float* __restrict__ part_D, const float* __restrict__ part_db,
                                       const float* __restrict__ A, int B, int E, int N, float* __restrict__ gA_log, float* __restrict__ gD,
                                       float* __restrict__ gdb) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t en = (int64_t)E * N;
  if (i < en) {
    float acc = 0.f;
    for (int b = 0; b < B; ++b) acc += part_A[(size_t)b * en + i];
    gA_log[i] += acc * A[i];
  }
  if (i < E) {
    float d = 0.f, s = 0.f;
    for (int b = 0; b < B; ++b) {
      d += part_D[(size_t)b * E + i];
      s += part_db[(size_t)b * E + i];
    }
    if (gD) gD[i] += d;
    gdb[i] += s;
  }
}

static unsigned gs_blocks(int64_t n) {
  unsigned b = blocks_for(n, 256);
  return b > 65535u * 4 ? 65535u * 4 : b;
}


// ---- scan_bwd_tile_kernel ----------------------------------------------------------------------------------------
constexpr int kCk = MAMBA_SCAN_CHECKPOINT_INTERVAL;

template <int TPC>
struct TileBwdCfg {
  static constexpr int NT = 128;           // threads a block
  static constexpr int SPT = 4;            // states a thread
  static constexpr int NP = SPT * TPC;     // padded d_state
  static constexpr int CH = NT / TPC;      // channels a block
  static constexpr int TT = kCk;           // time tile = checkpoint interval
  static constexpr int TP = TT + 4;        // channel-major row pitch: 16-byte aligned rows
  static constexpr int NW = NT / 32;       // warps
  static constexpr int PQ = TT * CH + 8;   // per-thread-group plane pitch
  static constexpr int IT = TT * CH / NT;  // (t, e) items a thread in phases 1/3 (= TT / TPC)
  static constexpr int kSmemFloats = 3 * CH * TP + 2 * TT * NP + 3 * TPC * PQ + 2 * NW * TT * NP;
  static_assert(TPC >= 1 && TPC <= 16 && 32 % TPC == 0 && TT % TPC == 0 && TT % 4 == 0, "bad tile");
};

// v[0..3] (4 states of this lane's state group) summed over the warp's lanes of the same group (the channels; lane
// bits log2(TPC)..4): each level halves what a lane holds (reduce-scatter); once a lane holds one value the remaining
// levels are plain butterflies. Returns the values in v[0 .. kChanHeld<TPC>); chan_slot says which states they are.
template <int TPC> constexpr int kChanLevels = TPC == 1 ? 5 : TPC == 2 ? 4 : TPC == 4 ? 3 : TPC == 8 ? 2 : TPC == 16 ? 1 : 0;
template <int TPC> constexpr int kChanHeld = kChanLevels<TPC> >= 2 ? 1 : 4 >> kChanLevels<TPC>;

template <int TPC>
__device__ __forceinline__ void chan_reduce(float (&v)[4], int lane) {
#pragma unroll
  for (int lvl = 0; lvl < kChanLevels<TPC>; ++lvl) {
    const int o = 16 >> lvl;
    const int m = 4 >> lvl;  // values a lane holds before this level
    if (m >= 2) {
      const bool up = (lane & o) != 0;
#pragma unroll
      for (int i = 0; i < m / 2; ++i) {
        const float send = up ? v[i] : v[i + m / 2];
        const float keep = up ? v[i + m / 2] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
      }
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], o);
    }
  }
}

// The first state (within the lane's group of 4) of what chan_reduce leaves in a lane: the upper half at each
// scatter level. Lanes that differ only in the butterfly levels' bits hold the same values and store the same bits to
// the same place (a benign duplicate write, no branch).
template <int TPC>
__device__ __forceinline__ int chan_slot(int lane) {
  int base = 0;
#pragma unroll
  for (int lvl = 0; lvl < kChanLevels<TPC> && lvl < 2; ++lvl)
    if (lane & (16 >> lvl)) base += 2 >> lvl;
  return base;
}

// An element's raw bits (16-bit types zero-extended) and their value: lets a load be issued long before its use.
__device__ __forceinline__ uint32_t load_raw(const void* p, mamba_dtype dt, size_t i) {
  return dt == MAMBA_DTYPE_F32 ? static_cast<const uint32_t*>(p)[i] : static_cast<const uint16_t*>(p)[i];
}
__device__ __forceinline__ float raw_to_f(uint32_t v, mamba_dtype dt) {
  switch (dt) {
    case MAMBA_DTYPE_BF16: return __uint_as_float(v << 16);
    case MAMBA_DTYPE_F16: return __half2float(__ushort_as_half(static_cast<unsigned short>(v)));
    default: return __uint_as_float(v);
  }
}

__device__ __forceinline__ float sigmoid_fast(float x) { return __fdividef(1.f, 1.f + __expf(-x)); }

// Passes of scan_bwd_tile_kernel. Whole: one block walks a row's tiles. With a time split (a row's tiles in chunks, so
// small batches fill the GPU): kBwdLambda runs only the adjoint over chunks 1.. from λ = 0 after each (it needs Δ, g y
// and C, not the states) and keeps λ at the chunk's first step, ΣΔ and the first Δ; kBwdChunk joins those right to left
// (λ_s = λ_local + exp2(A·(ΣΔ − Δ_first))·a_next·λ_next: the adjoint is linear) into the λ and a_next that enter its
// chunk from the right, then runs the whole tile loop over the chunk.
enum TileBwdPass { kBwdWhole = 0, kBwdLambda = 1, kBwdChunk = 2 };

template <int TPC, int PASS>
__global__ void __launch_bounds__(TileBwdCfg<TPC>::NT) scan_bwd_tile_kernel(const ScanBwdArgs a) {
  using Cfg = TileBwdCfg<TPC>;
  constexpr int NT = Cfg::NT, SPT = Cfg::SPT, NP = Cfg::NP, CH = Cfg::CH, TT = Cfg::TT, TP = Cfg::TP, NW = Cfg::NW, PQ = Cfg::PQ,
                IT = Cfg::IT;
  extern __shared__ float4 smem4[];
  // Disjoint regions: __restrict__ lets the compiler move a step's shared loads above the previous step's stores.
  float* __restrict__ s_dl = reinterpret_cast<float*>(smem4);  // [CH][TP] Δ
  float* __restrict__ s_u = s_dl + CH * TP;                    // [CH][TP] u
  float* __restrict__ s_gy = s_u + CH * TP;                    // [CH][TP] g y = g out·SiLU(z)
  float* __restrict__ s_B = s_gy + CH * TP;                    // [TT][NP]
  float* __restrict__ s_C = s_B + TT * NP;                     // [TT][NP]
  float* __restrict__ s_py = s_C + TT * NP;                    // [TPC][PQ] partial readouts Σ h·C, [j][t·CH + c]
  float* __restrict__ s_pl = s_py + TPC * PQ;                  // [TPC][PQ] partial Σ λ·B
  float* __restrict__ s_pa = s_pl + TPC * PQ;                  // [TPC][PQ] partial Σ A·λ·a·h_{t−1}
  float* __restrict__ s_wb = s_pa + TPC * PQ;                  // [NW][TT][NP] the warps' channel sums of λ·Δu (g B)
  float* __restrict__ s_wc = s_wb + NW * TT * NP;              // [NW][TT][NP] the warps' channel sums of g y·h (g C)

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = blockIdx.x;
  const int chunk = PASS == kBwdWhole ? 0 : static_cast<int>(blockIdx.y) % a.chunks;
  const int bl = PASS == kBwdWhole ? static_cast<int>(blockIdx.y) : static_cast<int>(blockIdx.y) / a.chunks;
  const int b = a.b0 + bl;
  if (PASS == kBwdLambda && chunk == 0) return;  // nothing enters chunk 0 from the left
  const int kbeg = chunk * a.ck_per_chunk, kend = PASS == kBwdWhole ? a.nck : min(a.nck, kbeg + a.ck_per_chunk);
  const int e0 = g * CH;
  const int E = a.E, L = a.L, N = a.N;
  const size_t row0 = (size_t)b * L;

  // phase 2 role: channel c2, states j·4 .. j·4 + 3
  const int c2 = tid / TPC, j = tid % TPC, e2 = e0 + c2;
  float An[SPT], Ap[SPT];
#pragma unroll
  for (int s = 0; s < SPT; ++s) {
    const int n = j * SPT + s;
    An[s] = (e2 < E && n < N) ? a.A[(size_t)e2 * N + n] : 0.f;
    Ap[s] = ssm_scaled_a(An[s]);
  }
  // phase 1/3 role: channel c1, steps tq + k·TPC
  const int c1 = tid % CH, tq = tid / CH, e1 = e0 + c1;
  const float dtb = e1 < E ? load_any(a.dt_bias, a.bdt, e1) : 0.f;
  const float Dv = (e1 < E && a.D) ? a.D[e1] : 0.f;

  float lam[SPT], anext[SPT], gA[SPT];
#pragma unroll
  for (int s = 0; s < SPT; ++s) {
    lam[s] = 0.f;
    anext[s] = 1.f;
    gA[s] = 0.f;
  }
  float gD = 0.f, gbias = 0.f;
  float dsum = 0.f, dfirst = 0.f;  // kBwdLambda
  // Where this lane stores its share of the per-warp channel sums: [warp][t][j·4 + slot + i].
  const int wslot = warp * TT * NP + j * SPT + chan_slot<TPC>(lane);
  float* __restrict__ const wb_row = s_wb + wslot;
  float* __restrict__ const wc_row = s_wc + wslot;
  if constexpr (PASS == kBwdChunk) {
    // λ and a_next entering this chunk from the right: the later chunks' local adjoints joined right to left.
    const size_t cs = (size_t)b * a.chunks;
    for (int c = a.chunks - 1; c > chunk; --c) {
      const float ds = e2 < E ? a.ch_dsum[(cs + c) * E + e2] : 0.f, df = e2 < E ? a.ch_dfirst[(cs + c) * E + e2] : 0.f;
#pragma unroll
      for (int s = 0; s < SPT; ++s) {
        const int n = j * SPT + s;
        const float loc = (e2 < E && n < N) ? a.ch_lam[((cs + c) * E + e2) * N + n] : 0.f;
        lam[s] = fmaf(ex2_approx((ds - df) * Ap[s]) * anext[s], lam[s], loc);
        anext[s] = ex2_approx(df * Ap[s]);
      }
    }
  }

  // The next tile's global inputs as raw bits (a conversion right after a load would wait for it): loaded before a
  // tile's phase 3 so their latency hides behind it, converted in the next phase 1.
  constexpr int BQ = (TT * NP + NT - 1) / NT;
  struct Prefetch {
    uint32_t dr[IT], u[IT], go[IT], z[IT], b[BQ], c[BQ];
    float h0[SPT];
    bool ok[IT];
  } pf;
  auto prefetch = [&](int k) {
    const int t0 = k * TT;
#pragma unroll
    for (int it = 0; it < IT; ++it) {
      const int tg = t0 + tq + it * TPC;
      pf.ok[it] = tg < L && e1 < E;
      pf.dr[it] = pf.u[it] = pf.go[it] = pf.z[it] = 0u;
      if (pf.ok[it]) {
        const size_t r = row0 + tg;
        pf.dr[it] = __float_as_uint(a.dr[r * E + e1]);
        pf.u[it] = load_raw(a.u, a.adt, r * E + e1);
        pf.go[it] = load_raw(a.gout, a.godt, r * E + e1);
        pf.z[it] = load_raw(a.xz, a.adt, r * 2 * E + E + e1);
      }
    }
#pragma unroll
    for (int q = 0; q < BQ; ++q) {
      const int i = tid + q * NT, t = i / NP, n = i % NP, tg = t0 + t;
      pf.b[q] = pf.c[q] = 0u;  // all-zero bits: 0 in every dtype
      if (i < TT * NP && tg < L && n < N) {
        const size_t r = (row0 + tg) * a.ld + a.R;
        pf.b[q] = load_raw(a.dbc, a.adt, r + n);
        pf.c[q] = load_raw(a.dbc, a.adt, r + N + n);
      }
    }
#pragma unroll
    for (int s = 0; s < SPT; ++s) {
      const int n = j * SPT + s;
      pf.h0[s] = (PASS != kBwdLambda && e2 < E && n < N) ? a.fck[(((size_t)b * a.nck + k) * E + e2) * N + n] : 0.f;
    }
  };
  if (kend > kbeg) prefetch(kend - 1);

  for (int k = kend - 1; k >= kbeg; --k) {
    const int t0 = k * TT;
    // ---- phase 1: the tile's inputs (loaded during the previous tile's phase 3) into shared memory ----
    float go_r[IT], z_r[IT], p_r[IT];
#pragma unroll
    for (int it = 0; it < IT; ++it) {
      const int t = tq + it * TPC;
      float dl = 0.f, uv = 0.f, gy = 0.f, go = 0.f, z = 0.f, pv = 0.f;
      if (pf.ok[it]) {
        pv = __uint_as_float(pf.dr[it]) + dtb;
        dl = softplus_fast(pv);
        uv = raw_to_f(pf.u[it], a.adt);
        go = raw_to_f(pf.go[it], a.godt);
        z = raw_to_f(pf.z[it], a.adt);
        gy = go * silu_fast(z);
      }
      s_dl[c1 * TP + t] = dl;
      s_u[c1 * TP + t] = uv;
      s_gy[c1 * TP + t] = gy;
      go_r[it] = go;
      z_r[it] = z;
      p_r[it] = pv;
    }
#pragma unroll
    for (int q = 0; q < BQ; ++q) {
      const int i = tid + q * NT;
      if (i < TT * NP) {
        s_B[i] = raw_to_f(pf.b[q], a.adt);
        s_C[i] = raw_to_f(pf.c[q], a.adt);
      }
    }
    float h0[SPT];
#pragma unroll
    for (int s = 0; s < SPT; ++s) h0[s] = pf.h0[s];
    __syncthreads();

    // ---- phase 2a: the tile's states, forward ----
    float hs[TT][SPT];
    if constexpr (PASS != kBwdLambda) {
      float hc[SPT];
#pragma unroll
      for (int s = 0; s < SPT; ++s) hc[s] = h0[s];
#pragma unroll
      for (int t4 = 0; t4 < TT; t4 += 4) {
        const float4 d4 = *reinterpret_cast<const float4*>(s_dl + c2 * TP + t4);
        const float4 u4 = *reinterpret_cast<const float4*>(s_u + c2 * TP + t4);
        const float4 g4 = *reinterpret_cast<const float4*>(s_gy + c2 * TP + t4);
        const float dd[4] = {d4.x, d4.y, d4.z, d4.w}, uu[4] = {u4.x, u4.y, u4.z, u4.w}, gg[4] = {g4.x, g4.y, g4.z, g4.w};
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int t = t4 + r;
          const float du = dd[r] * uu[r];
          const float4 b4 = *reinterpret_cast<const float4*>(s_B + t * NP + j * SPT);
          const float4 c4 = *reinterpret_cast<const float4*>(s_C + t * NP + j * SPT);
          const float bb[4] = {b4.x, b4.y, b4.z, b4.w}, cc[4] = {c4.x, c4.y, c4.z, c4.w};
          float acc = 0.f, gc[SPT];
#pragma unroll
          for (int s = 0; s < SPT; ++s) {
            hc[s] = ssm_state_step(dd[r], Ap[s], hc[s], du, bb[s]);  // the forward's recurrence, the same bits
            hs[t][s] = hc[s];
            acc = fmaf(hc[s], cc[s], acc);
            gc[s] = gg[r] * hc[s];
          }
          s_py[j * PQ + t * CH + c2] = acc;
          chan_reduce<TPC>(gc, lane);
#pragma unroll
          for (int i = 0; i < kChanHeld<TPC>; ++i) wc_row[t * NP + i] = gc[i];
        }
      }
    }
    // ---- phase 2b: the adjoint, reverse ----
#pragma unroll
    for (int t4 = TT - 4; t4 >= 0; t4 -= 4) {
      const float4 d4 = *reinterpret_cast<const float4*>(s_dl + c2 * TP + t4);
      const float4 u4 = *reinterpret_cast<const float4*>(s_u + c2 * TP + t4);
      const float4 g4 = *reinterpret_cast<const float4*>(s_gy + c2 * TP + t4);
      const float dd[4] = {d4.x, d4.y, d4.z, d4.w}, uu[4] = {u4.x, u4.y, u4.z, u4.w}, gg[4] = {g4.x, g4.y, g4.z, g4.w};
#pragma unroll
      for (int r = 3; r >= 0; --r) {
        const int t = t4 + r;
        if constexpr (PASS == kBwdLambda) {
          const float4 c4 = *reinterpret_cast<const float4*>(s_C + t * NP + j * SPT);
          const float cc[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
          for (int s = 0; s < SPT; ++s) {
            lam[s] = fmaf(anext[s], lam[s], gg[r] * cc[s]);
            anext[s] = ex2_approx(dd[r] * Ap[s]);
          }
          dsum += dd[r];
          if (k == kbeg && t == 0) dfirst = dd[r];
        } else {
        const float du = dd[r] * uu[r];
        const float4 b4 = *reinterpret_cast<const float4*>(s_B + t * NP + j * SPT);
        const float4 c4 = *reinterpret_cast<const float4*>(s_C + t * NP + j * SPT);
        const float bb[4] = {b4.x, b4.y, b4.z, b4.w}, cc[4] = {c4.x, c4.y, c4.z, c4.w};
        float sl = 0.f, sa = 0.f, gb[SPT];
#pragma unroll
        for (int s = 0; s < SPT; ++s) {
          lam[s] = fmaf(anext[s], lam[s], gg[r] * cc[s]);
          const float at = ex2_approx(dd[r] * Ap[s]);
          const float hp = t > 0 ? hs[t > 0 ? t - 1 : 0][s] : h0[s];
          const float w = lam[s] * (at * hp);
          gA[s] = fmaf(dd[r], w, gA[s]);
          sa = fmaf(An[s], w, sa);
          sl = fmaf(lam[s], bb[s], sl);
          gb[s] = lam[s] * du;
          anext[s] = at;
        }
        s_pl[j * PQ + t * CH + c2] = sl;
        s_pa[j * PQ + t * CH + c2] = sa;
        chan_reduce<TPC>(gb, lane);
#pragma unroll
        for (int i = 0; i < kChanHeld<TPC>; ++i) wb_row[t * NP + i] = gb[i];
        }
      }
    }
    __syncthreads();
    if (k > kbeg) prefetch(k - 1);
    if constexpr (PASS != kBwdLambda) {  // (kBwdLambda: the next tile's phase 1 writes only after the barrier above)
    // ---- phase 3 ----
#pragma unroll
    for (int it = 0; it < IT; ++it) {
      const int t = tq + it * TPC, tg = t0 + t;
      if (tg < L && e1 < E) {
        const size_t r = row0 + tg;
        float sl = 0.f, sa = 0.f, y = 0.f;
#pragma unroll
        for (int q = 0; q < TPC; ++q) {
          sl += s_pl[q * PQ + t * CH + c1];
          sa += s_pa[q * PQ + t * CH + c1];
          y += s_py[q * PQ + t * CH + c1];
        }
        const float dl = s_dl[c1 * TP + t], uv = s_u[c1 * TP + t], gy = s_gy[c1 * TP + t];
        y = fmaf(Dv, uv, y);
        store_any(a.gu, a.gudt, r * E + e1, fmaf(gy, Dv, dl * sl));
        const float gdl = fmaf(uv, sl, sa);
        const float pv = p_r[it];
        const float gp = pv > 20.f ? gdl : gdl * sigmoid_fast(pv);
        a.gdr[r * E + e1] = gp;
        gbias += gp;
        gD = fmaf(gy, uv, gD);
        const float z = z_r[it], sz = sigmoid_fast(z);
        store_any(a.gxz, a.gxdt, r * 2 * E + E + e1, go_r[it] * y * sz * (1.f + z * (1.f - sz)));
      }
    }
    for (int i = tid; i < TT * NP; i += NT) {
      const int t = i / NP, n = i % NP, tg = t0 + t;
      if (tg >= L || n >= N) continue;
      float sb = 0.f, sc = 0.f;
#pragma unroll
      for (int w = 0; w < NW; ++w) {
        sb += s_wb[(w * TT + t) * NP + n];
        sc += s_wc[(w * TT + t) * NP + n];
      }
      float* pr = a.part_bc + (((size_t)g * a.Bs + bl) * L + tg) * 2 * N;
      pr[n] = sb;
      pr[N + n] = sc;
    }
    __syncthreads();
    }
  }
  if constexpr (PASS == kBwdLambda) {
    const size_t cs = (size_t)b * a.chunks + chunk;
#pragma unroll
    for (int s = 0; s < SPT; ++s) {
      const int n = j * SPT + s;
      if (e2 < E && n < N) a.ch_lam[(cs * E + e2) * N + n] = lam[s];
    }
    if (j == 0 && e2 < E) {
      a.ch_dsum[cs * E + e2] = dsum;
      a.ch_dfirst[cs * E + e2] = dfirst;
    }
    return;
  }
  // Per-(row, chunk) partials of g A, g D and g b_dt (the parameter kernel sums them in order).
  const size_t prow = (size_t)b * a.chunks + chunk;
#pragma unroll
  for (int s = 0; s < SPT; ++s) {
    const int n = j * SPT + s;
    if (e2 < E && n < N) a.part_A[(prow * E + e2) * N + n] = gA[s];
  }
  // g D and g b_dt: the TPC phase-3 threads of a channel (tid = c1 + q·CH) in order, through shared memory.
  s_py[tid] = gD;
  s_py[NT + tid] = gbias;
  __syncthreads();
  if (tid < CH && e1 < E) {
    float d = 0.f, sb = 0.f;
    for (int q = 0; q < TPC; ++q) {
      d += s_py[q * CH + tid];
      sb += s_py[NT + q * CH + tid];
    }
    a.part_D[prow * E + e1] = d;
    a.part_db[prow * E + e1] = sb;
  }
}

template <int TPC, int PASS>
static void launch_tile_pass(mamba_context* ctx, const ScanBwdArgs& a, dim3 grid) {
  using Cfg = TileBwdCfg<TPC>;
  const size_t smem = sizeof(float) * Cfg::kSmemFloats;
  if (smem > 48 * 1024)
    check_cuda(cudaFuncSetAttribute(scan_bwd_tile_kernel<TPC, PASS>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
               "cudaFuncSetAttribute(scan_bwd_tile)");
  scan_bwd_tile_kernel<TPC, PASS><<<grid, Cfg::NT, smem, ctx->stream>>>(a);
  check_launch(ctx, "scan_bwd_tile_kernel");
}

// Channel blocks a row for d_state N (scan_bwd_tile_kernel).
static int tile_bwd_channel_blocks(int E, int N) {
  const int tpc = N <= 4 ? 1 : N <= 8 ? 2 : N <= 16 ? 4 : N <= 32 ? 8 : 16;
  const int ch = 128 / tpc;
  return (E + ch - 1) / ch;
}

// Time chunks a row for the tile backward: enough to give every SM tuning::scan_chunk_blocks_per_sm blocks when the
// batch alone does not, never shorter than tuning::scan_min_chunk_steps, at most tuning::scan_max_chunks.
static void pick_bwd_chunks(mamba_context* ctx, int B, int E, int N, int nck, int& chunks, int& ck_per_chunk) {
  const int64_t blocks = (int64_t)tile_bwd_channel_blocks(E, N) * B;
  const int64_t want = (int64_t)tuning::scan_chunk_blocks_per_sm * ctx->sm_count;
  int c = 1;
  if (blocks < want) c = static_cast<int>((want + blocks - 1) / blocks);
  c = std::min(c, std::max(1, nck / (tuning::scan_min_chunk_steps / kCk)));
  c = std::max(1, std::min(c, tuning::scan_max_chunks));
  while (c > 1 && (int64_t)B * c > 65535) --c;
  ck_per_chunk = (nck + c - 1) / c;
  chunks = (nck + ck_per_chunk - 1) / ck_per_chunk;
}

template <int TPC>
static void launch_scan_bwd_tile(mamba_context* ctx, ScanBwdArgs a, int B, void* gdbc, mamba_dtype gdt) {
  using Cfg = TileBwdCfg<TPC>;
  const int G = (a.E + Cfg::CH - 1) / Cfg::CH;
  const size_t per_row = (size_t)G * a.L * 2 * a.N * 4;
  const int Bs = static_cast<int>(std::max<size_t>(1, std::min<size_t>(B, kPartialBytes / per_row)));
  a.part_bc = static_cast<float*>(workspace(ctx, kWsTrainA, (size_t)G * Bs * a.L * 2 * a.N * 4));
  for (int b0 = 0; b0 < B; b0 += Bs) {
    a.b0 = b0;
    a.Bs = std::min(Bs, B - b0);
    if (a.chunks == 1) {
      launch_tile_pass<TPC, kBwdWhole>(ctx, a, dim3(static_cast<unsigned>(G), static_cast<unsigned>(a.Bs)));
    } else {
      const dim3 grid(static_cast<unsigned>(G), static_cast<unsigned>(a.Bs * a.chunks));
      launch_tile_pass<TPC, kBwdLambda>(ctx, a, grid);
      launch_tile_pass<TPC, kBwdChunk>(ctx, a, grid);
    }
    const int64_t total = (int64_t)a.Bs * a.L * 2 * a.N;
    scan_bwd_bc_kernel<<<gs_blocks(total), 256, 0, ctx->stream>>>(a.part_bc, G, a.Bs, b0, a.L, a.N, a.R, a.ld, gdbc, gdt);
    check_launch(ctx, "scan_bwd_bc_kernel");
  }
}

template <int NP>
static void launch_scan_bwd(mamba_context* ctx, ScanBwdArgs a, int B, void* gdbc, mamba_dtype gdt) {
  using Cfg = BwdCfg<NP>;
  const size_t smem = sizeof(float) * Cfg::kSmemFloats;
  if (smem > 48 * 1024)
    check_cuda(cudaFuncSetAttribute(scan_bwd_kernel<NP>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
               "cudaFuncSetAttribute(scan_bwd)");
  const int G = (a.E + Cfg::CH - 1) / Cfg::CH;
  const size_t per_row = (size_t)G * a.L * 2 * a.N * 4;
  const int Bs = static_cast<int>(std::max<size_t>(1, std::min<size_t>(B, kPartialBytes / per_row)));
  a.nseg = (a.L + kBwdSeg - 1) / kBwdSeg;
  const size_t part_floats = (size_t)G * Bs * a.L * 2 * a.N;
  const size_t ck_floats = (size_t)G * Bs * a.nseg * Cfg::NT;
  float* ws = static_cast<float*>(workspace(ctx, kWsTrainA, (part_floats + ck_floats) * 4));
  a.part_bc = ws;
  a.ck = ws + part_floats;
  for (int b0 = 0; b0 < B; b0 += Bs) {
    a.b0 = b0;
    a.Bs = std::min(Bs, B - b0);
    dim3 grid(static_cast<unsigned>(G), static_cast<unsigned>(a.Bs));
    scan_bwd_kernel<NP><<<grid, Cfg::NT, smem, ctx->stream>>>(a);
    check_launch(ctx, "scan_bwd_kernel");
    const int64_t total = (int64_t)a.Bs * a.L * 2 * a.N;
    scan_bwd_bc_kernel<<<gs_blocks(total), 256, 0, ctx->stream>>>(a.part_bc, G, a.Bs, b0, a.L, a.N, a.R, a.ld, gdbc, gdt);
    check_launch(ctx, "scan_bwd_bc_kernel");
  }
}

static void scan_bwd(mamba_context* ctx, const mamba_selective_scan_params& p, const mamba_selective_scan_grads& g) {
  activate(ctx);
  check_dtype(p.act_dtype, "act_dtype");
  check_dtype(p.dt_weight_dtype, "dt_weight_dtype");
  check_dtype(p.dt_bias_dtype, "dt_bias_dtype");
  check_dtype(g.grad_y_dtype, "grad_y_dtype");
  check_dtype(g.grad_u_dtype, "grad_u_dtype");
  check_dtype(g.grad_dbc_dtype, "grad_dbc_dtype");
  check_dtype(g.grad_xz_dtype, "grad_xz_dtype");
  const int B = p.batch, L = p.length, E = p.channels, N = p.d_state, R = p.dt_rank;
  require(B >= 0 && L >= 0 && E > 0 && N > 0 && R > 0, "bad shape");
  require(B <= 65535, "batch exceeds 65535");
  if (N > 256) fail(MAMBA_ERR_UNSUPPORTED, format("d_state %d > 256 is not supported", N));
  if (!B || !L) return;
  require(p.u && p.dbc && p.xz && p.dt_weight && p.dt_bias && p.A, "null input pointer");
  require(g.grad_y && g.grad_u && g.grad_dbc && g.grad_xz && g.grad_dt_weight && g.grad_dt_bias && g.grad_A_log, "null gradient pointer");
  require(!p.D || g.grad_D, "grad_D is needed with D");
  const int ld = R + 2 * N;
  const int64_t rows = (int64_t)B * L;
  ScanBwdArgs a{};
  a.nck = (L + kCk - 1) / kCk;
  a.chunks = 1;
  a.ck_per_chunk = a.nck;
  if (N <= 64) pick_bwd_chunks(ctx, B, E, N, a.nck, a.chunks, a.ck_per_chunk);
  const int prows = B * a.chunks;  // rows of the (b, chunk) parameter partials
  a.fck = p.checkpoints;
  if (N <= 64 && !a.fck) {
    // No saved states: run the forward (into a scratch y) to make them.
    const size_t ck_bytes = ((size_t)B * a.nck * E * N * 4 + 255) / 256 * 256;
    char* ws = static_cast<char*>(workspace(ctx, kWsTrainC, ck_bytes + (size_t)rows * E * dtype_size(p.act_dtype)));
    mamba_selective_scan_params fp = p;
    fp.state = nullptr;
    fp.checkpoints = reinterpret_cast<float*>(ws);
    fp.y = ws + ck_bytes;
    scan(ctx, fp, false);
    a.fck = fp.checkpoints;
  }
  a.u = p.u; a.dbc = p.dbc; a.xz = p.xz; a.adt = p.act_dtype;
  a.gout = g.grad_y; a.godt = g.grad_y_dtype;
  a.dr = dt_proj(ctx, p.dbc, p.act_dtype, rows, ld, p.dt_weight, p.dt_weight_dtype, E, R);
  a.dt_bias = p.dt_bias; a.bdt = p.dt_bias_dtype; a.A = p.A; a.D = p.D;
  a.gu = g.grad_u; a.gudt = g.grad_u_dtype; a.gxz = g.grad_xz; a.gxdt = g.grad_xz_dtype;
  a.L = L; a.E = E; a.N = N; a.R = R; a.ld = ld;
  // kWsTrainB: g Δr [rows, E], the (b, e[, n]) partials, δ̃ and g δ̃ in f32 [rows, R], W_dt in f32 [E, R].
  auto up = [](size_t f) { return (f + 63) / 64 * 64; };
  const size_t f_gdr = up((size_t)rows * E), f_A = up((size_t)prows * E * N), f_e = up((size_t)prows * E), f_r = up((size_t)rows * R),
               f_w = up((size_t)E * R);
  const size_t f_ch = a.chunks > 1 ? up((size_t)prows * E * N) + 2 * up((size_t)prows * E) : 0;
  float* ws = static_cast<float*>(workspace(ctx, kWsTrainB, (f_gdr + f_A + 2 * f_e + 2 * f_r + f_w + f_ch) * 4));
  a.gdr = ws;
  a.part_A = ws + f_gdr;
  a.part_D = a.part_A + f_A;
  a.part_db = a.part_D + f_e;
  float* dtil = a.part_db + f_e;
  float* gdtil = dtil + f_r;
  float* wf = gdtil + f_r;
  if (a.chunks > 1) {
    a.ch_lam = wf + f_w;
    a.ch_dsum = a.ch_lam + up((size_t)prows * E * N);
    a.ch_dfirst = a.ch_dsum + up((size_t)prows * E);
  }
  if (N <= 4) launch_scan_bwd_tile<1>(ctx, a, B, g.grad_dbc, g.grad_dbc_dtype);
  else if (N <= 8) launch_scan_bwd_tile<2>(ctx, a, B, g.grad_dbc, g.grad_dbc_dtype);
  else if (N <= 16) launch_scan_bwd_tile<4>(ctx, a, B, g.grad_dbc, g.grad_dbc_dtype);
  else if (N <= 32) launch_scan_bwd_tile<8>(ctx, a, B, g.grad_dbc, g.grad_dbc_dtype);
  else if (N <= 64) launch_scan_bwd_tile<16>(ctx, a, B, g.grad_dbc, g.grad_dbc_dtype);
  else if (N <= 128) launch_scan_bwd<128>(ctx, a, B, g.grad_dbc, g.grad_dbc_dtype);
  else launch_scan_bwd<256>(ctx, a, B, g.grad_dbc, g.grad_dbc_dtype);
  // g δ̃ = g Δr·W_dt (column-major gemm(N, N, R, rows, E)) and grad_dt_weight += g Δrᵀ·δ̃ (gemm(N, T, R, E, rows)).
  launch_convert(ctx, p.dt_weight, p.dt_weight_dtype, wf, MAMBA_DTYPE_F32, (int64_t)E * R);
  scan_bwd_gather_dtilde_kernel<<<gs_blocks(rows * R), 256, 0, ctx->stream>>>(p.dbc, p.act_dtype, rows, R, ld, dtil);
  check_launch(ctx, "scan_bwd_gather_dtilde_kernel");
  gemm_ex(ctx, CUBLAS_OP_N, CUBLAS_OP_N, R, rows, E, wf, MAMBA_DTYPE_F32, R, a.gdr, MAMBA_DTYPE_F32, E, 0.f, gdtil, MAMBA_DTYPE_F32, R);
  gemm_ex(ctx, CUBLAS_OP_N, CUBLAS_OP_T, R, E, rows, dtil, MAMBA_DTYPE_F32, R, a.gdr, MAMBA_DTYPE_F32, E, 1.f, g.grad_dt_weight, MAMBA_DTYPE_F32, R);
  scan_bwd_store_dtilde_kernel<<<gs_blocks(rows * R), 256, 0, ctx->stream>>>(gdtil, rows, R, ld, g.grad_dbc, g.grad_dbc_dtype);
  check_launch(ctx, "scan_bwd_store_dtilde_kernel");
  const int64_t en = (int64_t)E * N;
  scan_bwd_params_kernel<<<blocks_for(std::max<int64_t>(en, E), 256), 256, 0, ctx->stream>>>(a.part_A, a.part_D, a.part_db, p.A, prows, E, N, g.grad_A_log,
                                                                                             p.D ? g.grad_D : nullptr, g.grad_dt_bias);
  check_launch(ctx, "scan_bwd_params_kernel");
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_selective_scan_bwd(mamba_context* ctx, const mamba_selective_scan_params* params,
                                                           const mamba_selective_scan_grads* grads) {
  return guard("mamba_selective_scan_bwd", [&] { return scan_shapes(params); }, [&] {
    scan_bwd(ctx, check_params(params, "mamba_selective_scan_params"), check_params(grads, "mamba_selective_scan_grads"));
  });
}
