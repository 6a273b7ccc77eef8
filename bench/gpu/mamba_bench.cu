// Native harness for libmamba: a quick self-check of the scan/conv against a host reference (with the environment's
// switches, then again with scan variant 1 and no time split), then CUDA-event timings (median of repeated launches)
// at the issue-6 shape B 8, E 1536, L 2048, N 16, R 48, and the scan forward's variants 0 and 1 side by side on one
// context (mamba_debug_set_tuning), with a bit-for-bit comparison of their outputs.
//   cmake -S . -B build/native -DMAMBA_BUILD_BENCH=ON && cmake --build build/native && build/native/mamba_bench [B L]...
#include <mamba.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#define CK(x)                                                                       \
  do {                                                                              \
    if ((x) != MAMBA_OK) {                                                          \
      std::fprintf(stderr, "%s failed: %s\n", #x, mamba_last_error());              \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

static mamba_context* g_ctx;

static void* dev_upload(const std::vector<float>& h, mamba_dtype dt) {
  void* p = nullptr;
  CK(mamba_buffer_alloc(g_ctx, (int64_t)h.size() * (dt == MAMBA_DTYPE_F32 ? 4 : 2), &p));
  CK(mamba_upload_f32(g_ctx, h.data(), (int64_t)h.size(), p, dt));
  return p;
}
static std::vector<float> dev_download(const void* p, mamba_dtype dt, size_t n) {
  std::vector<float> h(n);
  CK(mamba_download_f32(g_ctx, p, dt, (int64_t)n, h.data()));
  return h;
}
static std::vector<float> rnd(size_t n, float lo, float hi, std::mt19937& g) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
// The parameter struct of the scan entries for the buffers of one shape.
static mamba_selective_scan_params scan_params(const void* u, const void* dbc, const void* xz, void* y, mamba_dtype dt, const void* W,
                                               const void* bias, const void* A, const void* D, void* state, int B, int L, int E, int N, int R) {
  mamba_selective_scan_params p{};
  p.struct_size = sizeof p;
  p.act_dtype = p.dt_weight_dtype = p.dt_bias_dtype = dt;
  p.batch = B; p.length = L; p.channels = E; p.d_state = N; p.dt_rank = R;
  p.u = u; p.dbc = dbc; p.xz = xz; p.y = y; p.dt_weight = W; p.dt_bias = bias;
  p.A = static_cast<const float*>(A); p.D = static_cast<const float*>(D); p.state = static_cast<float*>(state);
  return p;
}

static double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }
static double silu(double x) { return x / (1 + std::exp(-x)); }

// Host reference of the fused scan (token-major), float64.
static void ref_scan(int B, int L, int E, int N, int R, const std::vector<float>& u, const std::vector<float>& dbc, const std::vector<float>& xz,
                     const std::vector<float>& W, const std::vector<float>& bias, const std::vector<float>& A, const std::vector<float>& D,
                     std::vector<float>& y, std::vector<float>& st) {
  int ld = R + 2 * N;
  y.assign((size_t)B * L * E, 0);
  st.assign((size_t)B * E * N, 0);
  for (int b = 0; b < B; ++b)
    for (int e = 0; e < E; ++e) {
      std::vector<double> s(N, 0.0);
      for (int t = 0; t < L; ++t) {
        size_t row = (size_t)b * L + t;
        double dr = 0;
        for (int r = 0; r < R; ++r) dr += (double)W[(size_t)e * R + r] * dbc[row * ld + r];
        double dl = softplus(dr + bias[e]);
        double uv = u[row * E + e], acc = 0;
        for (int n = 0; n < N; ++n) {
          s[n] = std::exp(dl * A[(size_t)e * N + n]) * s[n] + dl * dbc[row * ld + R + n] * uv;
          acc += s[n] * dbc[row * ld + R + N + n];
        }
        y[row * E + e] = (float)((acc + D[e] * uv) * silu(xz[row * 2 * E + E + e]));
      }
      for (int n = 0; n < N; ++n) st[((size_t)b * E + e) * N + n] = (float)s[n];
    }
}

static double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0, r = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, std::fabs((double)a[i] - b[i]));
    r = std::max(r, std::fabs((double)b[i]));
  }
  return r > 0 ? m / r : m;
}

