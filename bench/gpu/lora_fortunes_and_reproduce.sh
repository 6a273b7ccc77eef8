#!/usr/bin/env bash
# Run from the repository root on the GPU host after ../shared/tools/gpu-pack.sh (Mamba.Cli), with .gpu/data holding
# corpus.tar.xz (training/prepare_default_corpus.sh) and fortunes-{train,valid}.jsonl.xz (training/prepare_fortunes.sh).
# The tracked default model (29 MB) does not fit beside .gpu in the 64 MiB that travels: move
# managed/Mamba.Cli/default-model/model.safetensors out of the tree for the call (this script retrains it anyway).
# Build, reproduce the default model, the fortunes LoRA example, LoRA bench.
export PYTHONUNBUFFERED=1
L=$OUT/log-e.txt
exec > >(tee -a "$L") 2>&1
t0=$(date +%s); stamp() { echo "=== [$(( $(date +%s) - t0 )) s] $*"; }
stamp build
cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 > /tmp/cmake.log 2>&1
cmake --build build/native -j16 2>&1 | grep -E "error" | head
export MAMBA_NATIVE_LIBRARY=$PWD/build/native/libmamba.so
tar -C .gpu/app/Mamba.Cli -xJf .gpu/skia-runtimes.tar.xz
cp -r managed/Mamba.Cli/default-model .gpu/app/Mamba.Cli/
M="bash .gpu/run.sh dotnet .gpu/app/Mamba.Cli/mamba.dll"
stamp reproduce-default-model
mkdir -p /tmp/corpus && tar -C /tmp/corpus -xJf .gpu/data/corpus.tar.xz
MAMBA_CLI="$M" bash training/train_default_model.sh /tmp/corpus /tmp/rd 2>&1 | grep -E "eval|took" | tail -6
python3 -c "import json;print('reproduced final eval loss', json.load(open('/tmp/rd/trainer_state.json'))['last_eval_loss'], '(shipped: 4.320718874579016)')"
sha256sum /tmp/rd/bf16/model.safetensors; echo "shipped: a59483c9eff085cbe2f64593c9f3cdc0a342891521a19a1e25789d240bed053f"
stamp fortunes-finetune
xz -dc .gpu/data/fortunes-train.jsonl.xz > /tmp/f-train.jsonl; xz -dc .gpu/data/fortunes-valid.jsonl.xz > /tmp/f-valid.jsonl
$M finetune --model /tmp/rd/bf16 --data /tmp/f-train.jsonl --eval-data /tmp/f-valid.jsonl --text-field quote --output /tmp/quotes --device cuda --bf16 \
  --learning-rate 1e-3 --eval-steps 40 --eval-on-start 2>&1 | grep -E "adapter|warning|eval|trained" | tail -12
cp /tmp/quotes/metrics.jsonl $OUT/quotes-metrics.jsonl
for p in "A wise man" "The secret of success is" "Never trust" "Love is"; do
  echo "-- before: $p"; $M generate --model /tmp/rd/bf16 --device cuda --prompt "$p" --max-new-tokens 30 2>/dev/null; echo
  echo "-- after: $p"; $M generate --model /tmp/rd/bf16 --adapter /tmp/quotes --device cuda --prompt "$p" --max-new-tokens 30 2>/dev/null; echo
done
stamp lora-bench
$M bench --train --config 130m --device cuda --dtype bf16 --batch 8 --prompt-tokens 2048 --repeat 2 --lora-r 8 2>&1 | tail -3
stamp done
