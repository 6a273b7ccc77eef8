// One conv update step of one channel (spec §11.2), shared by causal_conv1d_update.cu and the fused decode step
// (decode_step.cu): the state [K] at `base` shifts left and takes x as its newest column (each value as the state
// dtype stores it), acc += Σ_k w[k]·state[k] in tap order, then u = SiLU(acc) with the sequence kernels' MUFU SiLU
// (so a decode step continues prefill). The old columns are all read before any is written, so their loads are in
// flight together (the step is latency-bound). `w(k)` returns tap k's weight as a float.
#pragma once
#include "../device_math.cuh"

namespace mamba {

// Taps the unrolled register form holds; wider convs take the loop.
constexpr int kConvMaxTaps = 8;

// old[k] = state column k + 1 for k < K - 1 (0 past it), read before x is known.
__device__ __forceinline__ void conv_update_load_history(const void* state, mamba_dtype sdt, size_t base, int K, float (&old)[kConvMaxTaps]) {
#pragma unroll
  for (int k = 0; k < kConvMaxTaps; ++k) old[k] = k + 1 < K ? load_any(state, sdt, base + k + 1) : 0.f;
}

// The step from old columns already in registers (K <= kConvMaxTaps); returns acc + Σ_k w(k)·column k.
template <class WeightAt>
__device__ __forceinline__ float conv_update_shift(void* state, mamba_dtype sdt, size_t base, int K, const float (&old)[kConvMaxTaps], float x,
                                                   WeightAt w, float acc) {
#pragma unroll
  for (int k = 0; k < kConvMaxTaps; ++k)
    if (k < K) {
      const float v = k + 1 < K ? old[k] : round_any(x, sdt);
      store_any(state, sdt, base + k, v);
      acc = fmaf(w(k), v, acc);
    }
  return acc;
}

// The whole step for any K; returns acc + Σ_k w(k)·column k.
template <class WeightAt>
__device__ __forceinline__ float conv_update_step(void* state, mamba_dtype sdt, size_t base, int K, float x, WeightAt w, float acc) {
  if (K <= kConvMaxTaps) {
    float old[kConvMaxTaps];
    conv_update_load_history(state, sdt, base, K, old);
    return conv_update_shift(state, sdt, base, K, old, x, w, acc);
  }
  for (int k = 0; k < K; ++k) {
    const float v = k + 1 < K ? load_any(state, sdt, base + k + 1) : round_any(x, sdt);
    store_any(state, sdt, base + k, v);
    acc = fmaf(w(k), v, acc);
  }
  return acc;
}

// u from the conv sum (bias included).
__device__ __forceinline__ float conv_activation(float acc) { return silu_fast(acc); }

}  // namespace mamba
