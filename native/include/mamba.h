/*
 * mamba.h — the one public header of libmamba (CUDA kernels for the Mamba-1 selective state-space LM).
 *
 * ABI rules
 *  - Every symbol starts with mamba_ / MAMBA_; only fixed-size types cross the boundary.
 *  - Every fallible function returns mamba_status (MAMBA_OK = 0). On failure, mamba_last_error()
 *    returns a thread-local, NUL-terminated message naming the op, the shapes and the CUDA/cuBLAS
 *    error string. The library owns that string; it stays valid until the next libmamba call on the
 *    same thread. Each entry point clears it on entry.
 *  - Nothing escapes: no C++ exception crosses an entry point, and the library never calls exit/abort.
 *  - Tensors are dense, row-major device pointers. "Activations" are token-major: a [B, L, C] tensor
 *    is B*L rows of C contiguous values. dtype arguments say how each pointer is stored; math is fp32.
 *  - All work is queued on the context's stream; functions that return host data (d2h copies, argmax,
 *    cross-entropy, download) synchronize that stream before returning.
 *  - A context is used by one thread at a time.
 *  - mamba_abi_version() must equal MAMBA_ABI_VERSION of the header the caller was built against.
 *  - Entries with many operands take one parameter struct (mamba_<op>_params). Its first field, struct_size, is
 *    sizeof(the struct) in the header the caller was built against; the library refuses a size it does not know
 *    (MAMBA_ERR_INVALID_ARGUMENT), so a caller built against another layout fails cleanly. Layouts are fixed:
 *    32-bit fields first, padded to a multiple of 8 bytes by `reserved` (must be 0), then 64-bit fields and
 *    pointers; nothing is padded implicitly. mamba_struct_layout() reports each struct's size and field offsets
 *    (binding tests). The backward entries of training will take the forward struct plus one of gradients.
 */
#ifndef MAMBA_H
#define MAMBA_H

#include <stdint.h>

#if defined(_WIN32)
#  if defined(MAMBA_BUILDING_LIBRARY)
#    define MAMBA_API __declspec(dllexport)
#  else
#    define MAMBA_API __declspec(dllimport)
#  endif
#else
#  define MAMBA_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define MAMBA_ABI_VERSION 10

/* Status codes (int32). */
typedef int32_t mamba_status;
#define MAMBA_OK                    0
#define MAMBA_ERR_INVALID_ARGUMENT  1  /* bad pointer, shape, dtype or value; nothing was queued */
#define MAMBA_ERR_OUT_OF_MEMORY     2  /* device (or host) allocation failed; the context is still usable */
#define MAMBA_ERR_CUDA              3  /* a CUDA runtime error (a sticky one leaves the context unusable) */
#define MAMBA_ERR_CUBLAS            4  /* a cuBLAS error */
#define MAMBA_ERR_NO_DEVICE         5  /* no CUDA device or driver, or the device id is out of range */
#define MAMBA_ERR_UNSUPPORTED       6  /* valid request this build cannot serve (dtype disabled, d_state > 256, ...) */
#define MAMBA_ERR_INTERNAL          7  /* unexpected failure inside the library */

/* Element types (int32); the values equal the managed Mamba.DType enum. */
typedef int32_t mamba_dtype;
#define MAMBA_DTYPE_F32  0
#define MAMBA_DTYPE_BF16 1
#define MAMBA_DTYPE_F16  2

/* Opaque context: device, stream, cuBLAS handle, workspaces and the tuning switches read at its creation. */
typedef struct mamba_context mamba_context;
/* Opaque instantiated CUDA graph (captured on a context's stream). */
typedef struct mamba_graph mamba_graph;

