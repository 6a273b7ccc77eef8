#!/usr/bin/env bash
# The one entry point of the build.
#   ./build.sh           build everything this machine can: the native CUDA library (when nvcc exists) and the .NET projects
#   ./build.sh test      build, then run the NUnit tests (extra arguments go to the test runner, e.g. --filter ...)
#   ./build.sh native    build only the native library
#   ./build.sh bench     build, then run the BenchmarkDotNet suite (arguments go to BenchmarkDotNet)
set -euo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
config=${CONFIGURATION:-Release}
command=${1:-build}
[ $# -gt 0 ] && shift

build_native() {
  if ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then
    echo "build.sh: nvcc not found: skipping the native CUDA library (the CPU backend still works)"
    return 0
  fi
  local host=()
  # CUDA 11.8 (Debian) needs g++-11 as the host compiler.
  if command -v g++-11 >/dev/null 2>&1 && nvcc --version 2>/dev/null | grep -q "release 11"; then host=(-DCMAKE_CUDA_HOST_COMPILER=g++-11); fi
  if [ ! -f CMakeLists.txt ] || ! grep -q "project" CMakeLists.txt; then
    echo "build.sh: no native project yet: skipping"
    return 0
  fi
  cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release "${host[@]}" ${MAMBA_CMAKE_ARGS:-}
  cmake --build build/native -j "$(nproc)"
}

build_managed() {
  dotnet build Mamba.sln -c "$config" -nologo -v quiet
}

case "$command" in
  build)  build_native; build_managed ;;
  native) build_native ;;
  test)
    build_native
    build_managed
    dotnet test --project tests/Mamba.Tests/Mamba.Tests.csproj -c "$config" --no-build "$@"
    ;;
  bench)
    build_managed
    dotnet run --project bench/Mamba.Bench -c Release --no-build -- "$@"
    ;;
  *) echo "usage: ./build.sh [build|test|native|bench] [args...]" >&2; exit 2 ;;
esac
