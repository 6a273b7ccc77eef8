// y [M, N] = x [M, K] · w[N, K]ᵀ (+ bias) through cuBLAS GemmEx with fp32 accumulation.
// Row-major y = x·wᵀ is column-major yᵀ = w·xᵀ: gemm(T, N, n, m, k, w (ld k), x (ld k), y (ld n)).
// fp32: CUBLAS_COMPUTE_32F with CUBLAS_DEFAULT_MATH (the context never enables TF32).
// A bias is broadcast into y first and the GEMM runs with beta = 1, so y is rounded once.
// F32 x with 16-bit w: x is rounded to w's dtype and the 16-bit GEMM runs (F32 or 16-bit y).
// m = 1 row (a batch-1 decode step; up to tuning.gemv_max_rows <= 8 rows with MAMBA_GEMV_MAX_ROWS — measured slower
// than cuBLAS at 8 rows, where x is re-read with scalar loads) takes a GEMV kernel instead of cuBLAS: one warp per
// output column reads its weight row with 16-byte loads, every lane accumulates all m rows in fp32 (x rounded to w's
// dtype on the fly), a butterfly sum over the warp, + bias, one rounding (blocks/linear.cuh, shared with the fused
// decode step). No workspace, so it is graph-capturable. MAMBA_LEGACY_KERNELS=1 keeps cuBLAS for every shape.
#include "common.cuh"
#include "blocks/linear.cuh"