/* ---- library ------------------------------------------------------------------------------- */
MAMBA_API int32_t mamba_abi_version(void);
MAMBA_API const char* mamba_last_error(void);
MAMBA_API mamba_status mamba_get_device_count(int32_t* count);
/* Multi-line text: library and ABI version, compiled architectures, driver and runtime versions, one line per tuning
 * switch ("tuning MAMBA_...=value (default|from the environment; meaning)", as a context created now would read them)
 * and, if device >= 0, that device's name, compute capability and memory. Writes at most capacity bytes
 * (always NUL-terminated when capacity > 0); *length receives the full length without the NUL. */
MAMBA_API mamba_status mamba_describe(int32_t device, char* buffer, int64_t capacity, int64_t* length);
/* Layout of the parameter struct called `name` (e.g. "mamba_linear_params") as this library was built: *size = its
 * sizeof; offsets[i] and field_names[i] (static strings, either array may be NULL) for its first `capacity` fields
 * in declaration order; *count = the number of fields. An unknown name is MAMBA_ERR_INVALID_ARGUMENT. */
MAMBA_API mamba_status mamba_struct_layout(const char* name, int64_t* size, int64_t* offsets, const char** field_names, int32_t capacity,
                                           int32_t* count);
/* The name of the index-th parameter struct mamba_struct_layout knows (0, 1, ...), NULL past the last. */
MAMBA_API const char* mamba_struct_name(int32_t index);

/* ---- context --------------------------------------------------------------------------------- */
MAMBA_API mamba_status mamba_context_create(int32_t device, mamba_context** out);
MAMBA_API mamba_status mamba_context_destroy(mamba_context* ctx);  /* NULL is fine */
MAMBA_API mamba_status mamba_synchronize(mamba_context* ctx);
MAMBA_API mamba_status mamba_mem_info(mamba_context* ctx, int64_t* free_bytes, int64_t* total_bytes);

/* ---- testing hook ---------------------------------------------------------------------------------
 * Allocation fault injection, for tests of out-of-memory handling (not for production use). Every allocation the
 * library makes for a context (mamba_buffer_alloc, workspace growth, decode plans) goes through one path; armed, that
 * path lets `skip` more allocations of this context succeed and then fails the next `count` ones exactly as a real
 * cudaErrorMemoryAllocation fails: MAMBA_ERR_OUT_OF_MEMORY, nothing allocated, the context still usable, and a
 * mamba_last_error() message that says "injected". count = 0 disarms (skip is then ignored); a new call replaces the
 * previous arming. *injected_total (may be NULL) receives how many allocations of this context have failed by
 * injection so far, before this call. A NULL context or a negative skip/count is MAMBA_ERR_INVALID_ARGUMENT. Safe to
 * call from any thread. */
MAMBA_API mamba_status mamba_debug_inject_alloc_failures(mamba_context* ctx, int64_t skip, int64_t count, int64_t* injected_total);

/* Per-context tuning override, for tests and A/B benchmarks (not for production use): sets the integer tuning switch
 * `name` (its environment name, e.g. "MAMBA_SCAN_VARIANT"; the list is in mamba_describe) of this context to `value`,
 * parsed and clamped as the environment value would be, for the ops queued after the call (the environment is read
 * once, at context creation). mamba_describe keeps printing the environment's values. An unknown name or the string
 * switch MAMBA_DECODE_TRACE is MAMBA_ERR_INVALID_ARGUMENT. Not safe while another thread queues ops on the context. */
MAMBA_API mamba_status mamba_debug_set_tuning(mamba_context* ctx, const char* name, int64_t value);