static int self_check(const char* label) {
  std::mt19937 g(1);
  int fails = 0;
  struct S { int B, L, E, N, R; } shapes[] = {{2, 37, 40, 16, 5}, {1, 1, 9, 3, 2}, {3, 130, 33, 64, 7}, {2, 3, 17, 1, 1},
                                            {1, 1000, 64, 16, 4}, {2, 515, 96, 16, 6}, {1, 300, 1536, 16, 48}};
  for (auto sh : shapes) {
    for (mamba_dtype dt : {MAMBA_DTYPE_F32, MAMBA_DTYPE_BF16}) {
      int B = sh.B, L = sh.L, E = sh.E, N = sh.N, R = sh.R, ld = R + 2 * N;
      auto u = rnd((size_t)B * L * E, -1, 1, g), dbc = rnd((size_t)B * L * ld, -1, 1, g), xz = rnd((size_t)B * L * 2 * E, -2, 2, g);
      auto W = rnd((size_t)E * R, -0.5, 0.5, g), bias = rnd(E, -3, 0, g), A = rnd((size_t)E * N, -4, -0.1f, g), D = rnd(E, 0.5, 1.5, g);
      if (dt != MAMBA_DTYPE_F32) {  // round inputs the way the device stores them so the reference sees the same values
        for (auto* v : {&u, &dbc, &xz, &W, &bias}) {
          void* p = dev_upload(*v, dt);
          *v = dev_download(p, dt, v->size());
          CK(mamba_buffer_free(g_ctx, p));
        }
      }
      std::vector<float> yr, sr;
      ref_scan(B, L, E, N, R, u, dbc, xz, W, bias, A, D, yr, sr);
      void *du = dev_upload(u, dt), *ddbc = dev_upload(dbc, dt), *dxz = dev_upload(xz, dt), *dW = dev_upload(W, dt), *db = dev_upload(bias, dt);
      void *dA = dev_upload(A, MAMBA_DTYPE_F32), *dD = dev_upload(D, MAMBA_DTYPE_F32), *dy = nullptr, *ds = nullptr;
      CK(mamba_buffer_alloc(g_ctx, (int64_t)yr.size() * 4, &dy));
      CK(mamba_buffer_alloc(g_ctx, (int64_t)sr.size() * 4, &ds));
      const mamba_selective_scan_params sp = scan_params(du, ddbc, dxz, dy, dt, dW, db, dA, dD, ds, B, L, E, N, R);
      CK(mamba_selective_scan_fwd(g_ctx, &sp));
      double ey = rel_err(dev_download(dy, dt, yr.size()), yr), es = rel_err(dev_download(ds, MAMBA_DTYPE_F32, sr.size()), sr);
      double tol = dt == MAMBA_DTYPE_F32 ? 1e-5 : 3e-2;
      bool ok = ey <= tol && es <= tol;
      fails += !ok;
      std::printf("check scan (%s) B%d L%d E%d N%d R%d %s: y %.2e state %.2e %s\n", label, B, L, E, N, R, dt == MAMBA_DTYPE_F32 ? "f32" : "bf16", ey, es,
                  ok ? "ok" : "FAIL");
      for (void* p : {du, ddbc, dxz, dW, db, dA, dD, dy, ds}) CK(mamba_buffer_free(g_ctx, p));
    }
  }
  return fails;
}

