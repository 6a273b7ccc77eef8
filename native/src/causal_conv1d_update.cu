// Causal conv1d single-token update (spec §11.2): conv_state [B, E, K] shifts left by one and takes x
// (x half of xz [B, 2E]) as its newest column; u = SiLU(bias + Σ_k w[e,k]·state[e,k]). One thread per (b, e);
// the arithmetic is blocks/causal_conv1d_update.cuh, which the fused decode step runs too.
#include "common.cuh"
#include "blocks/causal_conv1d_update.cuh"

namespace mamba {

template <class T>
__global__ void conv_update_kernel(const T* __restrict__ xz, const void* __restrict__ w, mamba_dtype wdt, const void* __restrict__ bias,
                                   mamba_dtype bdt, void* __restrict__ state, mamba_dtype sdt, T* __restrict__ u, int B, int E, int K) {
  int e = blockIdx.x * blockDim.x + threadIdx.x;
  int b = blockIdx.y;
  if (e >= E) return;
  const size_t base = ((size_t)b * E + e) * K;
  const float x = to_f<T>(xz[(size_t)b * 2 * E + e]);
  const float acc = conv_update_step(state, sdt, base, K, x, [&](int k) { return load_any(w, wdt, (size_t)e * K + k); },
                                     bias ? load_any(bias, bdt, e) : 0.f);
  u[(size_t)b * E + e] = from_f<T>(conv_activation(acc));
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_causal_conv1d_update(mamba_context* ctx, const void* xz, mamba_dtype adt, const void* w, mamba_dtype wdt,
                                                             const void* bias, mamba_dtype bdt, void* state, mamba_dtype sdt, void* u,
                                                             int32_t B, int32_t E, int32_t K) {
  return guard("mamba_causal_conv1d_update", [&] { return format("(B %d, E %d, K %d, %s)", B, E, K, dtype_name(adt)); }, [&] {
    activate(ctx);
    check_dtype(adt, "act_dtype");
    check_dtype(wdt, "weight_dtype");
    check_dtype(sdt, "state_dtype");
    if (bias) check_dtype(bdt, "bias_dtype");
    require(B >= 0 && E > 0 && K >= 1 && B <= 65535, "bad shape");
    if (!B) return;
    require(xz && w && state && u, "null pointer");
    constexpr int threads = tuning::conv_update_threads;
    dim3 grid(static_cast<unsigned>((E + threads - 1) / threads), static_cast<unsigned>(B));
    MAMBA_DISPATCH_DTYPE(adt, T, {
      conv_update_kernel<T><<<grid, threads, 0, ctx->stream>>>(static_cast<const T*>(xz), w, wdt, bias, bdt, state, sdt, static_cast<T*>(u), B, E, K);
    });
    check_launch(ctx, "conv_update_kernel");
  });
}
