// Embedding backward (spec §12.1): grad_table[ids[m], :] += sum of grad_out[m, :] over the positions m holding that id
// (f32). Deterministic: the host groups the positions by id (counting order, positions ascending within an id), and
// one block per distinct id sums its rows in that order and adds the sum once, so repeated ids give the same bits run
// to run (f32 atomics would add them in no fixed order, and seeded training would not reproduce bit for bit).
#include <algorithm>
#include <vector>
#include "common.cuh"

namespace mamba {

// plan = [row ids of the distinct ids (U)] [segment starts (U + 1)] [positions grouped by id (count)].
__global__ void embedding_bwd_kernel(const int32_t* __restrict__ plan, int32_t distinct, const float* __restrict__ g, int64_t dim,
                                     float* __restrict__ table) {
  const int32_t u = blockIdx.x;
  const int32_t* starts = plan + distinct;
  const int32_t* positions = starts + distinct + 1;
  const int64_t row = plan[u];
  const int32_t begin = starts[u], end = starts[u + 1];
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    float sum = 0.f;
    for (int32_t i = begin; i < end; ++i) sum += g[static_cast<int64_t>(positions[i]) * dim + j];
    table[row * dim + j] += sum;
  }
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
    require(count <= 1000000000LL, "too many ids");
    for (int64_t m = 0; m < count; ++m)
      if (host_ids[m] < 0 || host_ids[m] >= vocab)
        fail(MAMBA_ERR_INVALID_ARGUMENT, format("id %d at position %lld is outside [0, %lld)", host_ids[m], (long long)m, (long long)vocab));
    // Group positions by id with a stable sort of the positions (ascending within an id).
    const auto n = static_cast<int32_t>(count);
    std::vector<int32_t> order(static_cast<size_t>(n));
    for (int32_t m = 0; m < n; ++m) order[static_cast<size_t>(m)] = m;
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return host_ids[a] < host_ids[b]; });
    std::vector<int32_t> rows, starts;
    for (int32_t i = 0; i < n; ++i)
      if (i == 0 || host_ids[order[static_cast<size_t>(i)]] != host_ids[order[static_cast<size_t>(i - 1)]]) {
        rows.push_back(host_ids[order[static_cast<size_t>(i)]]);
        starts.push_back(i);
      }
    starts.push_back(n);
    const auto distinct = static_cast<int32_t>(rows.size());
    std::vector<int32_t> plan;
    plan.reserve(rows.size() + starts.size() + order.size());
    plan.insert(plan.end(), rows.begin(), rows.end());
    plan.insert(plan.end(), starts.begin(), starts.end());
    plan.insert(plan.end(), order.begin(), order.end());
    auto* device_plan = static_cast<int32_t*>(workspace(ctx, kWsStaging, plan.size() * 4));
    // From pageable memory the copy has left `plan` when the call returns, so the vector may go out of scope.
    check_cuda(cudaMemcpyAsync(device_plan, plan.data(), plan.size() * 4, cudaMemcpyHostToDevice, ctx->stream), "cudaMemcpyAsync embedding plan");
    const int threads = dim >= 256 ? 256 : 128;
    embedding_bwd_kernel<<<static_cast<unsigned>(distinct), threads, 0, ctx->stream>>>(device_plan, distinct, grad_out, dim, grad_table);
    check_launch(ctx, "embedding_bwd_kernel");
  });
}
