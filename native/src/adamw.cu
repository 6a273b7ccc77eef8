// One AdamW step (torch.optim.AdamW: decoupled weight decay applied first), elementwise over f32 master weights with
// f32 moments; optionally writes the model's form of the new master (-exp for A from A_log, else rounded to the
// parameter dtype). Explicitly rounded operations (__fmul_rn, ...) so nvcc does not contract them into FMAs: the
// result follows the written formula step by step, like the CPU backend's scalar code.
#include "common.cuh"

namespace mamba {

__global__ void adamw_kernel(const mamba_adamw_params p) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.count; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = __fmul_rn(p.grad_scale, p.grad[i]);
    const float m = __fadd_rn(__fmul_rn(p.beta1, p.m[i]), __fmul_rn(1.f - p.beta1, g));
    const float v = __fadd_rn(__fmul_rn(p.beta2, p.v[i]), __fmul_rn(1.f - p.beta2, __fmul_rn(g, g)));
    float w = p.master[i];
    w = __fsub_rn(w, __fmul_rn(__fmul_rn(p.lr, p.weight_decay), w));
    const float mhat = __fdiv_rn(m, p.bias_correction1);
    const float denom = __fadd_rn(__fsqrt_rn(__fdiv_rn(v, p.bias_correction2)), p.eps);
    w = __fsub_rn(w, __fmul_rn(p.lr, __fdiv_rn(mhat, denom)));
    p.m[i] = m;
    p.v[i] = v;
    p.master[i] = w;
    if (p.param) store_any(p.param, p.param_dtype, i, p.neg_exp ? -expf(w) : w);
  }
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_adamw_step(mamba_context* ctx, const mamba_adamw_params* params) {
  return guard("mamba_adamw_step", [&] { return params_ok(params) ? format("(%lld values)", (long long)params->count) : std::string(); }, [&] {
    const mamba_adamw_params& p = check_params(params, "mamba_adamw_params");
    activate(ctx);
    if (p.param) check_dtype(p.param_dtype, "param_dtype");
    require(p.count >= 0, "bad shape");
    if (!p.count) return;
    require(p.master && p.grad && p.m && p.v, "null pointer");
    unsigned blocks = blocks_for(p.count, 256);
    if (blocks > 65535u * 4) blocks = 65535u * 4;
    adamw_kernel<<<blocks, 256, 0, ctx->stream>>>(p);
    check_launch(ctx, "adamw_kernel");
  });
}