/* ---- buffers --------------------------------------------------------------------------------- */
MAMBA_API mamba_status mamba_buffer_alloc(mamba_context* ctx, int64_t bytes, void** out);
MAMBA_API mamba_status mamba_buffer_free(mamba_context* ctx, void* ptr);  /* NULL is fine */
MAMBA_API mamba_status mamba_memset_zero(mamba_context* ctx, void* dst, int64_t bytes);
MAMBA_API mamba_status mamba_copy_h2d(mamba_context* ctx, void* dst, const void* host_src, int64_t bytes);
MAMBA_API mamba_status mamba_copy_d2h(mamba_context* ctx, void* host_dst, const void* src, int64_t bytes);
MAMBA_API mamba_status mamba_copy_d2d(mamba_context* ctx, void* dst, const void* src, int64_t bytes);
/* Host float32 -> device dst in dst_dtype (round to nearest even). The host buffer may be reused on return. */
MAMBA_API mamba_status mamba_upload_f32(mamba_context* ctx, const float* host_src, int64_t count, void* dst, mamba_dtype dst_dtype);
/* Device src in src_dtype -> host float32. */
MAMBA_API mamba_status mamba_download_f32(mamba_context* ctx, const void* src, mamba_dtype src_dtype, int64_t count, float* host_dst);
/* Device -> device dtype conversion (same pointer allowed only when the dtypes are equal). */
MAMBA_API mamba_status mamba_convert(mamba_context* ctx, const void* src, mamba_dtype src_dtype, void* dst, mamba_dtype dst_dtype, int64_t count);

/* ---- parameter structs (see the ABI rules at the top) ----------------------------------------- */

/* mamba_add_rmsnorm: residual [rows, dim] += delta (if delta != NULL); out = RMSNorm(residual) * weight, fp32 math,
 * one rounding. */
typedef struct mamba_add_rmsnorm_params {
  int32_t struct_size;          /* sizeof(mamba_add_rmsnorm_params) */
  mamba_dtype residual_dtype;
  mamba_dtype delta_dtype;      /* ignored without delta */
  mamba_dtype weight_dtype;
  mamba_dtype out_dtype;
  float epsilon;
  int64_t rows;
  int64_t dim;
  void* residual;               /* [rows, dim], updated in place when delta is given */
  const void* delta;            /* [rows, dim] or NULL */
  const void* weight;           /* [dim] */
  void* out;                    /* [rows, dim]; must not alias residual */
} mamba_add_rmsnorm_params;

/* mamba_linear: y [m, n] = x [m, k] * w [n, k]^T (+ bias [n]). */
typedef struct mamba_linear_params {
  int32_t struct_size;          /* sizeof(mamba_linear_params) */
  mamba_dtype x_dtype;
  mamba_dtype w_dtype;
  mamba_dtype bias_dtype;       /* ignored without bias */
  mamba_dtype y_dtype;
  int32_t reserved;             /* 0 */
  int64_t m, n, k;
  const void* x;
  const void* w;
  const void* bias;             /* or NULL */
  void* y;
} mamba_linear_params;

/* The causal depthwise conv of a Mamba block: mamba_causal_conv1d_fwd, _fwd_continue and _update. Shapes: B = batch,
 * L = length (1 for _update), E = channels, K = width. */
typedef struct mamba_causal_conv1d_params {
  int32_t struct_size;          /* sizeof(mamba_causal_conv1d_params) */
  mamba_dtype act_dtype;        /* xz and u */
  mamba_dtype weight_dtype;
  mamba_dtype bias_dtype;       /* ignored without bias */
  mamba_dtype state_dtype;      /* ignored without conv_state */
  int32_t batch, length, channels, width;
  int32_t reserved;             /* 0 */
  const void* xz;               /* [B, L, 2E]: the x half is convolved */
  const void* weight;           /* [E, K] */
  const void* bias;             /* [E] or NULL */
  const float* mask;            /* [B, L] f32 row mask or NULL (mamba_causal_conv1d_fwd only) */
  void* u;                      /* [B, L, E] output in act_dtype */
  void* conv_state;             /* [B, E, K] */
} mamba_causal_conv1d_params;

/* The selective scan of a Mamba block with dt_proj fused in front: mamba_selective_scan_fwd, _continue and
 * mamba_selective_state_update (length 1). delta = softplus(W_dt [E, R] * dbc[..., 0:R] + dt_bias [E]). */
