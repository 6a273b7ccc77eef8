#!/usr/bin/env bash
# Side by side on the GPU host, in one call: transformers 5.17 (its torch path) and our `mamba bench` on identical
# shapes (130m-shaped random model, greedy decoding), then a table with the ratio.
#   bash bench/side_by_side.sh [--dtype bf16] [--batch 1,8,64] [--prompt-tokens 2048] [--new-tokens 128]
# Needs: libmamba built (MAMBA_NATIVE_LIBRARY or runtimes/), the published CLI under .gpu/app/Mamba.Cli (gpu-pack.sh),
# python3 with torch + transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
dtype=bf16 batch=1,8,64 prompt=2048 new=128 hf_repeat=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dtype) dtype=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --prompt-tokens) prompt=$2; shift 2 ;;
    --new-tokens) new=$2; shift 2 ;;
    --hf-repeat) hf_repeat=$2; shift 2 ;;   # transformers' torch path is slow: 1 timed run after the warm-up
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ours=$(mktemp); theirs=$(mktemp)
bash .gpu/run.sh dotnet .gpu/app/Mamba.Cli/mamba.dll bench --device cuda --dtype "$dtype" --batch "$batch" \
  --prompt-tokens "$prompt" --new-tokens "$new" --json > "$ours"
PYTHONUNBUFFERED=1 python3 bench/hf_bench.py --dtype "$dtype" --batch "$batch" --prompt-tokens "$prompt" --new-tokens "$new" --repeat "$hf_repeat" > "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
theirs = {(r["batch"], r["prompt_tokens"]): r for r in (json.loads(l) for l in open(sys.argv[2]) if l.startswith("{"))}
print(f"{'batch':>5} {'prompt':>6} | {'prefill tok/s ours':>18} {'transformers':>12} {'ratio':>7} | {'decode ms/tok ours':>18} {'transformers':>12} {'ratio':>7}")
for r in ours:
    t = theirs.get((r["batch"], r["prompt_tokens"]))
    if t is None:
        continue
    pr = r["prefill_tokens_per_second"] / t["prefill_tokens_per_second"]
    dr = t["decode_ms_per_token"] / r["decode_ms_per_token"]
    print(f"{r['batch']:>5} {r['prompt_tokens']:>6} | {r['prefill_tokens_per_second']:>18,.0f} {t['prefill_tokens_per_second']:>12,.0f} {pr:>6.1f}x |"
          f" {r['decode_ms_per_token']:>18.3f} {t['decode_ms_per_token']:>12.3f} {dr:>6.1f}x")
PY
