// Causal depthwise conv1d forward over token-major activations (spec §11.1, layout of IMambaBackend):
// x = xz[b, t, 0:E] (row stride 2E), u[b, t, e] = mask[b,t] · SiLU(bias[e] + Σ_k w[e,k]·x[b, t-K+1+k, e]).
// Default (E % 4 == 0, K 2..4): a thread owns 4 consecutive channels and 64 time steps (vector loads and stores,
// 16 rows in flight); otherwise one thread per channel walks a tile of 32 steps. Both keep the K-1 previous inputs
// in registers and give the same bits. SiLU is the MUFU form (__expf, fast divide; ~1e-7 relative): with the
// libm form the kernel was bound by its instruction count, not by memory. A second small kernel
// writes the conv state (last K inputs, zero-padded on the left when L < K).
// Continuation (mamba_causal_conv1d_fwd_continue): the inputs before t = 0 are conv_state columns 1..K-1
// instead of zeros; a separate kernel, queued after the conv, then shifts the state in place (so every conv
// block has read the old history before any column is overwritten).
#include "common.cuh"

namespace mamba {

constexpr int kConvThreads = tuning::conv_threads;
constexpr int kConvTile = tuning::conv_tile;

template <class T, int K>
__global__ void __launch_bounds__(kConvThreads) conv_fwd_kernel(const T* __restrict__ xz, const void* __restrict__ w, mamba_dtype wdt,
                                                               const void* __restrict__ bias, mamba_dtype bdt, const float* __restrict__ mask,
                                                               T* __restrict__ u, const void* __restrict__ hist, mamba_dtype hdt, int L, int E) {
  int e = blockIdx.x * kConvThreads + threadIdx.x;
  int t0 = blockIdx.y * kConvTile;
  int b = blockIdx.z;
  if (e >= E) return;
  float wk[K];
#pragma unroll
  for (int k = 0; k < K; ++k) wk[k] = load_any(w, wdt, (size_t)e * K + k);
  float bv = bias ? load_any(bias, bdt, e) : 0.f;
  const size_t ld = 2 * (size_t)E;
  const T* xrow = xz + (size_t)b * L * ld + e;
  float win[K];  // win[K-1] is the current input
#pragma unroll
  for (int k = 0; k < K - 1; ++k) {
    int t = t0 - (K - 1) + k;
    // Before t = 0: zero, or (continuation) conv_state column t + K of this (b, e).
    win[k] = t >= 0 ? to_f<T>(xrow[(size_t)t * ld]) : (hist ? load_any(hist, hdt, ((size_t)b * E + e) * K + (t + K)) : 0.f);
  }
  // Fully unrolled so every row load of the tile is in flight at once (the loop is latency-bound otherwise).
  float xv[kConvTile];
#pragma unroll
  for (int i = 0; i < kConvTile; ++i) xv[i] = t0 + i < L ? to_f<T>(xrow[(size_t)(t0 + i) * ld]) : 0.f;
#pragma unroll
  for (int i = 0; i < kConvTile; ++i) {
    const int t = t0 + i;
    if (t >= L) break;
    win[K - 1] = xv[i];
    float acc = bv;
#pragma unroll
    for (int k = 0; k < K; ++k) acc = fmaf(wk[k], win[k], acc);
    float v = silu_fast(acc);
    if (mask) v *= mask[(size_t)b * L + t];
    u[((size_t)b * L + t) * E + e] = from_f<T>(v);
#pragma unroll
    for (int k = 0; k < K - 1; ++k) win[k] = win[k + 1];
  }
}

// Vectorised form (the default when E % 4 == 0 and the activations are 16-byte / 8-byte aligned): a thread owns
// 4 consecutive channels (one 16-byte fp32 or 8-byte 16-bit load per time row, so a warp reads 512 or 256
// contiguous bytes) and 32 time steps, loaded 16 rows at a time so 16 loads are in flight per thread. The
// arithmetic per channel is that of conv_fwd_kernel (same order: bias, then taps 0..K-1), so both give the same bits.
constexpr int kConvVecTile = tuning::conv_vec_tile;
constexpr int kConvVecGroup = tuning::conv_vec_rows_in_flight;

template <class T> struct Pack4 { using type = uint2; };  // 4 × 16-bit
template <> struct Pack4<float> { using type = float4; };

template <class T> __device__ __forceinline__ void unpack4(const typename Pack4<T>::type& v, float (&o)[4]) {
  const T* p = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) o[i] = to_f<T>(p[i]);
}
template <class T> __device__ __forceinline__ typename Pack4<T>::type pack4(const float (&v)[4]) {
  typename Pack4<T>::type r;
  T* p = reinterpret_cast<T*>(&r);
#pragma unroll
  for (int i = 0; i < 4; ++i) p[i] = from_f<T>(v[i]);
  return r;
}

