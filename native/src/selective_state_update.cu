// Selective state update, one decode step (spec §8.3 steps 4-6, §11.4), with dt_proj fused:
// Δ = softplus(W_dt[e, :]·δ̃ + b_dt[e]); s ← ex2(Δ·A·log2 e)⊙s + (Δ·u)·B; y = (Σ_n s·C + D·u)·SiLU(z).
// One thread per (b, e); δ̃, B and C of the batch row are staged in shared memory; the fp32 state is
// updated in place. Same arithmetic order as the prefill scan, so decode continues it exactly.
#include "common.cuh"

namespace mamba {

constexpr float kLog2eU = 1.4426950408889634f;

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
  const float dv = softplus_f(dr + load_any(dt_b, bdt, e));
  const float uv = to_f<T>(u[(size_t)b * E + e]);
  const float duv = dv * uv;
  const float* Bs = s_dbc + R;
  const float* Cs = s_dbc + R + N;
  float* st = state + ((size_t)b * E + e) * N;
  const float* Ae = A + (size_t)e * N;
  float acc = 0.f;
#pragma unroll 4
  for (int n = 0; n < N; ++n) {
    float dA = ex2_approx(dv * (Ae[n] * kLog2eU));
    float h = fmaf(dA, st[n], duv * Bs[n]);
    st[n] = h;
    acc = fmaf(h, Cs[n], acc);
  }
  float yv = acc + (D ? D[e] : 0.f) * uv;
  float z = to_f<T>(xz[(size_t)b * 2 * E + E + e]);
  y[(size_t)b * E + e] = from_f<T>(yv * silu_f(z));
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_selective_state_update(mamba_context* ctx, const void* u, const void* dbc, const void* xz, void* y,
                                                               mamba_dtype adt, const void* dt_w, mamba_dtype wdt, const void* dt_b,
                                                               mamba_dtype bdt, const float* A, const float* D, float* state, int32_t B,
                                                               int32_t E, int32_t N, int32_t R) {
  return guard("mamba_selective_state_update", [&] { return format("(B %d, E %d, N %d, R %d, %s)", B, E, N, R, dtype_name(adt)); }, [&] {
    activate(ctx);
    check_dtype(adt, "act_dtype");
    check_dtype(wdt, "dt_weight_dtype");
    check_dtype(bdt, "dt_bias_dtype");
    require(B >= 0 && E > 0 && N > 0 && R > 0 && B <= 65535, "bad shape");
    require(R + 2 * N <= 12000, "dt_rank + 2*d_state too large");
    if (!B) return;
    require(u && dbc && xz && y && dt_w && dt_b && A && state, "null pointer");
    dim3 grid(static_cast<unsigned>((E + 127) / 128), static_cast<unsigned>(B));
    size_t smem = sizeof(float) * (R + 2 * N);
    MAMBA_DISPATCH_DTYPE(adt, T, {
      state_update_kernel<T><<<grid, 128, smem, ctx->stream>>>(static_cast<const T*>(u), static_cast<const T*>(dbc), static_cast<const T*>(xz),
                                                              static_cast<T*>(y), dt_w, wdt, dt_b, bdt, A, D, state, E, N, R);
    });
    check_launch(ctx, "state_update_kernel");
  });
}
