#!/usr/bin/env bash
# Packs .gpu for the GPU host (../shared/tools/gpu-pack.sh) and trims it to what the bench/gpu scripts need, under the
# 64 MiB that travels with the working tree: no symbols or XML docs, no native runtimes of other platforms (SkiaSharp's
# are 60 MB; `mamba plot` draws the loss curve here afterwards), the tokenizer fixtures dropped, the training data
# compressed. The tracked default model (29 MB) must also leave the tree for the call; the script says how.
#   bench/gpu/pack.sh [--tests] [--data]
#     --tests  also the test app and the model fixtures (Gpu tests, ~22 MB more)
#     --data   .gpu/data: corpus.tar.xz (data/default) and fortunes-{train,valid}.jsonl.xz (data/fortunes)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
tests=0 data=0
for a in "$@"; do case $a in --tests) tests=1 ;; --data) data=1 ;; *) echo "pack.sh: unknown option $a" >&2; exit 2 ;; esac; done
projects=(managed/Mamba.Cli/Mamba.Cli.csproj)
[ $tests = 1 ] && projects+=(tests/Mamba.Tests/Mamba.Tests.csproj)
rm -rf .gpu
../shared/tools/gpu-pack.sh "${projects[@]}"
rm -rf .gpu/app/*/*.pdb .gpu/app/*/*.xml .gpu/app/*/runtimes .gpu/app/*/default-model .gpu/app/Mamba.Tests/Microsoft.CodeAnalysis*.dll \
  .gpu/fixtures/tokenizer .gpu/publish.log
[ $tests = 1 ] || rm -rf .gpu/fixtures
if [ $data = 1 ]; then
  mkdir -p .gpu/data
  [ -f data/default/corpus.tar.xz ] || training/prepare_default_corpus.sh data/default
  cp data/default/corpus.tar.xz .gpu/data/
  [ -f data/fortunes/train.jsonl ] || training/prepare_fortunes.sh data/fortunes
  for s in train valid; do xz -9 -c data/fortunes/$s.jsonl > .gpu/data/fortunes-$s.jsonl.xz; done
fi
# Ignored paths travel only through carry; the tracked tree does always.
tree=$( (git ls-files; git ls-files --others --exclude-standard) | grep -v '^managed/Mamba.Cli/default-model/model.safetensors$' \
  | xargs -d '\n' du -cb 2>/dev/null | tail -1 | cut -f1)
gpu=$(du -sb .gpu | cut -f1)
echo "pack.sh: .gpu $((gpu / 1048576)) MiB + tree without the default model's weights $((tree / 1048576)) MiB (limit 64 MiB)"
echo "pack.sh: before the call  mv managed/Mamba.Cli/default-model/model.safetensors /tmp/default-model.safetensors"
echo "pack.sh: after it         mv /tmp/default-model.safetensors managed/Mamba.Cli/default-model/model.safetensors"