typedef struct mamba_selective_scan_params {
  int32_t struct_size;          /* sizeof(mamba_selective_scan_params) */
  mamba_dtype act_dtype;        /* u, dbc, xz, y */
  mamba_dtype dt_weight_dtype;
  mamba_dtype dt_bias_dtype;
  int32_t batch, length, channels, d_state, dt_rank;  /* B, L, E, N, R */
  int32_t reserved;             /* 0 */
  const void* u;                /* [B, L, E] */
  const void* dbc;              /* [B, L, R + 2N]: delta inputs, B, C */
  const void* xz;               /* [B, L, 2E]: the z half gates */
  void* y;                      /* [B, L, E] */
  const void* dt_weight;        /* [E, R] */
  const void* dt_bias;          /* [E] */
  const float* A;               /* [E, N] f32 (= -exp(A_log)) */
  const float* D;               /* [E] f32 or NULL */
  float* state;                 /* [B, E, N] f32 (see each entry) */
  float* checkpoints;           /* NULL, or [B, ceil(L / MAMBA_SCAN_CHECKPOINT_INTERVAL), E, N] f32: the state before
                                   steps 0, 16, 32, ... . mamba_selective_scan_fwd writes them; mamba_selective_scan_bwd
                                   reads them (NULL: it runs the forward itself first); the other entries require NULL. */
} mamba_selective_scan_params;

/* Steps between two saved scan states (mamba_selective_scan_params.checkpoints). */
#define MAMBA_SCAN_CHECKPOINT_INTERVAL 16


/* ---- training (backward) parameter structs: an entry takes the forward struct plus one of these ---------------- */

/* mamba_add_rmsnorm_bwd, with the forward struct's residual as the input x [rows, dim] (after the add), its weight and
 * epsilon (delta and out are ignored). grad_input [rows, dim] f32 += g x; grad_weight [dim] f32 += sum_rows g y * x * r. */
typedef struct mamba_add_rmsnorm_grads {
  int32_t struct_size;          /* sizeof(mamba_add_rmsnorm_grads) */
  mamba_dtype grad_out_dtype;
  const void* grad_out;         /* [rows, dim] */
  float* grad_input;            /* [rows, dim] f32, accumulated */
  float* grad_weight;           /* [dim] f32, accumulated */
} mamba_add_rmsnorm_grads;

/* mamba_linear_bwd, with the forward struct's x, w, m, n, k (bias and y are ignored; bias_dtype too). grad_y is
 * rounded to w's dtype first (as the forward rounds an f32 x); grad_x = grad_y * w (overwritten, or added to when
 * accumulate_grad_x != 0; NULL: not computed); grad_w [n, k] f32 += grad_y^T * x (NULL: not computed,
 * a frozen weight); grad_bias [n] f32 (or NULL)
 * += sum_rows grad_y (fixed-order reduction). */
typedef struct mamba_linear_grads {
  int32_t struct_size;          /* sizeof(mamba_linear_grads) */
  mamba_dtype grad_y_dtype;
  mamba_dtype grad_x_dtype;     /* ignored without grad_x */
  int32_t accumulate_grad_x;    /* 0: overwrite grad_x, 1: add to it */
  const void* grad_y;           /* [m, n] */
  void* grad_x;                 /* [m, k] or NULL */
  float* grad_w;                /* [n, k] f32, accumulated */
  float* grad_bias;             /* [n] f32, accumulated, or NULL */
} mamba_linear_grads;

/* mamba_causal_conv1d_bwd, with the forward struct's xz, weight, bias (NULL: no conv bias), mask and shapes (u and
 * conv_state are ignored; no history: the sequence form from zero). Writes the x half of grad_xz (columns 0..E-1),
 * grad_weight [E, K] f32 += ..., grad_bias [E] f32 += ... (when not NULL). */