template <class T, int K>
__global__ void __launch_bounds__(kConvThreads) conv_fwd_vec_kernel(const T* __restrict__ xz, const void* __restrict__ w, mamba_dtype wdt,
                                                                   const void* __restrict__ bias, mamba_dtype bdt, const float* __restrict__ mask,
                                                                   T* __restrict__ u, const void* __restrict__ hist, mamba_dtype hdt, int L, int E) {
  using V = typename Pack4<T>::type;
  const int e = (blockIdx.x * kConvThreads + threadIdx.x) * 4;
  const int t0 = blockIdx.y * kConvVecTile;
  const int b = blockIdx.z;
  if (e >= E) return;
  float wk[4][K], bv[4], win[4][K];
#pragma unroll
  for (int c = 0; c < 4; ++c) {
#pragma unroll
    for (int k = 0; k < K; ++k) wk[c][k] = load_any(w, wdt, (size_t)(e + c) * K + k);
    bv[c] = bias ? load_any(bias, bdt, e + c) : 0.f;
  }
  const size_t ld = 2 * (size_t)E;
  const T* xrow = xz + (size_t)b * L * ld + e;
#pragma unroll
  for (int k = 0; k < K - 1; ++k) {
    const int t = t0 - (K - 1) + k;
    if (t >= 0) {
      float x4[4];
      unpack4<T>(*reinterpret_cast<const V*>(xrow + (size_t)t * ld), x4);
#pragma unroll
      for (int c = 0; c < 4; ++c) win[c][k] = x4[c];
    } else {
#pragma unroll
      for (int c = 0; c < 4; ++c) win[c][k] = hist ? load_any(hist, hdt, ((size_t)b * E + e + c) * K + (t + K)) : 0.f;
    }
  }
  T* urow = u + (size_t)b * L * E + e;
  const float* mrow = mask ? mask + (size_t)b * L : nullptr;
#pragma unroll 1
  for (int g = 0; g < kConvVecTile; g += kConvVecGroup) {
    const int tg = t0 + g;
    if (tg >= L) break;
    V xv[kConvVecGroup];
#pragma unroll
    for (int i = 0; i < kConvVecGroup; ++i)
      if (tg + i < L) xv[i] = *reinterpret_cast<const V*>(xrow + (size_t)(tg + i) * ld);
#pragma unroll
    for (int i = 0; i < kConvVecGroup; ++i) {
      const int t = tg + i;
      if (t < L) {
        float x4[4], o[4];
        unpack4<T>(xv[i], x4);
        const float m = mrow ? mrow[t] : 1.f;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          win[c][K - 1] = x4[c];
          float acc = bv[c];
#pragma unroll
          for (int k = 0; k < K; ++k) acc = fmaf(wk[c][k], win[c][k], acc);
          float v = silu_fast(acc);
          if (mrow) v *= m;
          o[c] = v;
#pragma unroll
          for (int k = 0; k < K - 1; ++k) win[c][k] = win[c][k + 1];
        }
        *reinterpret_cast<V*>(urow + (size_t)t * E) = pack4<T>(o);
      }
    }
  }
}

