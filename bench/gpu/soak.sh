#!/usr/bin/env bash
# Issue 17's GPU soak: `mamba soak` for 10 minutes on the bundled model (bf16), then the out-of-memory phase and 1,000
# load/generate/dispose cycles. The command limit on the GPU host is 10 minutes, so build first in an earlier call on the
# same warm machine (cmake -S . -B build/native ...) and run it as two calls:
#   SOAK_SECONDS=570 SOAK_OOM=false bash bench/gpu/soak.sh          # the mixed workload (~580 s with start-up)
#   SOAK_SECONDS=30 SOAK_OOM=true SOAK_CYCLES=1000 bash bench/gpu/soak.sh   # OOM injection, ballast, cycles (~2 min)
# Needs .gpu from bench/gpu/pack.sh (no --tests) and the default model: it is tracked (29 MB) and fits beside that .gpu
# (about 65 MB in all), or pass another folder that is on the machine with SOAK_MODEL.
set -o pipefail
export MAMBA_NATIVE_LIBRARY=$PWD/build/native/libmamba.so
M="bash .gpu/run.sh dotnet .gpu/app/Mamba.Cli/mamba.dll"
SECONDS_=${SOAK_SECONDS:-540}
CYCLES=${SOAK_CYCLES:-0}
OOM=${SOAK_OOM:-true}
$M soak --model "${SOAK_MODEL:-managed/Mamba.Cli/default-model}" --device cuda --dtype bf16 --seconds "$SECONDS_" --cycles "$CYCLES" --oom "$OOM" 2>&1 | tee -a "${OUT:-/tmp}/soak.txt"