typedef struct mamba_causal_conv1d_grads {
  int32_t struct_size;          /* sizeof(mamba_causal_conv1d_grads) */
  mamba_dtype grad_u_dtype;
  mamba_dtype grad_xz_dtype;
  int32_t reserved;             /* 0 */
  const void* grad_u;           /* [B, L, E] */
  void* grad_xz;                /* [B, L, 2E]: x half written, z half untouched */
  float* grad_weight;           /* [E, K] f32, accumulated */
  float* grad_bias;             /* [E] f32, accumulated, or NULL */
} mamba_causal_conv1d_grads;

/* mamba_selective_scan_bwd, with the forward struct's inputs (u, dbc, xz, dt_weight, dt_bias, A, D; y and state are
 * ignored; from a zero state). Writes grad_u, grad_dbc (all R + 2N columns) and the z half of grad_xz (columns
 * E..2E-1); adds the parameter gradients (f32): grad_dt_weight [E, R], grad_dt_bias [E], grad_A_log [E, N]
 * (= g A * A) and grad_D [E] (may be NULL when D is NULL). */
typedef struct mamba_selective_scan_grads {
  int32_t struct_size;          /* sizeof(mamba_selective_scan_grads) */
  mamba_dtype grad_y_dtype;
  mamba_dtype grad_u_dtype;
  mamba_dtype grad_dbc_dtype;
  mamba_dtype grad_xz_dtype;
  int32_t reserved;             /* 0 */
  const void* grad_y;           /* [B, L, E] */
  void* grad_u;                 /* [B, L, E] */
  void* grad_dbc;               /* [B, L, R + 2N] */
  void* grad_xz;                /* [B, L, 2E] */
  float* grad_dt_weight;
  float* grad_dt_bias;
  float* grad_A_log;
  float* grad_D;
} mamba_selective_scan_grads;

/* mamba_linear_cross_entropy_bwd: the lm_head and the cross-entropy fused, in row chunks (the [rows, vocab] logits never
 * exist at once; an f32 chunk workspace of at most ~256 MB). hidden [rows, dim] (rounded to weight_dtype first),
 * weight [vocab, dim]; logits = hidden * weight^T in f32; g logits = (softmax - onehot(target)) * grad_scale, zero for
 * rows whose target is ignore_index, rounded to weight_dtype for the two GEMMs (f32 accumulation):
 * grad_hidden [rows, dim] f32 = g logits * weight (overwritten), grad_weight [vocab, dim] f32 += g logits^T * hidden
 * (NULL: not computed, a frozen lm_head).
 * *loss_sum (host) = sum over counted rows of -log softmax[target] (float64), *count (host) = their number. */
typedef struct mamba_linear_cross_entropy_params {
  int32_t struct_size;          /* sizeof(mamba_linear_cross_entropy_params) */
  mamba_dtype hidden_dtype;
  mamba_dtype weight_dtype;
  int32_t ignore_index;
  float grad_scale;
  int32_t reserved;             /* 0 */
  int64_t rows, vocab, dim;
  const void* hidden;           /* [rows, dim] */
  const void* weight;           /* [vocab, dim] */
  const int32_t* host_targets;  /* [rows], host memory */
  float* grad_hidden;           /* [rows, dim] f32 */
  float* grad_weight;           /* [vocab, dim] f32, accumulated, or NULL */
  double* loss_sum;             /* host */
  int64_t* count;               /* host */
} mamba_linear_cross_entropy_params;

/* mamba_adamw_step: one AdamW update (torch.optim.AdamW semantics): g = grad_scale * grad; m = beta1 m + (1 - beta1) g;
 * v = beta2 v + (1 - beta2) g^2; master -= lr * weight_decay * master; master -= lr * (m / bias_correction1) /
 * (sqrt(v / bias_correction2) + eps). Then, if param is not NULL, param = -exp(master) when neg_exp != 0, else master
 * rounded to param_dtype. All f32 except param. */
typedef struct mamba_adamw_params {
  int32_t struct_size;          /* sizeof(mamba_adamw_params) */
  mamba_dtype param_dtype;      /* ignored without param */
  int32_t neg_exp;
  float lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2, grad_scale;
  int32_t reserved;             /* 0 */
  int64_t count;
  float* master;
  const float* grad;
  float* m;
  float* v;
  void* param;                  /* or NULL */
} mamba_adamw_params;

