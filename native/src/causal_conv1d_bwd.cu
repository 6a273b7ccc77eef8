// Backward of the causal depthwise conv + SiLU (+ row mask) (spec §12.5), sequence form from zero history. The conv is
// recomputed from xz: c_t = b + Σ_k w_k·x_{t−K+1+k}; g c_t = g u_t·mask_t·silu′(c_t);
//   g x_τ = Σ_k g c_{τ+K−1−k}·w_k (written to the x half of grad_xz),
//   g w_k += Σ_{b,t} g c_t·x_{t−K+1+k},  g b += Σ_{b,t} g c_t.
// A thread owns one channel of one batch row and a tile of kTile time steps (it walks K−1 steps past the tile to
// collect the g c its last inputs feed); the taps sit in fixed-size shift registers (K <= kMaxWidth) with the weights
// aligned to their end, so every index is a compile-time constant. Parameter gradients: per-(b, tile) partials
// [B·tiles][E][K+1], then one thread a (e, k) adds them in order (deterministic, no atomics).
#include "common.cuh"

#include <algorithm>

namespace mamba {

constexpr int kConvBwdTile = 64;
constexpr int kConvBwdThreads = 128;
constexpr int kMaxWidth = 8;

__device__ __forceinline__ float silu_grad(float c) {
  const float s = 1.f / (1.f + expf(-c));
  return s * (1.f + c * (1.f - s));
}

struct ConvBwdArgs {
  const void* xz;
  mamba_dtype adt;
  const void* w;
  mamba_dtype wdt;
  const void* bias;
  mamba_dtype bdt;
  const float* mask;
  const void* gu;
  mamba_dtype gudt;
  void* gxz;
  mamba_dtype gxdt;
  float* partial;  // [B·tiles][E][K+1]
  int B, L, E, K, tiles;
};

__global__ void __launch_bounds__(kConvBwdThreads) conv_bwd_kernel(const ConvBwdArgs a) {
  constexpr int KM = kMaxWidth;
  const int e = blockIdx.x * kConvBwdThreads + threadIdx.x;
  const int tile = blockIdx.y, b = blockIdx.z;
  if (e >= a.E) return;
  const int K = a.K, L = a.L, E = a.E;
  const int t0 = tile * kConvBwdTile, t1 = min(L, t0 + kConvBwdTile);
  float wa[KM], wr[KM];  // wa[KM−K+k] = w_k (for the conv), wr[KM−1−k] = w_k (for g x); zero elsewhere
#pragma unroll
  for (int i = 0; i < KM; ++i) {
    const int ka = i - (KM - K), kr = KM - 1 - i;
    wa[i] = ka >= 0 ? load_any(a.w, a.wdt, (size_t)e * K + ka) : 0.f;
    wr[i] = kr < K ? load_any(a.w, a.wdt, (size_t)e * K + kr) : 0.f;
  }
  const float bv = a.bias ? load_any(a.bias, a.bdt, e) : 0.f;
  const size_t ld = 2 * (size_t)E;
  const size_t row0 = (size_t)b * L;
  auto x_at = [&](int t) { return (t >= 0 && t < L) ? load_any(a.xz, a.adt, (row0 + t) * ld + e) : 0.f; };
  float xw[KM], gw[KM], pw[KM];
#pragma unroll
  for (int i = 0; i < KM; ++i) {
    xw[i] = x_at(t0 - KM + i);  // before the shift at t0: xw[i] = x_{t0−KM+i}
    gw[i] = 0.f;
    pw[i] = 0.f;
  }
  float pb = 0.f;
  const int tend = t1 + K - 1;  // g x_τ for τ < t1 needs g c up to τ + K − 1
  // Steps in groups of kGroup whose loads are all issued first (a dependent load a step would leave the loop
  // latency-bound).
  constexpr int kGroup = 8;
  for (int tg = t0; tg < tend; tg += kGroup) {
    float xg[kGroup], gg[kGroup];
#pragma unroll
    for (int q = 0; q < kGroup; ++q) {
      const int t = tg + q;
      xg[q] = x_at(t);
      gg[q] = 0.f;
      if (t < L && t < tend) {
        gg[q] = load_any(a.gu, a.gudt, (row0 + t) * E + e);
        if (a.mask) gg[q] *= a.mask[row0 + t];
      }
    }
#pragma unroll
    for (int q = 0; q < kGroup; ++q) {
      const int t = tg + q;
      if (t >= tend) break;
#pragma unroll
      for (int i = 0; i < KM - 1; ++i) xw[i] = xw[i + 1];
      xw[KM - 1] = xg[q];
      float gc = 0.f;
      if (t < L) {
        float c = bv;
#pragma unroll
        for (int i = 0; i < KM; ++i) c = fmaf(wa[i], xw[i], c);
        gc = gg[q] * silu_grad(c);
      }
      if (t < t1) {
#pragma unroll
        for (int i = 0; i < KM; ++i) pw[i] = fmaf(gc, xw[i], pw[i]);
        pb += gc;
      }
#pragma unroll
      for (int i = 0; i < KM - 1; ++i) gw[i] = gw[i + 1];
      gw[KM - 1] = gc;
      const int tau = t - K + 1;
      if (tau >= t0 && tau < t1) {
        float gx = 0.f;
#pragma unroll
        for (int i = 0; i < KM; ++i) gx = fmaf(gw[i], wr[i], gx);
        store_any(a.gxz, a.gxdt, (row0 + tau) * ld + e, gx);
      }
    }
  }
  float* part = a.partial + (((size_t)b * a.tiles + tile) * E + e) * (K + 1);
#pragma unroll
  for (int i = 0; i < KM; ++i) {
    const int k = i - (KM - K);
    if (k >= 0) part[k] = pw[i];
  }
  part[K] = pb;
}

// grad_weight[e, k] += Σ_p partial[p][e][k]; grad_bias[e] += Σ_p partial[p][e][K] (p in order).
__global__ void conv_bwd_reduce_kernel(const float* __restrict__ partial, int parts, int E, int K, float* __restrict__ gw, float* __restrict__ gb) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t per = (int64_t)E * (K + 1);
  if (i >= per) return;
  float acc = 0.f;
  for (int p = 0; p < parts; ++p) acc += partial[(size_t)p * per + i];
  const int e = static_cast<int>(i / (K + 1)), k = static_cast<int>(i % (K + 1));
  if (k < K) gw[(size_t)e * K + k] += acc;
  else if (gb) gb[e] += acc;
}

