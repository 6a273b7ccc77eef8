// Embedding gather: out[m, :] = table[ids[m], :]. Ids are validated on the host, then staged on the device;
// the _device_ids entry reads ids already on the device (validated by the caller; used inside CUDA graphs).
#include "common.cuh"

namespace mamba {

__global__ void embedding_kernel(const void* __restrict__ table, mamba_dtype tdt, const int32_t* __restrict__ ids, int64_t dim,
                                 void* __restrict__ out, mamba_dtype odt, int64_t count) {
  int64_t m = blockIdx.x;
  if (m >= count) return;
  int64_t row = ids[m];
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
    store_any(out, odt, m * dim + j, load_any(table, tdt, row * dim + j));
}

}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API mamba_status mamba_embedding(mamba_context* ctx, const void* table, mamba_dtype tdt, int64_t vocab, int64_t dim,
                                                  const int32_t* host_ids, int64_t count, void* out, mamba_dtype odt) {
  return guard("mamba_embedding", [&] { return format("(table [%lld, %lld] %s, %lld ids)", (long long)vocab, (long long)dim, dtype_name(tdt), (long long)count); }, [&] {
    activate(ctx);
    check_dtype(tdt, "table_dtype");
    check_dtype(odt, "out_dtype");
    require(vocab > 0 && dim > 0 && count >= 0, "bad shape");
    if (!count) return;
    require(table && host_ids && out, "null pointer");
    for (int64_t m = 0; m < count; ++m)
      if (host_ids[m] < 0 || host_ids[m] >= vocab)
        fail(MAMBA_ERR_INVALID_ARGUMENT, format("id %d at position %lld is outside [0, %lld)", host_ids[m], (long long)m, (long long)vocab));
    require(count <= 2147483647LL, "too many ids");
    auto* ids = static_cast<int32_t*>(workspace(ctx, kWsStaging, static_cast<size_t>(count) * 4));
    check_cuda(cudaMemcpyAsync(ids, host_ids, static_cast<size_t>(count) * 4, cudaMemcpyHostToDevice, ctx->stream), "cudaMemcpyAsync ids");
    int threads = dim >= 256 ? 256 : 128;
    embedding_kernel<<<static_cast<unsigned>(count), threads, 0, ctx->stream>>>(table, tdt, ids, dim, out, odt, count);
    check_launch(ctx, "embedding_kernel");
  });
}

extern "C" MAMBA_API mamba_status mamba_embedding_device_ids(mamba_context* ctx, const void* table, mamba_dtype tdt, int64_t vocab, int64_t dim,
                                                             const int32_t* device_ids, int64_t count, void* out, mamba_dtype odt) {
  return guard("mamba_embedding_device_ids", [&] { return format("(table [%lld, %lld] %s, %lld ids)", (long long)vocab, (long long)dim, dtype_name(tdt), (long long)count); }, [&] {
    activate(ctx);
    check_dtype(tdt, "table_dtype");
    check_dtype(odt, "out_dtype");
    require(vocab > 0 && dim > 0 && count >= 0, "bad shape");
    if (!count) return;
    require(table && device_ids && out, "null pointer");
    require(count <= 2147483647LL, "too many ids");
    int threads = dim >= 256 ? 256 : 128;  // as mamba_embedding: the same kernel and launch
    embedding_kernel<<<static_cast<unsigned>(count), threads, 0, ctx->stream>>>(table, tdt, device_ids, dim, out, odt, count);
    check_launch(ctx, "embedding_kernel");
  });
}
