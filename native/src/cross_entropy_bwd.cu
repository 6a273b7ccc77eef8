// The lm_head and cross-entropy backward fused (spec §12.1), in row chunks so the [rows, vocab] logits never exist at
// once. hidden (f32 norm_f output) is rounded to the weight dtype first, like the forward linear. Per chunk of rc rows:
//   1. logits [rc, V] f32 = hidden·Wᵀ                   (cuBLAS, column-major gemm(T, N, V, rc, d), f32 C workspace);
//   2. one block a row: max, Σ exp in fp32, the row loss in float64 (as mamba_cross_entropy_sum), then in place
//      g logits = (softmax − onehot(target))·grad_scale (zero rows for ignored targets), rounded to the weight dtype
//      into a second workspace when the weights are 16-bit (the GEMM operands must share a type);
//   3. grad_hidden [rc, d] f32 = g logits·W              (gemm(N, N, d, rc, V), overwritten);
//   4. grad_weight [V, d] f32 += g logitsᵀ·hidden        (gemm(N, T, d, V, rc), beta = 1).
// The chunk is sized so the f32 logits workspace stays at most kChunkBytes; the row losses are summed on the host in
// row order (float64), like mamba_cross_entropy_sum.
#include "common.cuh"

#include <algorithm>
#include <type_traits>
#include <vector>

namespace mamba {

constexpr size_t kChunkBytes = 256u << 20;
constexpr int kSoftmaxThreads = 256;

__device__ __forceinline__ float block_max(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  float r = sh[0];
  for (int i = 1; i < (int)blockDim.x / 32; ++i) r = fmaxf(r, sh[i]);
  return r;
}
__device__ __forceinline__ float block_sum(float v, float* sh) {
  v = warp_sum(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  float r = 0.f;
  for (int i = 0; i < (int)blockDim.x / 32; ++i) r += sh[i];
  return r;
}

// exp(x) for the softmax: libm for f32 weights (the oracle's precision), MUFU ex2 when the gradient is rounded to 16 bits
// anyway (relative error ~2e-6 for the logit ranges of a language model, far below bf16's 4e-3).
template <class TG> __device__ __forceinline__ float softmax_exp(float x) {
  if constexpr (std::is_same_v<TG, float>) return expf(x);
  else return ex2_approx(x * kLog2e);
}

// One block a row. Pass 1 reads the row once with an online max and Σ exp (each thread rescales its own sum when its
// max grows; the block then joins the (max, sum) pairs); pass 2 writes the gradient. Rows 16-byte aligned and cols a
// multiple of 4 (the common case, V = 50280) take float4 loads.
template <class TG>
__global__ void __launch_bounds__(kSoftmaxThreads) softmax_grad_kernel(float* __restrict__ logits, TG* __restrict__ glogits, int64_t cols,
                                                                       const int32_t* __restrict__ targets, int32_t ignore, float scale,
                                                                       double* __restrict__ loss) {
  __shared__ float sh[kSoftmaxThreads / 32];
  __shared__ float sh2[kSoftmaxThreads / 32];
  const int64_t row = blockIdx.x;
  float* lr = logits + row * cols;
  TG* gr = glogits + row * cols;
  const int32_t t = targets[row];
  if (t == ignore) {
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) gr[j] = from_f<TG>(0.f);
    if (threadIdx.x == 0) loss[row] = 0.0;
    return;
  }
  const bool vec = cols % 4 == 0 && reinterpret_cast<uintptr_t>(lr) % 16 == 0;
  float mx = -INFINITY, s = 0.f;
  auto add = [&](float x) {
    if (x > mx) {
      s = s * softmax_exp<TG>(mx - x) + 1.f;  // exp(−∞) = 0 on the first value
      mx = x;
    } else {
      s += softmax_exp<TG>(x - mx);
    }
  };
  if (vec) {
    const float4* l4 = reinterpret_cast<const float4*>(lr);
    for (int64_t j = threadIdx.x; j < cols / 4; j += blockDim.x) {
      const float4 v = l4[j];
      add(v.x); add(v.y); add(v.z); add(v.w);
    }
  } else {
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) add(lr[j]);
  }
  // Join the threads' (max, sum): the block max, then each sum rescaled to it (threads that saw nothing hold s = 0).
  const float bm = block_max(mx, sh);
  const float mine = mx == -INFINITY ? 0.f : s * softmax_exp<TG>(mx - bm);
  mx = bm;
  s = block_sum(mine, sh2);
  const float lt = lr[t];
  __syncthreads();  // every thread has read lr[t] before it is overwritten (when TG is float, gr aliases lr)
  const float inv = 1.f / s;
  if (vec) {
    const float4* l4 = reinterpret_cast<const float4*>(lr);
    for (int64_t j = threadIdx.x; j < cols / 4; j += blockDim.x) {
      const float4 v = l4[j];
      const float x[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        float p = softmax_exp<TG>(x[q] - mx) * inv;
        if (4 * j + q == t) p -= 1.f;
        gr[4 * j + q] = from_f<TG>(p * scale);
      }
    }
  } else {
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      float p = softmax_exp<TG>(lr[j] - mx) * inv;
      if (j == t) p -= 1.f;
      gr[j] = from_f<TG>(p * scale);
    }
  }
  if (threadIdx.x == 0) loss[row] = log((double)s) + (double)mx - (double)lt;
}

