#!/usr/bin/env bash
# Coverage-guided fuzzing of the file readers with SharpFuzz + AFL++ (Debian package afl++).
#   fuzz/run.sh [SECONDS per target, default 300] [target...]   targets: config generation_config tokenizer safetensors pytorch pytorch_pickle
#   FUZZ_EXECS=N fuzz/run.sh ...   also stops each target after about N executions (afl-fuzz -E), whichever comes first
# Builds fuzz/Mamba.Fuzz into fuzz/out/bin, instruments Mamba.Core.dll with the sharpfuzz tool, and runs afl-fuzz on
# each target for SECONDS with the seeds of fuzz/seeds/<target> (pytorch: made by fuzz/make_pytorch_seeds.py). Crashes
# (undocumented exceptions) and hangs land in fuzz/out/<target>/default/{crashes,hangs}; copy each into
# fuzz/findings/<target>/ once fixed: tests/Mamba.Tests replays them (MutationTests.FuzzFindingsStayFixed).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-300}"; shift || true
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(config generation_config tokenizer safetensors pytorch pytorch_pickle)

command -v afl-fuzz >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq afl++; }
export PATH="$PATH:$HOME/.dotnet/tools"
command -v sharpfuzz >/dev/null || dotnet tool install --global SharpFuzz.CommandLine --version 2.3.0

rm -rf out/bin
dotnet build Mamba.Fuzz/Mamba.Fuzz.csproj -c Release -nologo -v quiet -o out/bin
sharpfuzz out/bin/Mamba.Core.dll   # instruments the library in place (the harness and the BCL stay uninstrumented)

export AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
export DOTNET_TieredPGO=0
for target in "${TARGETS[@]}"; do
  seeds="seeds/$target"
  mkdir -p "out/$target"
  echo "== $target: $SECONDS_PER_TARGET s, seeds $seeds"
  afl-fuzz -V "$SECONDS_PER_TARGET" ${FUZZ_EXECS:+-E "$FUZZ_EXECS"} -i "$seeds" -o "out/$target" -t 10000 -m none -- dotnet out/bin/Mamba.Fuzz.dll "$target" > "out/$target.log" 2>&1 || true
  stats="out/$target/default/fuzzer_stats"
  if [ -f "$stats" ]; then
    grep -E '^(execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg|run_time)' "$stats" | tr -s ' ' | paste -sd' ' -
  else
    echo "afl-fuzz did not start; see fuzz/out/$target.log"; tail -20 "out/$target.log"
  fi
done
