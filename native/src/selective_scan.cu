// Selective scan forward (spec §5.4, §11.3) over token-major activations, with the Δ projection in front.
//
// 1. dt_proj: Δr [B·L, E] (fp32) = δ̃ (first R columns of dbc, row stride R+2N) · W_dtᵀ — one cuBLAS GEMM
//    with fp32 accumulation into a reused workspace.
// 2. scan kernel. A block owns CH consecutive channels of one batch row and walks the whole sequence in
//    time tiles of TT steps, carrying the fp32 state in registers (so any L works: L = 1, L < K, prime L).
//    Each channel's N states are split over TPC threads, SPT states each (N padded to SPT·TPC with inert
//    states: A = 0, B = C = 0). Per tile:
//      phase 1  coalesced loads of u, Δr, B_t, C_t into shared memory; Δ = softplus(Δr + b_dt) and Δ·u
//               computed once per (t, e) (not once per state thread);
//      phase 2  the recurrence: for each t, SPT × { a = ex2(Δ·A·log2 e); h = a·h + (Δu)·B_t; acc += h·C_t },
//               B_t/C_t broadcast from shared memory with 16-byte loads, A pre-scaled by log2 e so the decay
//               is one MUFU.EX2; per-thread partial readouts go to shared memory;
//      phase 3  y = Σ partials + D·u, gated by SiLU(z) in fp32, rounded once and stored coalesced.
//    B and C are read once per block per tile (shared by its CH channels), not once per channel.
//    The final state (fp32) is written if asked. mamba_selective_scan_continue starts from that state
//    instead of zero (chunked prefill) and overwrites it in place.
#include "common.cuh"

#include <cstdlib>

namespace mamba {

void gemm_ex(mamba_context* ctx, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const void* a, mamba_dtype adt,
             int64_t lda, const void* b, mamba_dtype bdt, int64_t ldb, float beta, void* c, mamba_dtype cdt, int64_t ldc);
void launch_convert(mamba_context* ctx, const void* src, mamba_dtype sdt, void* dst, mamba_dtype ddt, int64_t count);

constexpr float kLog2e = 1.4426950408889634f;

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
  int mode;  // diagnostics only (MAMBA_SCAN_MODE): bit 0 skips the recurrence, bit 1 uses libm softplus/SiLU
};

template <int SPT, int TPC>
struct ScanCfg {
  static constexpr int kThreads = 128;
  static constexpr int CH = kThreads / TPC;
  static constexpr int TT = CH >= 128 ? 16 : (CH >= 64 ? 32 : 64);
  static constexpr int NP = SPT * TPC;
  static constexpr int kSmemFloats = 3 * TT * CH + 2 * TT * NP + TT * CH * TPC;
  static_assert(SPT % 4 == 0, "SPT must be a multiple of 4 (16-byte shared loads)");
};

