// GEMV arithmetic shared by linear.cu's gemv_kernel and the fused decode step's GEMVs (decode_step.cu), so a column
// of y = x·wᵀ has the same bits on both: a lane takes 16-byte weight chunks lane-strided (chunk q at lane·V + q·32·V,
// V = 16 / sizeof(TW)), accumulates fmaf in index order, the warp adds the lanes by an xor butterfly, and the bias
// (0 without one, which also turns -0 into +0) is added before the one rounding. The fused step keeps its own
// chunk loops (rows preloaded before a grid barrier, several rows side by side) around these pieces.
#pragma once
#include "../device_math.cuh"

namespace mamba {

// Elements of TW in one 16-byte chunk.
template <class TW> constexpr int chunk_elems() { return 16 / static_cast<int>(sizeof(TW)); }

// Whether rows of k elements starting at w can be read in 16-byte chunks (else the kernels read element by element).
template <class TW> __host__ __device__ __forceinline__ bool chunked_rows_ok(const void* w, int k) {
  return k % chunk_elems<TW>() == 0 && (reinterpret_cast<uintptr_t>(w) & 15) == 0;
}

// 16 bytes of TW as floats.
template <class TW> __device__ __forceinline__ void unpack16(const uint4& raw, float (&v)[chunk_elems<TW>()]) {
  const TW* t = reinterpret_cast<const TW*>(&raw);
#pragma unroll
  for (int i = 0; i < chunk_elems<TW>(); ++i) v[i] = to_f<TW>(t[i]);
}

// acc[r] += w·x_r over one chunk for the rows r < m (at most M), fmaf in index order for each row; x(r, i) is
// element i of x_r's chunk. Rows interleave element by element (gemv_kernel's register budget at M = 8).
template <class TW, int M, class XAt>
__device__ __forceinline__ void fma_chunk_rows(const float (&wv)[chunk_elems<TW>()], XAt x, int m, float (&acc)[M]) {
#pragma unroll
  for (int i = 0; i < chunk_elems<TW>(); ++i)
#pragma unroll
    for (int r = 0; r < M; ++r)
      if (r < m) acc[r] = fmaf(wv[i], x(r, i), acc[r]);
}

// acc += w·x over one 16-byte weight chunk (one row).
template <class TW> __device__ __forceinline__ void fma_chunk(const uint4& w, const float (&xv)[chunk_elems<TW>()], float& acc) {
  float wv[chunk_elems<TW>()];
  unpack16<TW>(w, wv);
  float a[1] = {acc};
  fma_chunk_rows<TW, 1>(wv, [&](int, int i) { return xv[i]; }, 1, a);
  acc = a[0];
}

// The warp's total of each of C accumulators (independent butterflies).
template <int C> __device__ __forceinline__ void warp_sum_each(float (&acc)[C]) {
#pragma unroll
  for (int c = 0; c < C; ++c) acc[c] = warp_sum(acc[c]);
}

// A column's value before its rounding: the warp total plus the bias (0.f without one).
__device__ __forceinline__ float gemv_output(float total, float bias) { return total + bias; }

}  // namespace mamba
