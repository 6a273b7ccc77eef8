#!/usr/bin/env bash
# One GPU-host call: rebuild libmamba, GPU tests, check-reference (4 fixture models × f32/bf16), the scan/conv harness,
# ncu of the decode kernels at batch 64, `mamba bench` 130m bf16 at batch 1/8/64 (JSON lines in $out), and the fused
# batch-1 step's per-phase trace (MAMBA_DECODE_TRACE). Switches: SKIP_REFERENCE=1 (no check-reference/harness/ncu),
# SKIP_HARNESS=1 (check-reference only), SKIP_BENCH=1, TRACE=0 (no batch-1 decode trace), EXTRA=1 (graph batch 1, f32, 131072-token chunked prefill).
# Here:   ../shared/tools/gpu-pack.sh managed/Mamba.Cli/Mamba.Cli.csproj tests/Mamba.Tests/Mamba.Tests.csproj
# There:  bash bench/gpu/session_check.sh          (with .gpu carried; results also land in $OUT when it is set)
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/mamba-session-check}
mkdir -p "$out"
t0=$(date +%s)
cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DMAMBA_BUILD_BENCH=ON > "$out/build.log" 2>&1 &&
  cmake --build build/native -j"$(nproc)" >> "$out/build.log" 2>&1 || { grep -A5 "error" "$out/build.log" | head -30; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
export MAMBA_NATIVE_LIBRARY=$PWD/build/native/libmamba.so
bash .gpu/run.sh dotnet .gpu/app/Mamba.Tests/Mamba.Tests.dll --filter "TestCategory=Gpu" > "$out/tests.txt" 2>&1; echo "tests rc=$?"
grep -E "^failed|succeeded:|failed:|total:" "$out/tests.txt" | head -12
M="bash .gpu/run.sh dotnet .gpu/app/Mamba.Cli/mamba.dll"
if [ "${SKIP_REFERENCE:-0}" != 1 ]; then
  for m in small-long tiny tiny-bf16 tiny-untied-bias; do
    for d in f32 bf16; do echo "check-reference $m $d: $($M check-reference .gpu/fixtures/models/$m --device cuda --dtype $d 2>&1 | tail -1)"; done
  done
  if [ "${SKIP_HARNESS:-0}" != 1 ]; then
  build/native/mamba_bench 8 2048 1 2048 2>&1 | tee "$out/harness.txt" | grep -E "^time|failures"
  ncu --clock-control none --print-summary per-kernel --metrics gpu__time_duration.sum $M bench --config 130m --device cuda --dtype bf16 \
    --batch 64 --prompt-tokens 16 --new-tokens 4 --repeat 1 > "$out/ncu-b64.txt" 2>&1
  grep -v PROF "$out/ncu-b64.txt" | grep -A6 -E "state_update|argmax" | grep -E "^  [a-z]|duration" | cut -c1-140
  fi
fi
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  $M bench --config 130m --device cuda --dtype bf16 --batch 1,8,64 --prompt-tokens 2048 --new-tokens 128 --json > "$out/bench-bf16.jsonl" 2>&1
  cut -c1-330 "$out/bench-bf16.jsonl"
fi
if [ "${EXTRA:-0}" = 1 ]; then
  echo "graph b1:"; MAMBA_FUSED_DECODE=0 $M bench --config 130m --device cuda --dtype bf16 --batch 1 --prompt-tokens 2048 --new-tokens 128 2>&1 | tail -1
  echo "f32 (graph):"; $M bench --config 130m --device cuda --dtype f32 --batch 1,8 --prompt-tokens 2048 --new-tokens 128 2>&1 | tail -2
  echo "chunked:"; $M bench --config 130m --device cuda --dtype bf16 --batch 1 --prompt-tokens 131072 --chunk 2048 --new-tokens 8 --repeat 1 2>&1 | tail -1
fi
if [ "${TRACE:-1}" = 1 ]; then
  MAMBA_DECODE_TRACE="$out/decode-trace-b1.txt" $M bench --config 130m --device cuda --dtype bf16 --batch 1 \
    --prompt-tokens 64 --new-tokens 64 --repeat 1 2>&1 | tail -1 | cut -c1-80
  echo "decode trace:"; grep -E "^# (step|P|final|mark)" "$out/decode-trace-b1.txt"
fi
echo "done $(( $(date +%s) - t0 )) s"
