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

extern "C" MAMBA_API mamba_status mamba_causal_conv1d_update(mamba_context* ctx, const mamba_causal_conv1d_params* params) {
  return guard("mamba_causal_conv1d_update", [&] { return conv_shapes(params); }, [&] {
    const mamba_causal_conv1d_params& p = check_params(params, "mamba_causal_conv1d_params");
    activate(ctx);
    check_dtype(p.act_dtype, "act_dtype");
    check_dtype(p.weight_dtype, "weight_dtype");
    check_dtype(p.state_dtype, "state_dtype");
    if (p.bias) check_dtype(p.bias_dtype, "bias_dtype");
    const int B = p.batch, E = p.channels, K = p.width;
    require(p.length == 1, "a conv update step has length 1");
    require(p.mask == nullptr, "a conv update step takes no mask");
    require(B >= 0 && E > 0 && K >= 1 && B <= 65535, "bad shape");
    if (!B) return;
    require(p.xz && p.weight && p.conv_state && p.u, "null pointer");
    constexpr int threads = tuning::conv_update_threads;
    dim3 grid(static_cast<unsigned>((E + threads - 1) / threads), static_cast<unsigned>(B));
    MAMBA_DISPATCH_DTYPE(p.act_dtype, T, {
      conv_update_kernel<T><<<grid, threads, 0, ctx->stream>>>(static_cast<const T*>(p.xz), p.weight, p.weight_dtype, p.bias, p.bias_dtype,
                                                               p.conv_state, p.state_dtype, static_cast<T*>(p.u), B, E, K);
    });
    check_launch(ctx, "conv_update_kernel");
  });
}