template <class T, int SPT, int TPC>
__global__ void __launch_bounds__(128) scan_fwd_kernel(const ScanArgs a) {
  using Cfg = ScanCfg<SPT, TPC>;
  constexpr int CH = Cfg::CH, TT = Cfg::TT, NP = Cfg::NP, TSTEP = 128 / CH;
  constexpr int IT = TT / TSTEP;              // (t, e) items per thread per tile in phases 1 and 3
  constexpr int BIT = (TT * NP + 127) / 128;  // B (and C) items per thread per tile
  constexpr bool kPrefetchBC = BIT <= 16;     // keep next tile's B/C in registers (small N)
  extern __shared__ float4 smem4[];
  float* s_delta = reinterpret_cast<float*>(smem4);  // [TT][CH]
  float* s_du = s_delta + TT * CH;                    // [TT][CH]
  float* s_u = s_du + TT * CH;                        // [TT][CH]
  float* s_B = s_u + TT * CH;                         // [TT][NP]
  float* s_C = s_B + TT * NP;                         // [TT][NP]
  float* s_yp = s_C + TT * NP;                        // [TT][CH][TPC]

  const int tid = threadIdx.x;
  const int b = blockIdx.y;
  const int e0 = blockIdx.x * CH;
  const int E = a.E, L = a.L, N = a.N;
  const T* __restrict__ u = static_cast<const T*>(a.u);
  const T* __restrict__ dbc = static_cast<const T*>(a.dbc);
  const T* __restrict__ xz = static_cast<const T*>(a.xz);
  T* __restrict__ y = static_cast<T*>(a.y);
  const float* __restrict__ delta = a.delta;

  // phase 1/3 role: one channel, time rows tq + k·TSTEP
  const int cl = tid % CH, tq = tid / CH;
  const int el = e0 + cl;
  const bool el_ok = el < E;
  const float dtb = el_ok ? load_any(a.dt_bias, a.dt_bias_dtype, el) : 0.f;
  const float Dv = (el_ok && a.D) ? a.D[el] : 0.f;

  // phase 2 role: channel c2, state group j
  const int c2 = tid / TPC, j = tid % TPC;
  const int e2 = e0 + c2;
  float Ap[SPT], h[SPT];
#pragma unroll
  for (int s = 0; s < SPT; ++s) {
    int n = j * SPT + s;
    Ap[s] = (e2 < E && n < N) ? a.A[(size_t)e2 * N + n] * kLog2e : 0.f;
    // Continuation: each thread reads exactly the state entries it writes at the end (no cross-thread hazard).
    h[s] = (a.init_state && e2 < E && n < N) ? a.state[((size_t)b * E + e2) * N + n] : 0.f;
  }

  // Registers holding the next tile's inputs in their storage type (software pipelining: the loads fly
  // during the recurrence; converting at load time would stall on every 16-bit load).
  const T zero = from_f<T>(0.f);
  T ru[IT], rz[IT], rb[kPrefetchBC ? BIT : 1], rc[kPrefetchBC ? BIT : 1];
  float rd[IT];
  const size_t row0 = (size_t)b * L + tq;  // row of item (t0 = 0, k = 0)
  const size_t strideK = (size_t)TSTEP * E;
  const T* __restrict__ u_base = u + row0 * E + el;
  const float* __restrict__ d_base = delta + row0 * E + el;
  const T* __restrict__ z_base = xz + row0 * 2 * E + E + el;
  auto load_uv = [&](int t0) {
    const bool full = t0 + TT <= L;
#pragma unroll
    for (int k = 0; k < IT; ++k) {
      const int t = t0 + tq + k * TSTEP;
      ru[k] = zero;
      rd[k] = 0.f;
      if (el_ok && (full || t < L)) {
        const size_t off = (size_t)t0 * E + k * strideK;
        ru[k] = u_base[off];
        rd[k] = d_base[off];
      }
    }
  };
  auto load_bc = [&](int t0) {
#pragma unroll
    for (int k = 0; k < BIT; ++k) {
      int i = tid + k * 128;
      int tt = i / NP, n = i % NP, t = t0 + tt;
      T bv = zero, cv = zero;
      if (i < TT * NP && n < N && t < L) {
        const T* row = dbc + ((size_t)b * L + t) * a.ld + a.R;
        bv = row[n];
        cv = row[N + n];
      }
      if constexpr (kPrefetchBC) {
        rb[k] = bv;
        rc[k] = cv;
      } else if (i < TT * NP) {
        s_B[i] = to_f<T>(bv);
        s_C[i] = to_f<T>(cv);
      }
    }
  };

  load_uv(0);
  if constexpr (kPrefetchBC) load_bc(0);
  for (int t0 = 0; t0 < L; t0 += TT) {
    const int tmax = min(TT, L - t0);
    // ---- phase 1: registers -> shared (Δ = softplus(Δr + b) once per (t, e)) -------------------
#pragma unroll
    for (int k = 0; k < IT; ++k) {
      int tt = tq + k * TSTEP;
      float dv = 0.f;
      if (el_ok && tt < tmax) {
        float x = rd[k] + dtb;
        dv = (a.mode & 2) ? softplus_f(x) : softplus_fast(x);
      }
      const float uv = to_f<T>(ru[k]);
      s_delta[tt * CH + cl] = dv;
      s_du[tt * CH + cl] = dv * uv;
      s_u[tt * CH + cl] = uv;
    }
    if constexpr (kPrefetchBC) {
#pragma unroll
      for (int k = 0; k < BIT; ++k) {
        int i = tid + k * 128;
        if (i < TT * NP) {
          s_B[i] = to_f<T>(rb[k]);
          s_C[i] = to_f<T>(rc[k]);
        }
      }
    } else {
      load_bc(t0);
    }
    __syncthreads();
    // Issue this tile's z loads and the next tile's u/Δr/B/C loads; they complete during the recurrence.
    {
      const bool full = t0 + TT <= L;
#pragma unroll
      for (int k = 0; k < IT; ++k) {
        const int t = t0 + tq + k * TSTEP;
        rz[k] = zero;
        if (el_ok && (full || t < L)) rz[k] = z_base[(size_t)t0 * 2 * E + k * 2 * strideK];
      }
    }
    if (t0 + TT < L) {
      load_uv(t0 + TT);
      if constexpr (kPrefetchBC) load_bc(t0 + TT);
    }
    // ---- phase 2: the recurrence (shared reads of step t+1 issued before step t's work) ------
    if (!(a.mode & 1)) {
      float dv = s_delta[c2], duv = s_du[c2];
      float4 bq[SPT / 4], cq[SPT / 4];
#pragma unroll
      for (int q = 0; q < SPT / 4; ++q) {
        bq[q] = reinterpret_cast<const float4*>(s_B + j * SPT)[q];
        cq[q] = reinterpret_cast<const float4*>(s_C + j * SPT)[q];
      }
      for (int tt = 0; tt < tmax; ++tt) {
        const int tn = tt + 1 < tmax ? tt + 1 : tt;
        const float dv_n = s_delta[tn * CH + c2], duv_n = s_du[tn * CH + c2];
        float4 bq_n[SPT / 4], cq_n[SPT / 4];
#pragma unroll
        for (int q = 0; q < SPT / 4; ++q) {
          bq_n[q] = reinterpret_cast<const float4*>(s_B + tn * NP + j * SPT)[q];
          cq_n[q] = reinterpret_cast<const float4*>(s_C + tn * NP + j * SPT)[q];
        }
        float acc0 = 0.f, acc1 = 0.f;
#pragma unroll
        for (int q = 0; q < SPT / 4; ++q) {
          const float bb[4] = {bq[q].x, bq[q].y, bq[q].z, bq[q].w};
          const float cc[4] = {cq[q].x, cq[q].y, cq[q].z, cq[q].w};
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int s = 4 * q + r;
            float dA = ex2_approx(dv * Ap[s]);
            h[s] = fmaf(dA, h[s], duv * bb[r]);
            if (r & 1) acc1 = fmaf(h[s], cc[r], acc1);
            else acc0 = fmaf(h[s], cc[r], acc0);
          }
        }
        s_yp[(tt * CH + c2) * TPC + j] = acc0 + acc1;
        dv = dv_n;
        duv = duv_n;
#pragma unroll
        for (int q = 0; q < SPT / 4; ++q) {
          bq[q] = bq_n[q];
          cq[q] = cq_n[q];
        }
      }
    }
    __syncthreads();
    // ---- phase 3: readout, D skip, gate, store ----------------------------------------------
    if (el_ok) {
#pragma unroll
      for (int k = 0; k < IT; ++k) {
        int tt = tq + k * TSTEP;
        if (tt < tmax) {
          size_t row = (size_t)b * L + t0 + tt;
          float yv = Dv * s_u[tt * CH + cl];
#pragma unroll
          for (int q = 0; q < TPC; ++q) yv += s_yp[(tt * CH + cl) * TPC + q];
          const float zv = to_f<T>(rz[k]);
          float g = (a.mode & 2) ? silu_f(zv) : silu_fast(zv);
          y[row * E + el] = from_f<T>(yv * g);
        }
      }
    }
    __syncthreads();
  }
  if (a.state && e2 < E) {
#pragma unroll
    for (int s = 0; s < SPT; ++s) {
      int n = j * SPT + s;
      if (n < N) a.state[((size_t)b * E + e2) * N + n] = h[s];
    }
  }
}

