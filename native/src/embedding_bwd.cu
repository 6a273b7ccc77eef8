// Embedding backward (spec §12.1): grad_table[ids[m], :] += grad_out[m, :] (f32). One block a row of grad_out; the
// scatter-add uses f32 atomics (rows hit by several ids get their additions in no fixed order: not bit-reproducible
// run to run when an id repeats; a sort-by-id segmented sum would be, if it ever matters).
#include "common.cuh"

namespace mamba {

__global__ void embedding_bwd_kernel(const int32_t* __restrict__ ids, const float* __restrict__ g, int64_t dim, float* __restrict__ table) {
  const int64_t m = blockIdx.x;
  const int64_t row = ids[m];
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) atomicAdd(table + row * dim + j, g[m * dim + j]);
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_embedding_bwd(mamba_context* ctx, const int32_t* host_ids, int64_t count, const float* grad_out, int64_t vocab,
                                                      int64_t dim, float* grad_table) {
  return guard("mamba_embedding_bwd", [&] { return format("(table [%lld, %lld], %lld ids)", (long long)vocab, (long long)dim, (long long)count); }, [&] {
    activate(ctx);
    require(vocab > 0 && dim > 0 && count >= 0, "bad shape");
    if (!count) return;
    require(host_ids && grad_out && grad_table, "null pointer");
    require(count <= 2147483647LL, "too many ids");
    for (int64_t m = 0; m < count; ++m)
      if (host_ids[m] < 0 || host_ids[m] >= vocab)
        fail(MAMBA_ERR_INVALID_ARGUMENT, format("id %d at position %lld is outside [0, %lld)", host_ids[m], (long long)m, (long long)vocab));
    auto* ids = static_cast<int32_t*>(workspace(ctx, kWsStaging, static_cast<size_t>(count) * 4));
    check_cuda(cudaMemcpyAsync(ids, host_ids, static_cast<size_t>(count) * 4, cudaMemcpyHostToDevice, ctx->stream), "cudaMemcpyAsync ids");
    const int threads = dim >= 256 ? 256 : 128;
    embedding_bwd_kernel<<<static_cast<unsigned>(count), threads, 0, ctx->stream>>>(ids, grad_out, dim, grad_table);
    check_launch(ctx, "embedding_bwd_kernel");
  });
}
