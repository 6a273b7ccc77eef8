// Selective state update, one decode step (spec §8.3 steps 4-6, §11.4), with dt_proj fused:
// Δ = softplus(W_dt[e, :]·δ̃ + b_dt[e]); s ← ex2(Δ·A·log2 e)⊙s + (Δ·u)·B; y = (Σ_n s·C + D·u)·SiLU(z).
// The fp32 state is updated in place with the prefill scan's per-step arithmetic, so decode continues it.
// For N <= 32 (the default path) a group of G = pow2 >= N lanes owns one channel: lane n holds state n, so the
// state and W_dt row reads/writes of a warp are contiguous (coalesced), and the Δ dot product and the C readout
// are butterfly sums over the group (every lane gets the same bits; the fused decode step reproduces them).
// MAMBA_LEGACY_KERNELS=1 selects the thread-per-channel kernel (also used for N > 32), which stages δ̃, B and C
// of the batch row in shared memory. The per-element arithmetic is blocks/selective_state_update.cuh.
#include "common.cuh"
#include "blocks/selective_state_update.cuh"

namespace mamba {

template <class T>
__global__ void __launch_bounds__(128) state_update_kernel(const T* __restrict__ u, const T* __restrict__ dbc, const T* __restrict__ xz,
                                                           T* __restrict__ y, const void* __restrict__ dt_w, mamba_dtype wdt,
                                                           const void* __restrict__ dt_b, mamba_dtype bdt, const float* __restrict__ A,
                                                           const float* __restrict__ D, float* __restrict__ state, int E, int N, int R) {
  extern __shared__ float s_dbc[];  // [R + 2N]
  const int b = blockIdx.y;
  const int ld = R + 2 * N;
  for (int i = threadIdx.x; i < ld; i += blockDim.x) s_dbc[i] = to_f<T>(dbc[(size_t)b * ld + i]);
  __syncthreads();
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;
  float dr = 0.f;
  // Unrolled loops keep several loads in flight; the order of every sum is unchanged (same bits).
#pragma unroll 8
  for (int r = 0; r < R; ++r) dr = fmaf(load_any(dt_w, wdt, (size_t)e * R + r), s_dbc[r], dr);
  const float dv = ssm_delta(dr, load_any(dt_b, bdt, e));
  const float uv = to_f<T>(u[(size_t)b * E + e]);
  const float duv = dv * uv;
  const float* Bs = s_dbc + R;
  const float* Cs = s_dbc + R + N;
  float* st = state + ((size_t)b * E + e) * N;
  const float* Ae = A + (size_t)e * N;
  float acc = 0.f;
#pragma unroll 4
  for (int n = 0; n < N; ++n) {
    const float h = ssm_state_step(dv, ssm_scaled_a(Ae[n]), st[n], duv, Bs[n]);
    st[n] = h;
    acc = fmaf(h, Cs[n], acc);
  }
  const float z = to_f<T>(xz[(size_t)b * 2 * E + E + e]);
  y[(size_t)b * E + e] = from_f<T>(ssm_gate_output(acc, D ? D[e] : 0.f, uv, z));
}

// Rows of the batch one thread updates: their loads are all issued before any arithmetic, so a warp waits for
// one memory round trip instead of three (δ̃ → Δ → state), and the W_dt row and A are read once for all of them.
// At batch 64 (130m, H200, ncu) this took the kernel from 20.3 µs (a block per 8 channels of one row, δ̃/B/C staged
// in shared memory behind a barrier, loads issued after the Δ dot product) to 18.1 µs. It stays instruction-bound
// (11.4 M warp instructions at IPC 2.8): every lane of a group computes its channel's softplus and SiLU.
constexpr int kRowsPerThread = tuning::state_update_rows_per_thread;
constexpr int kGroupThreads = tuning::state_update_threads;

template <class T, int G>
__global__ void __launch_bounds__(kGroupThreads) state_update_group_kernel(const T* __restrict__ u, const T* __restrict__ dbc, const T* __restrict__ xz,
                                                                 T* __restrict__ y, const void* __restrict__ dt_w, mamba_dtype wdt,
                                                                 const void* __restrict__ dt_b, mamba_dtype bdt, const float* __restrict__ A,
                                                                 const float* __restrict__ D, float* __restrict__ state, int B, int E, int N,
                                                                 int R) {
  constexpr int RB = kRowsPerThread;
  const int ld = R + 2 * N;
  const int n = threadIdx.x % G;
  const int e = blockIdx.x * (kGroupThreads / G) + threadIdx.x / G;
  const int b0 = blockIdx.y * RB;
  const bool e_ok = e < E;  // no early return: the whole warp takes part in the shuffles
  const bool s_ok = e_ok && n < N;
  // Everything that does not depend on Δ, for all rows, first.
  float st[RB], bv[RB], cv[RB], uv[RB], zv[RB];
  const float an = s_ok ? ssm_scaled_a(A[(size_t)e * N + n]) : 0.f;
#pragma unroll
  for (int k = 0; k < RB; ++k) {
    const int b = b0 + k;
    const bool ok = b < B && s_ok;
    st[k] = ok ? state[((size_t)b * E + e) * N + n] : 0.f;
    bv[k] = ok ? to_f<T>(dbc[(size_t)b * ld + R + n]) : 0.f;
    cv[k] = ok ? to_f<T>(dbc[(size_t)b * ld + R + N + n]) : 0.f;
    uv[k] = b < B && e_ok ? to_f<T>(u[(size_t)b * E + e]) : 0.f;
    zv[k] = b < B && e_ok ? to_f<T>(xz[(size_t)b * 2 * E + E + e]) : 0.f;
  }
  const float dtb = e_ok ? load_any(dt_b, bdt, e) : 0.f;
  const float Dv = e_ok && D ? D[e] : 0.f;
  // Δr: lane n sums r = n, n + G, ... in order, then a butterfly over the group (the bits every decode path uses).
  float dr[RB];
#pragma unroll
  for (int k = 0; k < RB; ++k) dr[k] = 0.f;
  if (e_ok)
    for (int r = n; r < R; r += G) {
      const float w = load_any(dt_w, wdt, (size_t)e * R + r);
#pragma unroll
      for (int k = 0; k < RB; ++k)
        if (b0 + k < B) dr[k] = fmaf(w, to_f<T>(dbc[(size_t)(b0 + k) * ld + r]), dr[k]);
    }
#pragma unroll
  for (int k = 0; k < RB; ++k) dr[k] = group_sum<G>(dr[k]);
#pragma unroll
  for (int k = 0; k < RB; ++k) {
    const int b = b0 + k;
    const float dv = ssm_delta(dr[k], dtb);
    const float duv = dv * uv[k];
    float part = 0.f;
    if (b < B && s_ok) {
      const float h = ssm_state_step(dv, an, st[k], duv, bv[k]);
      state[((size_t)b * E + e) * N + n] = h;
      part = h * cv[k];
    }
    part = group_sum<G>(part);
    if (b < B && e_ok && n == 0) y[(size_t)b * E + e] = from_f<T>(ssm_gate_output(part, Dv, uv[k], zv[k]));
  }
}

template <class T, int G>
void launch_group(mamba_context* ctx, const T* u, const T* dbc, const T* xz, T* y, const void* dt_w, mamba_dtype wdt, const void* dt_b,
                  mamba_dtype bdt, const float* A, const float* D, float* state, int B, int E, int N, int R) {
  constexpr int CPB = kGroupThreads / G;
  dim3 grid(static_cast<unsigned>((E + CPB - 1) / CPB), static_cast<unsigned>((B + kRowsPerThread - 1) / kRowsPerThread));
  state_update_group_kernel<T, G><<<grid, kGroupThreads, 0, ctx->stream>>>(u, dbc, xz, y, dt_w, wdt, dt_b, bdt, A, D, state, B, E, N, R);
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_selective_state_update(mamba_context* ctx, const mamba_selective_scan_params* params) {
  return guard("mamba_selective_state_update", [&] { return scan_shapes(params); }, [&] {
    const mamba_selective_scan_params& p = check_params(params, "mamba_selective_scan_params");
    require(p.length == 1, "a state update step has length 1");
    require(!p.checkpoints, "checkpoints must be NULL for a state update");
    const void *u = p.u, *dbc = p.dbc, *xz = p.xz, *dt_w = p.dt_weight, *dt_b = p.dt_bias;
    void* y = p.y;
    const mamba_dtype adt = p.act_dtype, wdt = p.dt_weight_dtype, bdt = p.dt_bias_dtype;
    const float *A = p.A, *D = p.D;
    float* state = p.state;
    const int32_t B = p.batch, E = p.channels, N = p.d_state, R = p.dt_rank;
    activate(ctx);
    check_dtype(adt, "act_dtype");
    check_dtype(wdt, "dt_weight_dtype");
    check_dtype(bdt, "dt_bias_dtype");
    require(B >= 0 && E > 0 && N > 0 && R > 0 && B <= 65535, "bad shape");
    require(R + 2 * N <= 12000, "dt_rank + 2*d_state too large");
    if (!B) return;
    require(u && dbc && xz && y && dt_w && dt_b && A && state, "null pointer");
    if (N <= 32 && !ctx->tune.legacy_kernels) {
      MAMBA_DISPATCH_DTYPE(adt, T, {
        auto* up = static_cast<const T*>(u);
        auto* dp = static_cast<const T*>(dbc);
        auto* xp = static_cast<const T*>(xz);
        auto* yp = static_cast<T*>(y);
        if (N <= 1) launch_group<T, 1>(ctx, up, dp, xp, yp, dt_w, wdt, dt_b, bdt, A, D, state, B, E, N, R);
        else if (N <= 2) launch_group<T, 2>(ctx, up, dp, xp, yp, dt_w, wdt, dt_b, bdt, A, D, state, B, E, N, R);
        else if (N <= 4) launch_group<T, 4>(ctx, up, dp, xp, yp, dt_w, wdt, dt_b, bdt, A, D, state, B, E, N, R);
        else if (N <= 8) launch_group<T, 8>(ctx, up, dp, xp, yp, dt_w, wdt, dt_b, bdt, A, D, state, B, E, N, R);
        else if (N <= 16) launch_group<T, 16>(ctx, up, dp, xp, yp, dt_w, wdt, dt_b, bdt, A, D, state, B, E, N, R);
        else launch_group<T, 32>(ctx, up, dp, xp, yp, dt_w, wdt, dt_b, bdt, A, D, state, B, E, N, R);
      });
      check_launch(ctx, "state_update_group_kernel");
      return;
    }
    dim3 grid(static_cast<unsigned>((E + 127) / 128), static_cast<unsigned>(B));  // the former kernel's shape
    size_t smem = sizeof(float) * (R + 2 * N);
    MAMBA_DISPATCH_DTYPE(adt, T, {
      state_update_kernel<T><<<grid, 128, smem, ctx->stream>>>(static_cast<const T*>(u), static_cast<const T*>(dbc), static_cast<const T*>(xz),
                                                              static_cast<T*>(y), dt_w, wdt, dt_b, bdt, A, D, state, E, N, R);
    });
    check_launch(ctx, "state_update_kernel");
  });
}