namespace mamba {

cudaDataType_t cuda_type(mamba_dtype dt) {
  switch (dt) {
    case MAMBA_DTYPE_BF16: return CUDA_R_16BF;
    case MAMBA_DTYPE_F16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

template <class TY>
__global__ void bias_broadcast_kernel(TY* __restrict__ y, const void* __restrict__ bias, mamba_dtype bdt, int64_t m, int64_t n) {
  int64_t total = m * n;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_f<TY>(load_any(bias, bdt, i % n));
}

// Used by linear and by the scan's dt_proj.
void gemm_ex(mamba_context* ctx, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const void* a,
             mamba_dtype adt, int64_t lda, const void* b, mamba_dtype bdt, int64_t ldb, float beta, void* c, mamba_dtype cdt,
             int64_t ldc) {
  require(m <= 2147483647LL && n <= 2147483647LL && k <= 2147483647LL, "GEMM dimension exceeds int32");
  const float alpha = 1.f;
  check_cublas(cublasGemmEx(ctx->cublas, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), &alpha, a, cuda_type(adt),
                            static_cast<int>(lda), b, cuda_type(bdt), static_cast<int>(ldb), &beta, c, cuda_type(cdt), static_cast<int>(ldc),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

constexpr int kGemvThreads = tuning::gemv_warps * 32;

template <class TW, class TX, class TY, int M>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const TX* __restrict__ x, const TW* __restrict__ w, const void* __restrict__ bias,
                                                   mamba_dtype bdt, TY* __restrict__ y, int m, int n, int k, bool vec) {
  const int col = blockIdx.x * tuning::gemv_warps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (col >= n) return;  // whole warps only
  const TW* __restrict__ wr = w + (size_t)col * k;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.f;
  if (vec) {
    constexpr int V = chunk_elems<TW>();
#pragma unroll 2
    for (int base = lane * V; base < k; base += 32 * V) {
      float wv[V];
      unpack16<TW>(__ldg(reinterpret_cast<const uint4*>(wr + base)), wv);
      fma_chunk_rows<TW, M>(wv, [&](int r, int i) { return round_to<TW>(to_f<TX>(x[(size_t)r * k + base + i])); }, m, acc);
    }
  } else {
    for (int j = lane; j < k; j += 32) {
      const float wf = to_f<TW>(wr[j]);
#pragma unroll
      for (int r = 0; r < M; ++r)
        if (r < m) acc[r] = fmaf(wf, round_to<TW>(to_f<TX>(x[(size_t)r * k + j])), acc[r]);
    }
  }
  warp_sum_each<M>(acc);
  if (lane == 0) {
    const float bv = bias ? load_any(bias, bdt, col) : 0.f;
#pragma unroll
    for (int r = 0; r < M; ++r)
      if (r < m) y[(size_t)r * n + col] = from_f<TY>(gemv_output(acc[r], bv));
  }
}

template <class TW, class TX, class TY>
void launch_gemv(mamba_context* ctx, const void* x, const void* w, const void* bias, mamba_dtype bdt, void* y, int m, int n, int k) {
  const bool vec = chunked_rows_ok<TW>(w, k);
  const unsigned blocks = static_cast<unsigned>((n + tuning::gemv_warps - 1) / tuning::gemv_warps);
  auto* xp = static_cast<const TX*>(x);
  auto* wp = static_cast<const TW*>(w);
  auto* yp = static_cast<TY*>(y);
  if (m == 1) gemv_kernel<TW, TX, TY, 1><<<blocks, kGemvThreads, 0, ctx->stream>>>(xp, wp, bias, bdt, yp, m, n, k, vec);
  else gemv_kernel<TW, TX, TY, tuning::gemv_rows_max><<<blocks, kGemvThreads, 0, ctx->stream>>>(xp, wp, bias, bdt, yp, m, n, k, vec);
  check_launch(ctx, "gemv_kernel");
}

// y (ydt, = wdt or F32) = x (xdt, = wdt or F32) · wᵀ + bias for m <= tuning.gemv_max_rows. Returns false when the
// combination is not covered.
bool try_gemv(mamba_context* ctx, const void* x, mamba_dtype xdt, const void* w, mamba_dtype wdt, const void* bias, mamba_dtype bdt,
              void* y, mamba_dtype ydt, int64_t m, int64_t n, int64_t k) {
  if (ctx->tune.legacy_kernels || m > ctx->tune.gemv_max_rows || n > 2147483647LL || k > 2147483647LL) return false;
  if (!(xdt == wdt || xdt == MAMBA_DTYPE_F32) || !(ydt == wdt || ydt == MAMBA_DTYPE_F32)) return false;
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  const bool xf = xdt == MAMBA_DTYPE_F32, yf = ydt == MAMBA_DTYPE_F32;
  MAMBA_DISPATCH_DTYPE(wdt, TW, {
    if (xf && yf) launch_gemv<TW, float, float>(ctx, x, w, bias, bdt, y, mi, ni, ki);
    else if (xf) launch_gemv<TW, float, TW>(ctx, x, w, bias, bdt, y, mi, ni, ki);
    else if (yf) launch_gemv<TW, TW, float>(ctx, x, w, bias, bdt, y, mi, ni, ki);
    else launch_gemv<TW, TW, TW>(ctx, x, w, bias, bdt, y, mi, ni, ki);
  });
  return true;
}

// y = x·wᵀ + bias: the GEMV kernel for a few rows, else cuBLAS (with the conversions an operand mix needs).
static void linear(mamba_context* ctx, const void* x, mamba_dtype xdt, const void* w, mamba_dtype wdt, const void* bias, mamba_dtype bdt,
                   void* y, mamba_dtype ydt, int64_t m, int64_t n, int64_t k) {
  activate(ctx);
  check_dtype(xdt, "x_dtype");
  check_dtype(wdt, "w_dtype");
  check_dtype(ydt, "y_dtype");
  if (bias) check_dtype(bdt, "bias_dtype");
  require(m >= 0 && n > 0 && k > 0, "bad shape");
  if (!m) return;
  require(x && w && y, "null pointer");
  if (try_gemv(ctx, x, xdt, w, wdt, bias, bdt, y, ydt, m, n, k)) return;
  mamba_dtype cdt = xdt;
  const void* xa = x;
  const void* wa = w;
  if (xdt == MAMBA_DTYPE_F32 && wdt != MAMBA_DTYPE_F32) {
    // F32 activations on 16-bit weights (the lm_head on the F32 norm_f output): round x to the weight dtype
    // (round to nearest even, the interface's contract) and run the 16-bit tensor-core GEMM; the weights are
    // never converted. Same launch_convert + gemm_ex as an explicit convert followed by a same-dtype linear.
    void* t = workspace(ctx, kWsConvertA, static_cast<size_t>(m * k) * dtype_size(wdt));
    launch_convert(ctx, x, xdt, t, wdt, m * k);
    xa = t;
    cdt = wdt;
  } else if (xdt != wdt) {
    // Other operand mixes: compute in fp32 on converted copies (slow path).
    cdt = MAMBA_DTYPE_F32;
    if (xdt != MAMBA_DTYPE_F32) {
      void* t = workspace(ctx, kWsConvertA, static_cast<size_t>(m * k) * 4);
      launch_convert(ctx, x, xdt, t, MAMBA_DTYPE_F32, m * k);
      xa = t;
    }
    if (wdt != MAMBA_DTYPE_F32) {
      void* t = workspace(ctx, kWsConvertB, static_cast<size_t>(n * k) * 4);
      launch_convert(ctx, w, wdt, t, MAMBA_DTYPE_F32, n * k);
      wa = t;
    }
  }
  // cuBLAS needs C of the operand type or F32 (for 16-bit operands); F32 operands need F32 C.
  void* yc = y;
  bool convert_back = false;
  if (!(ydt == cdt || ydt == MAMBA_DTYPE_F32)) {
    yc = workspace(ctx, kWsDelta, static_cast<size_t>(m * n) * 4);
    convert_back = true;
  }
  mamba_dtype ycdt = convert_back ? MAMBA_DTYPE_F32 : ydt;
  float beta = 0.f;
  if (bias) {
    unsigned blocks = blocks_for(m * n, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    MAMBA_DISPATCH_DTYPE(ycdt, TY, { bias_broadcast_kernel<TY><<<blocks, 256, 0, ctx->stream>>>(static_cast<TY*>(yc), bias, bdt, m, n); });
    check_launch(ctx, "bias_broadcast_kernel");
    beta = 1.f;
  }
  gemm_ex(ctx, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, wa, cdt, k, xa, cdt, k, beta, yc, ycdt, n);
  if (convert_back) launch_convert(ctx, yc, MAMBA_DTYPE_F32, y, ydt, m * n);
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_linear(mamba_context* ctx, const mamba_linear_params* params) {
  auto shapes = [&] {
    const mamba_linear_params* p = params;
    return params_ok(p) ? format("(x [%lld, %lld] %s, w [%lld, %lld] %s, y %s)", (long long)p->m, (long long)p->k, dtype_name(p->x_dtype),
                                 (long long)p->n, (long long)p->k, dtype_name(p->w_dtype), dtype_name(p->y_dtype))
                        : std::string();
  };
  return guard("mamba_linear", shapes, [&] {
    const mamba_linear_params& p = check_params(params, "mamba_linear_params");
    linear(ctx, p.x, p.x_dtype, p.w, p.w_dtype, p.bias, p.bias_dtype, p.y, p.y_dtype, p.m, p.n, p.k);
  });
}