static void conv_bwd(mamba_context* ctx, const mamba_causal_conv1d_params& p, const mamba_causal_conv1d_grads& g) {
  activate(ctx);
  check_dtype(p.act_dtype, "act_dtype");
  check_dtype(p.weight_dtype, "weight_dtype");
  if (p.bias) check_dtype(p.bias_dtype, "bias_dtype");
  check_dtype(g.grad_u_dtype, "grad_u_dtype");
  check_dtype(g.grad_xz_dtype, "grad_xz_dtype");
  require(p.batch >= 0 && p.length >= 0 && p.channels > 0 && p.width > 0, "bad shape");
  if (p.width > kMaxWidth) fail(MAMBA_ERR_UNSUPPORTED, format("conv width %d > %d is not supported by the backward", p.width, kMaxWidth));
  require(p.batch <= 65535, "batch exceeds 65535");
  if (!p.batch || !p.length) return;
  require(p.xz && p.weight && g.grad_u && g.grad_xz && g.grad_weight, "null pointer");
  ConvBwdArgs a{};
  a.xz = p.xz; a.adt = p.act_dtype; a.w = p.weight; a.wdt = p.weight_dtype; a.bias = p.bias; a.bdt = p.bias_dtype; a.mask = p.mask;
  a.gu = g.grad_u; a.gudt = g.grad_u_dtype; a.gxz = g.grad_xz; a.gxdt = g.grad_xz_dtype;
  a.B = p.batch; a.L = p.length; a.E = p.channels; a.K = p.width;
  a.tiles = (p.length + kConvBwdTile - 1) / kConvBwdTile;
  require(a.tiles <= 65535, "length too long");
  const int parts = a.B * a.tiles;
  a.partial = static_cast<float*>(workspace(ctx, kWsTrainB, static_cast<size_t>(parts) * a.E * (a.K + 1) * 4));
  dim3 grid(blocks_for(a.E, kConvBwdThreads), static_cast<unsigned>(a.tiles), static_cast<unsigned>(a.B));
  conv_bwd_kernel<<<grid, kConvBwdThreads, 0, ctx->stream>>>(a);
  check_launch(ctx, "conv_bwd_kernel");
  const int64_t per = (int64_t)a.E * (a.K + 1);
  conv_bwd_reduce_kernel<<<blocks_for(per, 256), 256, 0, ctx->stream>>>(a.partial, parts, a.E, a.K, g.grad_weight, g.grad_bias);
  check_launch(ctx, "conv_bwd_reduce_kernel");
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_causal_conv1d_bwd(mamba_context* ctx, const mamba_causal_conv1d_params* params,
                                                          const mamba_causal_conv1d_grads* grads) {
  return guard("mamba_causal_conv1d_bwd", [&] { return conv_shapes(params); }, [&] {
    conv_bwd(ctx, check_params(params, "mamba_causal_conv1d_params"), check_params(grads, "mamba_causal_conv1d_grads"));
  });
}