// Any width: reads the window from memory (used only for K outside 2..4).
template <class T>
__global__ void conv_fwd_generic_kernel(const T* __restrict__ xz, const void* __restrict__ w, mamba_dtype wdt, const void* __restrict__ bias,
                                        mamba_dtype bdt, const float* __restrict__ mask, T* __restrict__ u, const void* __restrict__ hist,
                                        mamba_dtype hdt, int L, int E, int K) {
  int e = blockIdx.x * kConvThreads + threadIdx.x;
  int t0 = blockIdx.y * kConvTile;
  int b = blockIdx.z;
  if (e >= E) return;
  const size_t ld = 2 * (size_t)E;
  const T* xrow = xz + (size_t)b * L * ld + e;
  float bv = bias ? load_any(bias, bdt, e) : 0.f;
  int t1 = min(t0 + kConvTile, L);
  for (int t = t0; t < t1; ++t) {
    float acc = bv;
    for (int k = 0; k < K; ++k) {
      int tt = t - K + 1 + k;
      if (tt >= 0) acc = fmaf(load_any(w, wdt, (size_t)e * K + k), to_f<T>(xrow[(size_t)tt * ld]), acc);
      else if (hist) acc = fmaf(load_any(w, wdt, (size_t)e * K + k), load_any(hist, hdt, ((size_t)b * E + e) * K + (tt + K)), acc);
    }
    float v = silu_fast(acc);
    if (mask) v *= mask[(size_t)b * L + t];
    u[((size_t)b * L + t) * E + e] = from_f<T>(v);
  }
}

template <class T>
__global__ void conv_state_write_kernel(const T* __restrict__ xz, void* __restrict__ state, mamba_dtype sdt, int B, int L, int E, int K) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  size_t n = (size_t)B * E * K;
  if (i >= n) return;
  int k = static_cast<int>(i % K);
  size_t be = i / K;
  int e = static_cast<int>(be % E);
  int b = static_cast<int>(be / E);
  int t = L - K + k;
  float v = t >= 0 ? to_f<T>(xz[((size_t)b * L + t) * 2 * E + e]) : 0.f;
  store_any(state, sdt, i, v);
}

// Continuation: the new state is the last K inputs of [old state columns 1..K-1, x]. One thread per (b, e)
// walks k upwards; column k takes x[L-K+k] or, when L-K+k < 0, old column L+k (> k, so not yet overwritten):
// safe in place. Launched after the conv kernel, which read the old columns as its history.
template <class T>
__global__ void conv_state_continue_kernel(const T* __restrict__ xz, void* state, mamba_dtype sdt, int B, int L, int E, int K) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)B * E) return;
  int e = static_cast<int>(i % E);
  int b = static_cast<int>(i / E);
  size_t base = i * K;
  for (int k = 0; k < K; ++k) {
    int t = L - K + k;
    float v = t >= 0 ? to_f<T>(xz[((size_t)b * L + t) * 2 * E + e]) : load_any(state, sdt, base + (t + K));
    store_any(state, sdt, base + k, v);
  }
}