/* ---- ops ------------------------------------------------------------------------------------- */
/* out[m, :] = table[ids[m], :]; table [vocab, dim]; ids are host int32, checked against [0, vocab). */
MAMBA_API mamba_status mamba_embedding(mamba_context* ctx, const void* table, mamba_dtype table_dtype, int64_t vocab, int64_t dim,
                                       const int32_t* host_ids, int64_t count, void* out, mamba_dtype out_dtype);

/* Like mamba_embedding, but ids are a device int32 [count] buffer, read when the work runs; the caller
 * guarantees they lie in [0, vocab). Nothing is synchronized (graph-capturable). */
MAMBA_API mamba_status mamba_embedding_device_ids(mamba_context* ctx, const void* table, mamba_dtype table_dtype, int64_t vocab, int64_t dim,
                                                  const int32_t* device_ids, int64_t count, void* out, mamba_dtype out_dtype);

/* Fused residual add + RMSNorm (mamba_add_rmsnorm_params). */
MAMBA_API mamba_status mamba_add_rmsnorm(mamba_context* ctx, const mamba_add_rmsnorm_params* params);

/* x[m, :] *= mask[m]; mask is device float32 [rows]. */
MAMBA_API mamba_status mamba_mask_rows(mamba_context* ctx, void* x, mamba_dtype dtype, const float* mask, int64_t rows, int64_t cols);

/* y = alpha * x + beta * y elementwise over count values (math in f32, one rounding into y); beta = 0 does not read y;
 * x may alias y. */
MAMBA_API mamba_status mamba_scale_add(mamba_context* ctx, const void* x, mamba_dtype x_dtype, float alpha, void* y, mamba_dtype y_dtype,
                                       float beta, int64_t count);

/* y = x * w^T (+ bias) through cuBLAS with fp32 accumulation (fp32: TF32 off); m = 1 takes a GEMV kernel.
 * x and w of the same dtype take the fast path; y may be that dtype or F32. */
MAMBA_API mamba_status mamba_linear(mamba_context* ctx, const mamba_linear_params* params);

/* Causal depthwise conv over the x half of xz (+bias, SiLU, then row mask if given): u in act_dtype. conv_state
 * (optional) receives the last K inputs (zero-padded). */
MAMBA_API mamba_status mamba_causal_conv1d_fwd(mamba_context* ctx, const mamba_causal_conv1d_params* params);

/* mamba_causal_conv1d_fwd continuing from conv_state (required, no mask): the K-1 inputs before t = 0 are its
 * columns 1..K-1; afterwards it holds the last K inputs of [history, x] (also when L < K-1). L = 0 leaves it
 * unchanged. Chunked prefill: a long prompt runs as several calls with the same state. */
MAMBA_API mamba_status mamba_causal_conv1d_fwd_continue(mamba_context* ctx, const mamba_causal_conv1d_params* params);

/* One decode step (length 1, no mask): conv_state (required) shifts left and takes x (x half of xz [B, 2E]);
 * u [B, E] = SiLU(bias + sum_k w[e, k] * conv_state[e, k]). */
MAMBA_API mamba_status mamba_causal_conv1d_update(mamba_context* ctx, const mamba_causal_conv1d_params* params);

/* Selective scan from a zero state; state (optional) receives the final state. */
MAMBA_API mamba_status mamba_selective_scan_fwd(mamba_context* ctx, const mamba_selective_scan_params* params);

/* mamba_selective_scan_fwd starting from state (required) as s_{-1} instead of zero; the final state overwrites it
 * in place. L = 0 leaves it unchanged. */
MAMBA_API mamba_status mamba_selective_scan_continue(mamba_context* ctx, const mamba_selective_scan_params* params);

