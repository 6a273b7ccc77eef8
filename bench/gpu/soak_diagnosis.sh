t0=$(date +%s); stamp() { echo "=== [$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name --format=csv,noheader
stamp build
cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 > /tmp/cmake.log 2>&1
cmake --build build/native -j16 2>&1 | grep -E "error" | head
export MAMBA_NATIVE_LIBRARY=$PWD/build/native/libmamba.so
M="bash .gpu/run.sh dotnet .gpu/app/Mamba.Cli/mamba.dll"
D=managed/Mamba.Cli/default-model
stamp "soak bf16, GEMV off (MAMBA_GEMV_MAX_ROWS=0)"
MAMBA_GEMV_MAX_ROWS=0 $M soak --model $D --device cuda --dtype bf16 --seconds 25 --oom false > $OUT/soak-bf16-gemv-off.txt 2>&1; grep -E "^soak|^batches|^memory|^mismatches|^PASS|^FAIL" $OUT/soak-bf16-gemv-off.txt
stamp "soak f32"
$M soak --model $D --device cuda --dtype f32 --seconds 25 --oom false > $OUT/soak-f32.txt 2>&1; grep -E "^soak|^batches|^memory|^mismatches|^PASS|^FAIL" $OUT/soak-f32.txt
stamp "soak bf16 ${LONG:-240} s"
$M soak --model $D --device cuda --dtype bf16 --seconds ${LONG:-240} --oom false > $OUT/soak-bf16.txt 2>&1; grep -E "^soak|^batches|^memory|^mismatches|^PASS|^FAIL" $OUT/soak-bf16.txt; grep -A3 "^mismatches" $OUT/soak-bf16.txt | cut -c1-400
stamp done
