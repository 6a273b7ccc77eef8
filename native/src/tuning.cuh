// Every tuning choice of the launchers in one struct, held by the context:
//  - the environment switches (A/B benchmarks, bisecting, diagnostics), read once when a context is created by
//    read_tuning() — the only getenv calls of the library (context.cu) — and printed by mamba_describe;
//  - the built-in launch shapes, compile-time constants. They were chosen for Mamba-130m (d 768, E 1536, N 16, R 48,
//    K 4, vocab 50280) on the H200; each says where its measurement is (sections of bench/RESULTS.md, named by
//    their heading) or that it was not measured on its own.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace mamba {

// The environment switches, in the order mamba_describe prints them (bit k of tuning::from_environment).
enum TuningKnob {
  kKnobLegacyKernels = 0,  // MAMBA_LEGACY_KERNELS
  kKnobGemvMaxRows,        // MAMBA_GEMV_MAX_ROWS
  kKnobScanChunks,         // MAMBA_SCAN_CHUNKS
  kKnobScanVec,            // MAMBA_SCAN_VEC
  kKnobDecodeGrid,         // MAMBA_DECODE_GRID
  kKnobDecodeTrace,        // MAMBA_DECODE_TRACE
  kKnobScanVariant,        // MAMBA_SCAN_VARIANT
  kKnobCount
};

struct tuning {
  // ---- environment switches (the defaults are the measured best) ----------------------------------------------
  // 1: the pre-ABI-3 kernels (warp-per-row add+RMSNorm, thread-per-channel state update, cuBLAS for every linear,
  // one channel a thread in the conv forward).
  bool legacy_kernels = false;
  // Rows (0..gemv_rows_max) that take gemv_kernel instead of cuBLAS: 1 (batch-1 decode), since at 8 rows, where
  // x is re-read with scalar loads, it measured slower than cuBLAS (linear.cu).
  int gemv_max_rows = 1;
  // Time chunks of a scan row: 0 = chosen from the grid (pick_chunks in selective_scan.cu), 1 = never split.
  int scan_chunks = 0;
  // false: the scan's phases 1/3 take one channel a thread instead of 4 (A/B runs).
  bool scan_vec = true;
  // Blocks of the fused decode step: 0 = decode_blocks_per_sm a multiprocessor (a diagnostic override).
  int decode_grid = 0;
  // File that receives the fused decode step's per-phase trace when its plan is destroyed (empty: no trace).
  std::string decode_trace;
  // Scan forward kernel of whole-sequence launches (selective_scan.cu): 0 = the lane map measured in RESULTS (a
  // channel's state groups on neighbouring lanes), 1 = the pair-broadcast lane map (neighbouring lanes hold
  // neighbouring channels of one state group, so B_t/C_t reach the warp as pair-uniform shared loads). Time-split
  // launches (small batches) always run variant 0. Not yet measured on a GPU.
  int scan_variant = 0;
  static constexpr int scan_variant_max = 1;
  // Bit k set: knob k (TuningKnob) came from the environment.
  uint32_t from_environment = 0;

  bool from_env(TuningKnob k) const { return (from_environment >> k) & 1u; }

  // ---- built-in shapes -------------------------------------------------------------------------------------------
  // add_rmsnorm: one block a row, about 3 elements a thread, 32..256 threads (d 768 → 256). A warp a row took
  // 12.6 µs for one decode row; RESULTS "H200, end of session (2026-11-28)" (add+RMSNorm ×25 ≈ 314 µs a step before).
  static constexpr int rmsnorm_elems_per_thread = 3;
  static constexpr int rmsnorm_max_threads = 256;

  // argmax: 1024 threads a row (256 took 80 µs for one 50280-wide row: RESULTS "H200, end of session (2026-11-28)",
  // argmax 81 µs) and 4 16-byte loads in flight a thread (64 × 50280 f32: 22.5 → 8.2 µs, RESULTS third session).
  static constexpr int argmax_threads = 1024;
  static constexpr int argmax_loads_in_flight = 4;

  // GEMV: the largest row count gemv_kernel is built for (the cap of MAMBA_GEMV_MAX_ROWS).
  static constexpr int gemv_rows_max = 8;
  // GEMV: output columns (warps) a 256-thread block; chosen for 130m on the H200, not measured against other widths
  // (768 → 3072 in 5.3 / 5.9 µs f32 / bf16: RESULTS "H200, 2026-12-02", BenchmarkDotNet table).
  static constexpr int gemv_warps = 8;