/* One decode step (length 1) from state (required), updated in place: u, y [B, E], dbc [B, R+2N], xz [B, 2E]. */
MAMBA_API mamba_status mamba_selective_state_update(mamba_context* ctx, const mamba_selective_scan_params* params);

/* result[m] (host int32) = the argmax of logits row m. The rule, shared by every path (these entries, the fused decode
 * step and the managed CPU backend): the index of the largest value; NaN never wins; ties go to the lowest index;
 * -inf is a value (an all -inf row gives 0); a row with no non-NaN value gives -1. */
MAMBA_API mamba_status mamba_argmax(mamba_context* ctx, const void* logits, mamba_dtype dtype, int64_t rows, int64_t cols, int32_t* host_result);

/* Like mamba_argmax, but result is a device int32 [rows] buffer; nothing is synchronized (graph-capturable). A -1
 * (a row of NaN) must not reach mamba_embedding_device_ids: the caller checks the ids it feeds back. */
MAMBA_API mamba_status mamba_argmax_device(mamba_context* ctx, const void* logits, mamba_dtype dtype, int64_t rows, int64_t cols, int32_t* device_result);

/* *loss_sum (host) = sum over rows with targets[m] != ignore_index of -log softmax(logits[m])[targets[m]]
 * (per-row fp32 softmax, float64 sum); *count = number of such rows. targets are host int32. */
MAMBA_API mamba_status mamba_cross_entropy_sum(mamba_context* ctx, const void* logits, mamba_dtype dtype, int64_t rows, int64_t cols,
                                               const int32_t* host_targets, int32_t ignore_index, double* loss_sum, int64_t* count);

/* ---- training (backward) ops ---------------------------------------------------------------------------------- */
/* grad_table[ids[m], :] += grad_out[m, :] (f32; host ids checked against [0, vocab)); f32 atomics, so the order of
 * additions into a row hit by several ids is not fixed. */
MAMBA_API mamba_status mamba_embedding_bwd(mamba_context* ctx, const int32_t* host_ids, int64_t count, const float* grad_out, int64_t vocab,
                                           int64_t dim, float* grad_table);
MAMBA_API mamba_status mamba_linear_cross_entropy_bwd(mamba_context* ctx, const mamba_linear_cross_entropy_params* params);
MAMBA_API mamba_status mamba_add_rmsnorm_bwd(mamba_context* ctx, const mamba_add_rmsnorm_params* params, const mamba_add_rmsnorm_grads* grads);
MAMBA_API mamba_status mamba_linear_bwd(mamba_context* ctx, const mamba_linear_params* params, const mamba_linear_grads* grads);
MAMBA_API mamba_status mamba_causal_conv1d_bwd(mamba_context* ctx, const mamba_causal_conv1d_params* params, const mamba_causal_conv1d_grads* grads);
MAMBA_API mamba_status mamba_selective_scan_bwd(mamba_context* ctx, const mamba_selective_scan_params* params, const mamba_selective_scan_grads* grads);
/* *host_result = sum of x[i]^2 over count f32 values, in float64 with a fixed reduction order (synchronizes). */
MAMBA_API mamba_status mamba_sum_of_squares(mamba_context* ctx, const float* x, int64_t count, double* host_result);
MAMBA_API mamba_status mamba_adamw_step(mamba_context* ctx, const mamba_adamw_params* params);

/* ---- CUDA graphs -------------------------------------------------------------------------------
 * begin_capture starts capturing the context's stream (thread-local mode): the ops queued afterwards are
 * recorded, not run. Only ops that neither synchronize nor copy host memory may be captured (linear on
 * same-dtype operands, add_rmsnorm, conv/state updates, convert, embedding_device_ids, argmax_device,
 * memset, copy_d2d); a context workspace that would have to grow fails with MAMBA_ERR_UNSUPPORTED.
 * end_capture instantiates the graph into *out; with out == NULL it discards the capture (use it to abort
 * after a failed op). graph_launch copies in_bytes from host_in to device_in, replays the graph, copies
 * out_bytes from device_out to host_out and synchronizes (in/out copies are skipped when their size is 0).
 * The graph bakes in every device address it touched: they must stay allocated while it lives. */
