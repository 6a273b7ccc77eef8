#!/usr/bin/env bash
# Run from the repository root on the GPU host after ../shared/tools/gpu-pack.sh (Mamba.Cli, Mamba.Tests), with
# .gpu/data holding corpus.tar.xz (training/prepare_default_corpus.sh) and fortunes-{train,valid}.jsonl.xz
# (training/prepare_fortunes.sh, xz-compressed). The tracked default model (29 MB) does not fit beside .gpu in the
# 64 MiB that travels: move managed/Mamba.Cli/default-model/model.safetensors out of the tree for the call.
#
# Build, Gpu tests, then issue 15's seeded reproduction of the default model (240 x 6) together with the shape search
# (other width/depth pairs under the 32 MB budget, same recipe and seed, and a second 240 x 6 run that must give the
# same bits; the runs share the GPU, so their tokens/s are not clean), issue 14's fortunes LoRA example with --eval-on-start on the reproduced model, and last, alone on the
# GPU, the LoRA and full fine-tuning benches. SHAPES="HxL ..." overrides the search.
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/log.txt") 2>&1
t0=$(date +%s); stamp() { echo "=== [$(( $(date +%s) - t0 )) s] $*"; }
left() { echo $(( ${BUDGET:-570} - ($(date +%s) - t0) )); }
stamp build
cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 > /tmp/cmake.log 2>&1
cmake --build build/native -j16 2>&1 | grep -E "error" | head
export MAMBA_NATIVE_LIBRARY=$PWD/build/native/libmamba.so
cp -r managed/Mamba.Cli/default-model .gpu/app/Mamba.Cli/
M="bash .gpu/run.sh dotnet .gpu/app/Mamba.Cli/mamba.dll"
if [ -d .gpu/app/Mamba.Tests ]; then
  stamp gpu-tests
  bash .gpu/run.sh dotnet .gpu/app/Mamba.Tests/Mamba.Tests.dll --filter "TestCategory=Gpu" > /tmp/gpu-tests.txt 2>&1
  grep -E "failed|succeeded:|skipped:|total:" /tmp/gpu-tests.txt | tail -8
fi

stamp "default model: reproduction and shape search"
mkdir -p /tmp/corpus && tar -C /tmp/corpus -xJf .gpu/data/corpus.tar.xz
SHAPES=${SHAPES:-"240x6 240x6r 192x18 160x34"}  # 240x6r: a second identical run (bit reproducibility)
for s in $SHAPES; do
  h=${s%x*}; l=${s#*x}; l=${l//[!0-9]/}
  ( HIDDEN=$h LAYERS=$l MAMBA_CLI="$M" timeout $(( $(left) - 150 )) bash training/train_default_model.sh /tmp/corpus /tmp/shape-$s \
      > /tmp/shape-$s.log 2>&1; echo "exit $?" >> /tmp/shape-$s.log ) &
done
# The fortunes example starts on the reproduced model as soon as it exists.
while [ ! -f /tmp/shape-240x6/bf16/model.safetensors ] && ! grep -q "^exit" /tmp/shape-240x6.log 2>/dev/null && [ "$(left)" -gt 150 ]; do sleep 5; done
if [ -f /tmp/shape-240x6/bf16/model.safetensors ]; then
  stamp fortunes-finetune
  xz -dc .gpu/data/fortunes-train.jsonl.xz > /tmp/f-train.jsonl; xz -dc .gpu/data/fortunes-valid.jsonl.xz > /tmp/f-valid.jsonl
  base=/tmp/shape-240x6/bf16
  $M finetune --model $base --data /tmp/f-train.jsonl --eval-data /tmp/f-valid.jsonl --text-field quote --output /tmp/quotes \
    --device cuda --bf16 --learning-rate 1e-3 --eval-steps 40 --eval-on-start > /tmp/quotes.log 2>&1
  grep -E "adapter|warning|eval|trained" /tmp/quotes.log | tail -8
  for p in "A wise man" "The secret of success is" "Never trust" "Love is"; do
    echo "-- before: $p"; $M generate --model $base --device cuda --prompt "$p" --max-new-tokens 30 2>/dev/null; echo
    echo "-- after: $p"; $M generate --model $base --adapter /tmp/quotes --device cuda --prompt "$p" --max-new-tokens 30 2>/dev/null; echo
  done
fi
wait
stamp "shape results"
for s in $SHAPES; do
  echo "-- $s: $(grep -E "^trained|training took|exit" /tmp/shape-$s.log | tr '\n' ' ')"
  python3 -c "import json,sys;d=json.load(open('/tmp/shape-$s/trainer_state.json'));print('   last eval loss', d.get('last_eval_loss'))" 2>/dev/null
  grep -E "perplexity|nats" /tmp/shape-$s/ngram_baselines.txt 2>/dev/null | head -3
done
sha256sum /tmp/shape-240x6/bf16/model.safetensors /tmp/shape-240x6r/bf16/model.safetensors /tmp/shape-240x6/model.safetensors /tmp/shape-240x6r/model.safetensors 2>/dev/null; echo "shipped: a59483c9eff085cbe2f64593c9f3cdc0a342891521a19a1e25789d240bed053f"

if [ "$(left)" -gt 100 ]; then
  stamp lora-bench
  $M bench --train --config 130m --device cuda --dtype bf16 --batch 8 --prompt-tokens 2048 --repeat 2 --lora-r 8 2>&1 | tail -4
fi
if [ "$(left)" -gt 60 ]; then
  stamp full-bench
  $M bench --train --config 130m --device cuda --dtype bf16 --batch 8 --prompt-tokens 2048 --repeat 2 2>&1 | tail -4
fi
stamp pack
mkdir -p /tmp/res && cp /tmp/gpu-tests.txt /tmp/quotes.log /tmp/shape-*.log /tmp/res/ 2>/dev/null
for s in $SHAPES; do mkdir -p /tmp/res/$s; cp /tmp/shape-$s/{metrics.jsonl,trainer_state.json,ngram_baselines.txt,command.txt,bf16-sizes.txt} /tmp/res/$s/ 2>/dev/null; done
[ -d /tmp/quotes ] && cp -r /tmp/quotes /tmp/res/quotes-adapter && rm -rf /tmp/res/quotes-adapter/data-cache /tmp/res/quotes-adapter/checkpoint-*
tar -C /tmp -czf "$OUT/results.tar.gz" res
# The best shape's bf16 weights come back in two parts (the 16 MiB limit per returned file).
best=$(for s in $SHAPES; do python3 -c "import json;print(json.load(open('/tmp/shape-$s/trainer_state.json'))['last_eval_loss'],'$s')" 2>/dev/null; done | sort -g | head -1 | cut -d' ' -f2)
echo "best shape: $best"
[ -n "$best" ] && split -b 15M /tmp/shape-$best/bf16/model.safetensors "$OUT/best-$best.safetensors.part-"
stamp done