// Times `inner` back-to-back launches between host-synchronised events; returns the median per launch (µs).
template <class F>
static float time_median(F&& f, int reps = 7, int inner = 10) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  f();
  CK(mamba_synchronize(g_ctx));
  std::vector<float> ts;
  for (int i = 0; i < reps; ++i) {
    CK(mamba_synchronize(g_ctx));
    cudaEventRecord(a, 0);
    cudaEventSynchronize(a);
    for (int k = 0; k < inner; ++k) f();
    CK(mamba_synchronize(g_ctx));
    cudaEventRecord(b, 0);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    ts.push_back(ms * 1000.f / inner);
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

int main(int argc, char** argv) {
  char desc[4096];
  int64_t n = 0;
  CK(mamba_describe(0, desc, sizeof desc, &n));
  std::printf("%s", desc);
  CK(mamba_context_create(0, &g_ctx));
  int fails = self_check("environment");
  {
    // Scan variant 1 on a second context, without time splitting so that every shape runs it.
    mamba_context* main_ctx = g_ctx;
    CK(mamba_context_create(0, &g_ctx));
    CK(mamba_debug_set_tuning(g_ctx, "MAMBA_SCAN_VARIANT", 1));
    CK(mamba_debug_set_tuning(g_ctx, "MAMBA_SCAN_CHUNKS", 1));
    fails += self_check("variant 1, no time split");
    CK(mamba_context_destroy(g_ctx));
    g_ctx = main_ctx;
  }
  // The context's stream is non-blocking, so the events sit on the legacy stream with host syncs around
  // a burst of launches; launch overhead is amortised over the burst.
  const int E = 1536, N = 16, R = 48, K = 4, ld = R + 2 * N;
  std::mt19937 g(7);
  // Shapes: argv pairs "B L" (default: the issue's 8 x 2048, then 1 x 2048).
  std::vector<std::pair<int, int>> shapes;
  for (int i = 1; i + 1 < argc; i += 2) shapes.push_back({std::atoi(argv[i]), std::atoi(argv[i + 1])});
  if (shapes.empty()) shapes = {{8, 2048}, {1, 2048}};
  for (auto shape : shapes)
  for (mamba_dtype dt : {MAMBA_DTYPE_F32, MAMBA_DTYPE_BF16}) {
    const int B = shape.first, L = shape.second;
    const char* nm = dt == MAMBA_DTYPE_F32 ? "f32" : "bf16";
    auto u = rnd((size_t)B * L * E, -1, 1, g), dbc = rnd((size_t)B * L * ld, -1, 1, g), xz = rnd((size_t)B * L * 2 * E, -1, 1, g);
    auto W = rnd((size_t)E * R, -0.1f, 0.1f, g), bias = rnd(E, -4, -2, g), A = rnd((size_t)E * N, -16, -1, g), D = rnd(E, 1, 1, g);
    auto cw = rnd((size_t)E * K, -0.5, 0.5, g), cb = rnd(E, -0.1f, 0.1f, g);
    void *du = dev_upload(u, dt), *ddbc = dev_upload(dbc, dt), *dxz = dev_upload(xz, dt), *dW = dev_upload(W, dt), *db = dev_upload(bias, dt);
    void *dA = dev_upload(A, MAMBA_DTYPE_F32), *dD = dev_upload(D, MAMBA_DTYPE_F32), *dcw = dev_upload(cw, dt), *dcb = dev_upload(cb, dt);
    void *dy = nullptr, *ds = nullptr, *dcs = nullptr, *dlin = nullptr;
    CK(mamba_buffer_alloc(g_ctx, (int64_t)u.size() * 4, &dy));
    CK(mamba_buffer_alloc(g_ctx, (int64_t)B * E * N * 4, &ds));
    CK(mamba_buffer_alloc(g_ctx, (int64_t)B * E * K * 4, &dcs));
    CK(mamba_buffer_alloc(g_ctx, (int64_t)u.size() * 4, &dlin));
    const mamba_selective_scan_params sp = scan_params(du, ddbc, dxz, dy, dt, dW, db, dA, dD, ds, B, L, E, N, R);
    float t_scan = time_median([&] { CK(mamba_selective_scan_fwd(g_ctx, &sp)); });
    // dt_proj alone (same GEMM shape and output dtype, contiguous δ̃ instead of a strided one): [BL, R]·[E, R]ᵀ
    mamba_linear_params lp{};
    lp.struct_size = sizeof lp;
    lp.x_dtype = lp.w_dtype = lp.bias_dtype = lp.y_dtype = dt;
    lp.m = (int64_t)B * L; lp.n = E; lp.k = R;
    lp.x = ddbc; lp.w = dW; lp.y = dlin;
    float t_gemm = time_median([&] { CK(mamba_linear(g_ctx, &lp)); });
    mamba_causal_conv1d_params cp{};
    cp.struct_size = sizeof cp;
    cp.act_dtype = cp.weight_dtype = cp.bias_dtype = cp.state_dtype = dt;
    cp.batch = B; cp.length = L; cp.channels = E; cp.width = K;
    cp.xz = dxz; cp.weight = dcw; cp.bias = dcb; cp.u = du;
    float t_conv = time_median([&] { CK(mamba_causal_conv1d_fwd(g_ctx, &cp)); });
    float t_sync = time_median([&] { CK(mamba_synchronize(g_ctx)); }, 7, 1);
    std::printf("time %s B%d E%d L%d N%d: scan+dt_proj %.1f us, dt_proj GEMM alone %.1f us, scan kernel ~%.1f us, conv1d+silu %.1f us (sync overhead %.1f us)\n",
                nm, B, E, L, N, t_scan, t_gemm, t_scan - t_gemm, t_conv, t_sync);
    // The scan forward's variants on this context (MAMBA_SCAN_CHUNKS as the environment sets it: a time-split launch
    // runs variant 0 whatever the variant), their outputs compared bit for bit.
    float t_var[2];
    std::vector<float> y_var[2], s_var[2];
    for (int v = 0; v < 2; ++v) {
      CK(mamba_debug_set_tuning(g_ctx, "MAMBA_SCAN_VARIANT", v));
      t_var[v] = time_median([&] { CK(mamba_selective_scan_fwd(g_ctx, &sp)); });
      y_var[v] = dev_download(dy, dt, u.size());
      s_var[v] = dev_download(ds, MAMBA_DTYPE_F32, (size_t)B * E * N);
    }
    const char* env_variant = std::getenv("MAMBA_SCAN_VARIANT");  // back to the environment's choice for the next shape
    CK(mamba_debug_set_tuning(g_ctx, "MAMBA_SCAN_VARIANT", env_variant && *env_variant ? std::atoi(env_variant) : 0));
    const bool same = std::memcmp(y_var[0].data(), y_var[1].data(), y_var[0].size() * 4) == 0 &&
                      std::memcmp(s_var[0].data(), s_var[1].data(), s_var[0].size() * 4) == 0;
    fails += !same;
    std::printf("scan variants %s B%d E%d L%d N%d: variant 0 %.1f us (kernel ~%.1f), variant 1 %.1f us (kernel ~%.1f), kernel ratio %.3f; "
                "outputs and final states %s\n",
                nm, B, E, L, N, t_var[0], t_var[0] - t_gemm, t_var[1], t_var[1] - t_gemm, (t_var[1] - t_gemm) / (t_var[0] - t_gemm),
                same ? "bit-identical" : "DIFFER (FAIL)");
    for (void* p : {du, ddbc, dxz, dW, db, dA, dD, dcw, dcb, dy, ds, dcs, dlin}) CK(mamba_buffer_free(g_ctx, p));
  }
  CK(mamba_context_destroy(g_ctx));
  std::printf("self-check failures: %d\n", fails);
  return fails ? 1 : 0;
}
