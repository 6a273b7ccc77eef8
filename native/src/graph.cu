// CUDA graphs on the context's stream: capture a sequence of queued ops once (e.g. a whole greedy decode
// step), replay it with one launch. Thread-local capture mode: other threads of the process are unaffected.
// A replay is bracketed by the two small copies it needs (ids in, chosen ids out) and one synchronize, so
// a decode step costs one library call.
#include "common.cuh"

using namespace mamba;

extern "C" {

MAMBA_API mamba_status mamba_graph_begin_capture(mamba_context* ctx) {
  return guard("mamba_graph_begin_capture", [] { return std::string(); }, [&] {
    activate(ctx);
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    check_cuda(cudaStreamIsCapturing(ctx->stream, &status), "cudaStreamIsCapturing");
    require(status == cudaStreamCaptureStatusNone, "the stream is already capturing");
    check_cuda(cudaStreamBeginCapture(ctx->stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  });
}

MAMBA_API mamba_status mamba_graph_end_capture(mamba_context* ctx, mamba_graph** out) {
  return guard("mamba_graph_end_capture", [] { return std::string(); }, [&] {
    if (out) *out = nullptr;
    activate(ctx);
    cudaGraph_t graph = nullptr;
    cudaError_t err = cudaStreamEndCapture(ctx->stream, &graph);
    if (!out) {  // abort: drop whatever was captured
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      return;
    }
    if (err != cudaSuccess) {
      if (graph) cudaGraphDestroy(graph);
      check_cuda(err, "cudaStreamEndCapture");
    }
    require(graph != nullptr, "capture produced no graph (an op failed while capturing)");
    cudaGraphExec_t exec = nullptr;
    err = cudaGraphInstantiateWithFlags(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check_cuda(err, "cudaGraphInstantiate");
    auto* g = new (std::nothrow) mamba_graph();
    if (!g) {
      cudaGraphExecDestroy(exec);
      fail(MAMBA_ERR_OUT_OF_MEMORY, "host out of memory");
    }
    g->exec = exec;
    g->device = ctx->device;
    *out = g;
  });
}

MAMBA_API mamba_status mamba_graph_launch(mamba_context* ctx, mamba_graph* graph, const void* host_in, void* device_in, int64_t in_bytes,
                                          void* host_out, const void* device_out, int64_t out_bytes) {
  return guard("mamba_graph_launch", [&] { return format("(in %lld bytes, out %lld bytes)", (long long)in_bytes, (long long)out_bytes); }, [&] {
    activate(ctx);
    require(graph && graph->exec, "graph is null");
    require(graph->device == ctx->device, "graph belongs to another device");
    require(in_bytes >= 0 && out_bytes >= 0, "negative size");
    require(in_bytes == 0 || (host_in && device_in), "null input pointer");
    require(out_bytes == 0 || (host_out && device_out), "null output pointer");
    // Pageable host memory: the runtime stages host_in before the call returns, so the caller may reuse it.
    if (in_bytes)
      check_cuda(cudaMemcpyAsync(device_in, host_in, static_cast<size_t>(in_bytes), cudaMemcpyHostToDevice, ctx->stream), "cudaMemcpyAsync h2d");
    check_cuda(cudaGraphLaunch(graph->exec, ctx->stream), "cudaGraphLaunch");
    if (out_bytes)
      check_cuda(cudaMemcpyAsync(host_out, device_out, static_cast<size_t>(out_bytes), cudaMemcpyDeviceToHost, ctx->stream), "cudaMemcpyAsync d2h");
    check_cuda(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
  });
}

MAMBA_API mamba_status mamba_graph_destroy(mamba_context* ctx, mamba_graph* graph) {
  return guard("mamba_graph_destroy", [] { return std::string(); }, [&] {
    if (!graph) return;
    if (ctx) {
      cudaSetDevice(ctx->device);
      if (ctx->stream) cudaStreamSynchronize(ctx->stream);  // a replay may still be running
    }
    if (graph->exec) cudaGraphExecDestroy(graph->exec);
    cudaGetLastError();
    delete graph;
  });
}

}  // extern "C"