template <class T, int SPT, int TPC>
void launch_scan(mamba_context* ctx, const ScanArgs& a) {
  using Cfg = ScanCfg<SPT, TPC>;
  size_t smem = sizeof(float) * Cfg::kSmemFloats;
  if (smem > 48 * 1024)  // opt in to more than 48 KB of dynamic shared memory (per function, on the current device)
    check_cuda(cudaFuncSetAttribute(scan_fwd_kernel<T, SPT, TPC>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
               "cudaFuncSetAttribute(scan)");
  dim3 grid(static_cast<unsigned>((a.E + Cfg::CH - 1) / Cfg::CH), static_cast<unsigned>(a.B));
  scan_fwd_kernel<T, SPT, TPC><<<grid, 128, smem, ctx->stream>>>(a);
  check_launch(ctx, "scan_fwd_kernel");
}

// Optional overrides for benchmarking: MAMBA_SCAN_SPT=8 picks 8 states per thread for N <= 16;
// MAMBA_SCAN_MODE sets ScanArgs::mode (diagnostics).
static int env_int(const char* name) {
  const char* s = std::getenv(name);
  return s ? std::atoi(s) : 0;
}
static int scan_spt_override() {
  static int v = env_int("MAMBA_SCAN_SPT");
  return v;
}
static int scan_mode() {
  static int v = env_int("MAMBA_SCAN_MODE");
  return v;
}

template <class T>
void dispatch_scan(mamba_context* ctx, const ScanArgs& a) {
  int N = a.N;
  if (N <= 4) launch_scan<T, 4, 1>(ctx, a);
  else if (N <= 8) launch_scan<T, 4, 2>(ctx, a);
  else if (N <= 16) {
    if (scan_spt_override() == 8) launch_scan<T, 8, 2>(ctx, a);
    else launch_scan<T, 4, 4>(ctx, a);
  } else if (N <= 32) launch_scan<T, 8, 4>(ctx, a);
  else if (N <= 64) launch_scan<T, 8, 8>(ctx, a);
  else if (N <= 128) launch_scan<T, 16, 8>(ctx, a);
  else launch_scan<T, 16, 16>(ctx, a);
}

// dt_proj into the Δ workspace: Δr [BL, E] = δ̃ [BL, R] (ld) · W_dtᵀ. Returns the workspace pointer.
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

static void scan_impl(mamba_context* ctx, const void* u, const void* dbc, const void* xz, void* y, mamba_dtype adt, const void* dt_w,
                      mamba_dtype wdt, const void* dt_b, mamba_dtype bdt, const float* A, const float* D, float* state, int32_t B,
                      int32_t L, int32_t E, int32_t N, int32_t R, bool cont) {
  activate(ctx);
  check_dtype(adt, "act_dtype");
  check_dtype(wdt, "dt_weight_dtype");
  check_dtype(bdt, "dt_bias_dtype");
  require(B >= 0 && L >= 0 && E > 0 && N > 0 && R > 0, "bad shape");
  require(B <= 65535, "batch exceeds 65535");
  if (N > 256) fail(MAMBA_ERR_UNSUPPORTED, format("d_state %d > 256 is not supported", N));
  if (!B) return;
  require(dt_w && dt_b && A, "null parameter pointer");
  require(!cont || state, "continuation needs a state");
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
  a.B = B; a.L = L; a.E = E; a.N = N; a.R = R; a.ld = ld;
  a.mode = scan_mode();
  MAMBA_DISPATCH_DTYPE(adt, T, { dispatch_scan<T>(ctx, a); });
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_selective_scan_fwd(mamba_context* ctx, const void* u, const void* dbc, const void* xz, void* y,
                                                           mamba_dtype adt, const void* dt_w, mamba_dtype wdt, const void* dt_b, mamba_dtype bdt,
                                                           const float* A, const float* D, float* state, int32_t B, int32_t L, int32_t E,
                                                           int32_t N, int32_t R) {
  return guard("mamba_selective_scan_fwd", [&] { return format("(B %d, L %d, E %d, N %d, R %d, %s)", B, L, E, N, R, dtype_name(adt)); },
               [&] { scan_impl(ctx, u, dbc, xz, y, adt, dt_w, wdt, dt_b, bdt, A, D, state, B, L, E, N, R, false); });
}

extern "C" MAMBA_API mamba_status mamba_selective_scan_continue(mamba_context* ctx, const void* u, const void* dbc, const void* xz, void* y,
                                                                mamba_dtype adt, const void* dt_w, mamba_dtype wdt, const void* dt_b,
                                                                mamba_dtype bdt, const float* A, const float* D, float* state, int32_t B,
                                                                int32_t L, int32_t E, int32_t N, int32_t R) {
  return guard("mamba_selective_scan_continue", [&] { return format("(B %d, L %d, E %d, N %d, R %d, %s)", B, L, E, N, R, dtype_name(adt)); },
               [&] { scan_impl(ctx, u, dbc, xz, y, adt, dt_w, wdt, dt_b, bdt, A, D, state, B, L, E, N, R, true); });
}
