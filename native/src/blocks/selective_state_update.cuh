// The SSM step arithmetic (spec §8.3 steps 4-6, §11.4), shared by selective_state_update.cu, the fused decode step
// (decode_step.cu) and, for the recurrence itself, the prefill scan (selective_scan.cu), so decode continues prefill
// and the fused step matches the op-by-op step bit for bit:
//   Δ = softplus(W_dt·δ̃ + b_dt);  h ← ex2(Δ·A·log2 e)·h + (Δ·u)·B;  y = (Σ_n h·C + D·u)·SiLU(z).
// The decode paths sum W_dt·δ̃ and Σ_n h·C over a lane group (lane n: r = n, n + G, ... in order, then group_sum).
#pragma once
#include "../device_math.cuh"

namespace mamba {

// Δ from the dt_proj dot product (libm softplus; the scan uses softplus_fast).
__device__ __forceinline__ float ssm_delta(float dt_dot, float dt_bias) { return softplus_f(dt_dot + dt_bias); }

// A pre-scaled by log2(e), so the decay is one ex2.
__device__ __forceinline__ float ssm_scaled_a(float a) { return a * kLog2e; }

// One state's step: returns ex2(Δ·a_log2e)·h + delta_u·b, with a_log2e = ssm_scaled_a(A) and delta_u = Δ·u.
__device__ __forceinline__ float ssm_state_step(float delta, float a_log2e, float h, float delta_u, float b) {
  return fmaf(ex2_approx(delta * a_log2e), h, delta_u * b);
}

// The gated output from the readout Σ_n h·C (libm SiLU; the scan uses silu_fast).
__device__ __forceinline__ float ssm_gate_output(float readout, float d, float u, float z) { return (readout + d * u) * silu_f(z); }

}  // namespace mamba