MAMBA_API mamba_status mamba_graph_begin_capture(mamba_context* ctx);
MAMBA_API mamba_status mamba_graph_end_capture(mamba_context* ctx, mamba_graph** out);
MAMBA_API mamba_status mamba_graph_launch(mamba_context* ctx, mamba_graph* graph, const void* host_in, void* device_in, int64_t in_bytes,
                                          void* host_out, const void* device_out, int64_t out_bytes);
MAMBA_API mamba_status mamba_graph_destroy(mamba_context* ctx, mamba_graph* graph);  /* NULL is fine */

/* ---- Fused greedy decode step (batch 1) -----------------------------------------------------------
 * One persistent cooperative kernel runs a whole greedy decode step of one sequence: embedding, every layer
 * (add + RMSNorm, in_proj, conv update, x_proj, dt_proj + state update, out_proj), norm_f, lm_head, argmax.
 * It gives the same bits as the same ops queued one by one (mamba_add_rmsnorm, mamba_linear with m = 1,
 * mamba_causal_conv1d_update, mamba_selective_state_update, mamba_argmax_device) and updates the conv and
 * ssm states in place. Weights: `dtype` for the matrices (embedding, in/x/dt/out_proj, lm_head [vocab, hidden])
 * and the activations; F32 for every vector (norm weights, norm_f, biases, conv weight [E, K] and bias, dt
 * bias, A = -exp(A_log) [E, N], D). States: conv [E, K] in conv_state_dtype, ssm [E, N] F32. Optional pointers
 * (in/out_proj bias, conv bias, D) may be NULL. d_state <= 32. The plan keeps the pointers (they must stay
 * allocated while it lives) and copies the layer table. Unsupported shapes or devices (no cooperative launch)
 * return MAMBA_ERR_UNSUPPORTED. */
typedef struct mamba_decode_plan mamba_decode_plan;
typedef struct mamba_decode_layer {
  int32_t struct_size;          /* sizeof(mamba_decode_layer), in every entry of the table */
  int32_t reserved;             /* 0 */
  const void* norm_weight;
  const void* in_proj_weight;
  const void* in_proj_bias;
  const void* conv_weight;
  const void* conv_bias;
  void* conv_state;
  const void* x_proj_weight;
  const void* dt_proj_weight;
  const void* dt_proj_bias;
  const float* A;
  const float* D;
  float* ssm_state;
  const void* out_proj_weight;
  const void* out_proj_bias;
} mamba_decode_layer;
typedef struct mamba_decode_model {
  int32_t struct_size;          /* sizeof(mamba_decode_model) */
  int32_t num_layers, hidden, inner, state, rank, conv_kernel, vocab;
  mamba_dtype dtype;
  mamba_dtype conv_state_dtype;
  float eps;
  int32_t reserved;             /* 0 */
  const void* embedding;
  const void* norm_f;
  const void* lm_head;
  const mamba_decode_layer* layers; /* host array of num_layers entries */
} mamba_decode_model;
MAMBA_API mamba_status mamba_decode_plan_create(mamba_context* ctx, const mamba_decode_model* model, mamba_decode_plan** out);
/* Runs one step for `token` (0 <= token < vocab) and writes the greedy next token (the mamba_argmax rule: -1 when every
 * logit is NaN); synchronizes the stream. */
MAMBA_API mamba_status mamba_decode_plan_step(mamba_context* ctx, mamba_decode_plan* plan, int32_t token, int32_t* next_token);
MAMBA_API mamba_status mamba_decode_plan_destroy(mamba_context* ctx, mamba_decode_plan* plan); /* NULL is fine */

#ifdef __cplusplus
}
#endif
#endif /* MAMBA_H */
