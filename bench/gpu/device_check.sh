#!/usr/bin/env bash
# One GPU-host call that rebuilds libmamba and re-checks this session's figures (bench/RESULTS.md, 2026-12-02):
# the CUDA tests, check-reference on the fixture models in f32 and bf16, and `mamba bench` on a random 130m model.
# Here:   ../shared/tools/gpu-pack.sh managed/Mamba.Cli/Mamba.Cli.csproj tests/Mamba.Tests/Mamba.Tests.csproj
# There:  bash bench/gpu/device_check.sh          (with .gpu carried; results also land in $OUT when it is set)
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/mamba-device-check}
mkdir -p "$out"
t0=$(date +%s)
cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DMAMBA_BUILD_BENCH=ON > "$out/build.log" 2>&1 &&
  cmake --build build/native -j"$(nproc)" >> "$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
export MAMBA_NATIVE_LIBRARY=$PWD/build/native/libmamba.so
build/native/mamba_bench 8 2048 1 2048 2>&1 | tee "$out/harness.txt" | grep -E "^time|FAIL|failures"
bash .gpu/run.sh dotnet .gpu/app/Mamba.Tests/Mamba.Tests.dll --filter "TestCategory=Gpu" > "$out/tests.txt" 2>&1; echo "tests rc=$?"
grep -E "^failed|succeeded:|failed:|total:" "$out/tests.txt" | head -10
M="bash .gpu/run.sh dotnet .gpu/app/Mamba.Cli/mamba.dll"
for m in small-long tiny tiny-bf16 tiny-untied-bias; do
  for d in f32 bf16; do echo "check-reference $m $d: $($M check-reference .gpu/fixtures/models/$m --device cuda --dtype $d 2>&1 | tail -1)"; done
done
$M bench --config 130m --device cuda --dtype bf16 --batch 1,8,64 --prompt-tokens 2048 --new-tokens 128 --json > "$out/bench-bf16.jsonl" 2>&1
cut -c1-330 "$out/bench-bf16.jsonl"
echo "graph b1:"; MAMBA_FUSED_DECODE=0 $M bench --config 130m --device cuda --dtype bf16 --batch 1 --prompt-tokens 2048 --new-tokens 128 2>&1 | tail -1
echo "f32 (graph) / fused:"; $M bench --config 130m --device cuda --dtype f32 --batch 1,8 --prompt-tokens 2048 --new-tokens 128 2>&1 | tail -2
MAMBA_FUSED_DECODE=1 $M bench --config 130m --device cuda --dtype f32 --batch 1 --prompt-tokens 2048 --new-tokens 128 2>&1 | tail -1
echo "chunked:"; $M bench --config 130m --device cuda --dtype bf16 --batch 1 --prompt-tokens 131072 --chunk 2048 --new-tokens 8 --repeat 1 2>&1 | tail -1
echo "all done $(( $(date +%s) - t0 )) s"
