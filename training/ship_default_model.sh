#!/usr/bin/env bash
# Makes a trained run the bundled default model (issue 15): assembles the bf16 folder from the parts a device call
# returned (bench/gpu/default_model_choice.sh, STAGE=check), draws its loss curve, generates the card's samples on this
# machine's CPU, writes the model card (training/model_card.py) and replaces managed/Mamba.Cli/default-model.
#   training/ship_default_model.sh RUN_DIR CONFIG_JSON "PART_PREFIX" "HARDWARE TEXT"
# RUN_DIR: the run's metrics.jsonl, trainer_state.json, ngram_baselines.txt, command.txt, train.log. PART_PREFIX: the
# model.safetensors parts without their suffixes (…part-aa, …part-ab). The corpus' SOURCES.md comes from
# data/default (training/prepare_default_corpus.sh data/default). The CLI: $MAMBA_CLI, else `dotnet run`.
set -euo pipefail
run=${1:?usage: ship_default_model.sh RUN_DIR CONFIG_JSON PART_PREFIX HARDWARE}
config=${2:?config.json of the chosen run}
parts=${3:?model.safetensors part prefix}
hardware=${4:?hardware and date, for the card}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
if [ -n "${MAMBA_CLI:-}" ]; then read -r -a mamba <<< "$MAMBA_CLI"
else mamba=(dotnet run --project "$repo/managed/Mamba.Cli" -c Release --); fi
dest=$repo/managed/Mamba.Cli/default-model
sources=$repo/data/default/SOURCES.md
[ -f "$sources" ] || { echo "ship_default_model: no $sources (run training/prepare_default_corpus.sh data/default)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat "$parts"* > "$work/model.safetensors"
cp "$config" "$work/config.json"
cp "$dest/tokenizer.json" "$dest/generation_config.json" "$work/"
"${mamba[@]}" info --model "$work" | tail -n +1 > /dev/null   # loads: a damaged or mismatched folder stops here
"${mamba[@]}" plot "$run" --out "$work/loss_curve.png"

samples=$work/samples.txt
: > "$samples"
sample() {
  local shown=""
  for a in "$@"; do if [[ $a == *" "* ]]; then shown+=" \"$a\""; else shown+=" $a"; fi; done
  echo "\$ mamba generate$shown" >> "$samples"
  "${mamba[@]}" generate --model "$work" --device cpu "$@" 2>/dev/null >> "$samples"
  printf '\n' >> "$samples"
}
sample --prompt "The Mamba architecture" --max-new-tokens 40
sample --prompt "Once upon a time" --max-new-tokens 40
sample --prompt "The president said that" --max-new-tokens 40
sample --prompt "It is a truth universally acknowledged" --max-new-tokens 40
sample --prompt "The old house" --max-new-tokens 40 --sample --temperature 0.8 --top-p 0.9 --seed 1

python3 "$here/model_card.py" "$run" "$work" "$sources" "$samples" --hardware "$hardware"
cp "$sources" "$work/TRAINING_DATA.md"
rm "$samples"
rm -f "$dest"/*
cp "$work"/* "$dest/"
sha256sum "$dest/model.safetensors"
du -cb "$dest"/* | tail -1