static void conv_fwd(mamba_context* ctx, const void* xz, mamba_dtype adt, const void* w, mamba_dtype wdt, const void* bias, mamba_dtype bdt,
                     const float* mask, void* u, void* state, mamba_dtype sdt, int32_t B, int32_t L, int32_t E, int32_t K, bool cont) {
  activate(ctx);
  check_dtype(adt, "act_dtype");
  check_dtype(wdt, "weight_dtype");
  if (bias) check_dtype(bdt, "bias_dtype");
  if (state) check_dtype(sdt, "state_dtype");
  require(B >= 0 && L >= 0 && E > 0 && K >= 1, "bad shape");
  require(B <= 65535, "batch exceeds 65535");
  if (!B) return;
  require(xz && w && (u || L == 0), "null pointer");
  require(!cont || state, "continuation needs conv_state");
  if (cont && L == 0) return;  // nothing to add: the state stays as it is
  const void* hist = cont ? state : nullptr;
  const size_t vec_bytes = 4 * dtype_size(adt);
  const bool vec = E % 4 == 0 && K >= 2 && K <= 4 && reinterpret_cast<uintptr_t>(xz) % vec_bytes == 0 &&
                   reinterpret_cast<uintptr_t>(u) % vec_bytes == 0 && !ctx->tune.legacy_kernels;
  if (L > 0 && vec) {
    dim3 grid(static_cast<unsigned>((E / 4 + kConvThreads - 1) / kConvThreads), static_cast<unsigned>((L + kConvVecTile - 1) / kConvVecTile),
              static_cast<unsigned>(B));
    MAMBA_DISPATCH_DTYPE(adt, T, {
      auto* x = static_cast<const T*>(xz);
      auto* uo = static_cast<T*>(u);
      switch (K) {
        case 2: conv_fwd_vec_kernel<T, 2><<<grid, kConvThreads, 0, ctx->stream>>>(x, w, wdt, bias, bdt, mask, uo, hist, sdt, L, E); break;
        case 3: conv_fwd_vec_kernel<T, 3><<<grid, kConvThreads, 0, ctx->stream>>>(x, w, wdt, bias, bdt, mask, uo, hist, sdt, L, E); break;
        default: conv_fwd_vec_kernel<T, 4><<<grid, kConvThreads, 0, ctx->stream>>>(x, w, wdt, bias, bdt, mask, uo, hist, sdt, L, E); break;
      }
    });
    check_launch(ctx, "conv_fwd_vec_kernel");
  } else if (L > 0) {
    dim3 grid(static_cast<unsigned>((E + kConvThreads - 1) / kConvThreads), static_cast<unsigned>((L + kConvTile - 1) / kConvTile), static_cast<unsigned>(B));
    MAMBA_DISPATCH_DTYPE(adt, T, {
      auto* x = static_cast<const T*>(xz);
      auto* uo = static_cast<T*>(u);
      switch (K) {
        case 2: conv_fwd_kernel<T, 2><<<grid, kConvThreads, 0, ctx->stream>>>(x, w, wdt, bias, bdt, mask, uo, hist, sdt, L, E); break;
        case 3: conv_fwd_kernel<T, 3><<<grid, kConvThreads, 0, ctx->stream>>>(x, w, wdt, bias, bdt, mask, uo, hist, sdt, L, E); break;
        case 4: conv_fwd_kernel<T, 4><<<grid, kConvThreads, 0, ctx->stream>>>(x, w, wdt, bias, bdt, mask, uo, hist, sdt, L, E); break;
        default: conv_fwd_generic_kernel<T><<<grid, kConvThreads, 0, ctx->stream>>>(x, w, wdt, bias, bdt, mask, uo, hist, sdt, L, E, K); break;
      }
    });
    check_launch(ctx, "conv_fwd_kernel");
  }
  if (state && cont) {
    size_t n = (size_t)B * E;
    MAMBA_DISPATCH_DTYPE(adt, T, {
      conv_state_continue_kernel<T><<<blocks_for((int64_t)n, 256), 256, 0, ctx->stream>>>(static_cast<const T*>(xz), state, sdt, B, L, E, K);
    });
    check_launch(ctx, "conv_state_continue_kernel");
  } else if (state) {
    size_t n = (size_t)B * E * K;
    MAMBA_DISPATCH_DTYPE(adt, T, {
      conv_state_write_kernel<T><<<blocks_for((int64_t)n, 256), 256, 0, ctx->stream>>>(static_cast<const T*>(xz), state, sdt, B, L, E, K);
    });
    check_launch(ctx, "conv_state_write_kernel");
  }
}

}  // namespace mamba

using namespace mamba;

// "(B .., L .., E .., K .., dtype)" for error messages, when the struct may be read.
std::string mamba::conv_shapes(const mamba_causal_conv1d_params* p) {
  return params_ok(p) ? format("(B %d, L %d, E %d, K %d, %s)", p->batch, p->length, p->channels, p->width, dtype_name(p->act_dtype))
                      : std::string();
}

extern "C" MAMBA_API mamba_status mamba_causal_conv1d_fwd(mamba_context* ctx, const mamba_causal_conv1d_params* params) {
  return guard("mamba_causal_conv1d_fwd", [&] { return conv_shapes(params); }, [&] {
    const mamba_causal_conv1d_params& p = check_params(params, "mamba_causal_conv1d_params");
    conv_fwd(ctx, p.xz, p.act_dtype, p.weight, p.weight_dtype, p.bias, p.bias_dtype, p.mask, p.u, p.conv_state, p.state_dtype, p.batch,
             p.length, p.channels, p.width, false);
  });
}

extern "C" MAMBA_API mamba_status mamba_causal_conv1d_fwd_continue(mamba_context* ctx, const mamba_causal_conv1d_params* params) {
  return guard("mamba_causal_conv1d_fwd_continue", [&] { return conv_shapes(params); }, [&] {
    const mamba_causal_conv1d_params& p = check_params(params, "mamba_causal_conv1d_params");
    require(p.mask == nullptr, "the continuation takes no mask");
    conv_fwd(ctx, p.xz, p.act_dtype, p.weight, p.weight_dtype, p.bias, p.bias_dtype, nullptr, p.u, p.conv_state, p.state_dtype, p.batch,
             p.length, p.channels, p.width, true);
  });
}
