# Build options of the native library.
option(MAMBA_DISABLE_BF16 "Build without bfloat16 kernels (faster compiles while iterating)" OFF)
option(MAMBA_DISABLE_F16 "Build without float16 kernels (faster compiles while iterating)" OFF)
option(MAMBA_SYNC_DEBUG "Synchronize after every kernel so that asynchronous faults name their op" OFF)
option(MAMBA_BUILD_BENCH "Build the native kernel benchmark bench/gpu/mamba_bench" OFF)
set(MAMBA_OUTPUT_DIR "" CACHE PATH "If set, libmamba.so is copied here after each build (e.g. .../runtimes/linux-x64/native)")
if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()