static void linear_cross_entropy_bwd(mamba_context* ctx, const mamba_linear_cross_entropy_params& p) {
  activate(ctx);
  check_dtype(p.hidden_dtype, "hidden_dtype");
  check_dtype(p.weight_dtype, "weight_dtype");
  require(p.rows >= 0 && p.vocab > 0 && p.dim > 0 && p.rows <= 2147483647LL && p.vocab <= 2147483647LL, "bad shape");
  require(p.loss_sum && p.count, "null output");
  *p.loss_sum = 0;
  *p.count = 0;
  if (!p.rows) return;
  require(p.hidden && p.weight && p.host_targets && p.grad_hidden, "null pointer");
  const int64_t M = p.rows, V = p.vocab, d = p.dim;
  int64_t counted = 0;
  for (int64_t m = 0; m < M; ++m) {
    const int32_t t = p.host_targets[m];
    if (t == p.ignore_index) continue;
    if (t < 0 || t >= V) fail(MAMBA_ERR_INVALID_ARGUMENT, format("target %d at row %lld is outside [0, %lld)", t, (long long)m, (long long)V));
    ++counted;
  }
  const mamba_dtype cdt = p.weight_dtype;
  const bool narrow = cdt != MAMBA_DTYPE_F32;
  const void* h = p.hidden;
  if (p.hidden_dtype != cdt) {
    void* t = workspace(ctx, kWsConvertA, static_cast<size_t>(M * d) * dtype_size(cdt));
    launch_convert(ctx, p.hidden, p.hidden_dtype, t, cdt, M * d);
    h = t;
  }
  const int64_t rc = std::max<int64_t>(1, std::min<int64_t>(M, static_cast<int64_t>(kChunkBytes / (static_cast<size_t>(V) * 4))));
  float* logits = static_cast<float*>(workspace(ctx, kWsTrainA, static_cast<size_t>(rc * V) * 4));
  void* glogits = logits;
  if (narrow) glogits = workspace(ctx, kWsConvertB, static_cast<size_t>(rc * V) * 2);
  const size_t tb = ((static_cast<size_t>(M) * 4 + 255) / 256) * 256;
  char* ws = static_cast<char*>(workspace(ctx, kWsTrainB, tb + static_cast<size_t>(M) * 8));
  auto* dtargets = reinterpret_cast<int32_t*>(ws);
  auto* dloss = reinterpret_cast<double*>(ws + tb);
  check_cuda(cudaMemcpyAsync(dtargets, p.host_targets, static_cast<size_t>(M) * 4, cudaMemcpyHostToDevice, ctx->stream), "cudaMemcpyAsync targets");
  const size_t hsz = dtype_size(cdt);
  for (int64_t r0 = 0; r0 < M; r0 += rc) {
    const int64_t n = std::min(rc, M - r0);
    const void* hc = static_cast<const char*>(h) + static_cast<size_t>(r0 * d) * hsz;
    gemm_ex(ctx, CUBLAS_OP_T, CUBLAS_OP_N, V, n, d, p.weight, cdt, d, hc, cdt, d, 0.f, logits, MAMBA_DTYPE_F32, V);
    MAMBA_DISPATCH_DTYPE(cdt, TG, {
      softmax_grad_kernel<TG><<<static_cast<unsigned>(n), kSoftmaxThreads, 0, ctx->stream>>>(logits, static_cast<TG*>(glogits), V, dtargets + r0,
                                                                                          p.ignore_index, p.grad_scale, dloss + r0);
    });
    check_launch(ctx, "softmax_grad_kernel");
    gemm_ex(ctx, CUBLAS_OP_N, CUBLAS_OP_N, d, n, V, p.weight, cdt, d, glogits, cdt, V, 0.f, p.grad_hidden + r0 * d, MAMBA_DTYPE_F32, d);
    if (p.grad_weight)  // NULL: a frozen lm_head (LoRA)
      gemm_ex(ctx, CUBLAS_OP_N, CUBLAS_OP_T, d, V, n, hc, cdt, d, glogits, cdt, V, 1.f, p.grad_weight, MAMBA_DTYPE_F32, d);
  }
  std::vector<double> host(static_cast<size_t>(M));
  check_cuda(cudaMemcpyAsync(host.data(), dloss, static_cast<size_t>(M) * 8, cudaMemcpyDeviceToHost, ctx->stream), "cudaMemcpyAsync d2h");
  check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
  double sum = 0;
  for (int64_t m = 0; m < M; ++m)
    if (p.host_targets[m] != p.ignore_index) sum += host[static_cast<size_t>(m)];
  *p.loss_sum = sum;
  *p.count = counted;
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_linear_cross_entropy_bwd(mamba_context* ctx, const mamba_linear_cross_entropy_params* params) {
  auto shapes = [&] {
    const mamba_linear_cross_entropy_params* p = params;
    return params_ok(p) ? format("(hidden [%lld, %lld] %s, weight [%lld, %lld] %s)", (long long)p->rows, (long long)p->dim, dtype_name(p->hidden_dtype),
                                 (long long)p->vocab, (long long)p->dim, dtype_name(p->weight_dtype))
                        : std::string();
  };
  return guard("mamba_linear_cross_entropy_bwd", shapes, [&] { linear_cross_entropy_bwd(ctx, check_params(params, "mamba_linear_cross_entropy_params")); });
}
