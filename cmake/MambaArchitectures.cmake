# Default CUDA architectures, set before project() so that enable_language(CUDA) sees them.
#   80-real    A100-class machine code (sm_80)
#   90-real    Hopper machine code (sm_90: H100, H200)
#   90-virtual PTX for compute_90, so newer GPUs (Blackwell, ...) JIT-compile at load
# Override: -DCMAKE_CUDA_ARCHITECTURES=native (the local GPU only) or e.g. =90.
# mamba_describe() reports the list that was compiled in.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES "80-real;90-real;90-virtual" CACHE STRING "CUDA architectures to build for")
endif()