  // causal_conv1d_fwd: 128 threads, 32 time steps a thread; the 4-channel form keeps 16 rows of loads in flight.
  // 8 × 2048 bf16 / f32: 64 / 76 → 38 / 57 µs (RESULTS "H200, 2026-12-02"); the widths were not varied on their own.
  static constexpr int conv_threads = 128;
  static constexpr int conv_tile = 32;
  static constexpr int conv_vec_tile = 32;
  static constexpr int conv_vec_rows_in_flight = 16;
  // causal_conv1d_update: threads a block (one per channel); not measured against other sizes.
  static constexpr int conv_update_threads = 128;

  // selective scan: 128 threads a block (the (SPT, TPC, TT) table per d_state is in dispatch_scan). Time chunks
  // when the batch leaves SMs idle: about 3 blocks a multiprocessor, chunks of at least 64 steps, at most 64 chunks
  // (1 × 2048 bf16: 235 → 70 µs with 8 chunks, RESULTS "H200, 2026-12-02"; the three numbers were not varied).
  static constexpr int scan_threads = 128;
  static constexpr int scan_chunk_blocks_per_sm = 3;
  static constexpr int scan_min_chunk_steps = 64;
  static constexpr int scan_max_chunks = 64;

  // selective_state_update: 4 batch rows a thread, 256-thread blocks (130m batch 64: 20.3 → 18.1 µs a layer,
  // RESULTS "H200, 2026-12-02, second session").
  static constexpr int state_update_rows_per_thread = 4;
  static constexpr int state_update_threads = 256;

  // Fused decode step: 256 threads, one block a multiprocessor (half the grid: step 636 vs 472 µs; two a
  // multiprocessor measured slower: RESULTS "H200, 2026-12-02, third session" and "H200, 2026-12-02").
  static constexpr int decode_threads = 256;
  static constexpr int decode_blocks_per_sm = 1;
  // in_proj columns a warp computes side by side (2E = 3072 over ~1056 warps for 130m; "3 in_proj rows in flight",
  // RESULTS "H200, 2026-12-02": 0.624 → 0.500 ms/token with the other changes of that row).
  static constexpr int decode_in_proj_columns = 3;
  // 16-byte in_proj chunks a lane loads before the residual is ready (RESULTS third session, P1 9.53 → 6.47 µs with
  // the other early loads of that row).
  static constexpr int decode_in_proj_preload_chunks = 4;
  // norm weights a thread loads before the residual is ready: covers d <= 4 × 256 = 1024 (130m: 768), same source.
  static constexpr int decode_norm_weights_per_thread = 4;
  // W_dt entries a lane keeps in registers: covers R <= 4 G (130m: R 48, G 16), RESULTS third session (P3 3.81 → 3.36 µs).
  static constexpr int decode_dt_weights_per_lane = 4;
  // 16-byte chunks a lane requests at once in the E-long x_proj / out_proj rows: 6 × 16 B × 32 lanes = one whole
  // 1536-wide bf16 row (RESULTS third session: "whole rows requested at once").
  static constexpr int decode_row_chunks_in_flight = 6;
  // lm_head rows in flight a warp: 28.6 → 25.3 µs at 8 (RESULTS third session, trace).
  static constexpr int decode_head_rows = 8;
  // lm_head bytes pulled into L2 during the last layer (RESULTS third session, final phase 28.2 → 26.4 µs with the
  // 8 rows in flight).
  static constexpr size_t decode_head_prefetch_bytes = size_t(16) << 20;

  // Context: the fixed cuBLAS workspace (32 MiB, NVIDIA's recommendation for Hopper) and the largest piece, in
  // floats, that uploads and downloads with a dtype conversion stage at once (4 MiB: the grow-only staging slot
  // stays small; 130m bf16 after load 474 → 330 MiB, RESULTS "Memory (bf16, batch 1)").
  static constexpr size_t cublas_workspace_bytes = size_t(32) << 20;
  static constexpr int64_t staging_elements = int64_t{1} << 20;
};

// The switches as the environment sets them now (all getenv calls of the library; context.cu).
tuning read_tuning();
// One line a switch: name, value, and whether it came from the environment (mamba_describe).
std::string describe_tuning(const tuning& t);
// Sets the integer switch `name` (an environment name, e.g. "MAMBA_SCAN_VARIANT") of t to `value` with read_tuning's
// parsing and clamping (mamba_debug_set_tuning); false for an unknown name or a switch that is not an integer.
bool set_tuning(tuning& t, const char* name, int64_t value);

}  // namespace mamba
