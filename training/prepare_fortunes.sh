#!/usr/bin/env bash
# Fetches Debian's fortune collections (packages fortunes and fortunes-min, 1:1.99.1; BSD licence, Debian main) through
# apt and writes OUT_DIR/train.jsonl and valid.jsonl: one quote a line with a `quote` text field (the layout of the
# Abirate/english_quotes data set the transformers Mamba docs fine-tune on), plus `author` and `tags`; every 20th quote
# is validation. OUT_DIR/SOURCES.md records the packages, their hashes, the licence and the counts.
#   training/prepare_fortunes.sh OUT_DIR
set -euo pipefail
out=${1:?usage: prepare_fortunes.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
(cd "$tmp" && apt-get download fortunes fortunes-min >/dev/null 2>&1) || { echo "prepare_fortunes: apt-get download fortunes fortunes-min failed" >&2; exit 1; }
for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
counts=$(python3 "$here/fortunes_to_jsonl.py" "$tmp/x/usr/share/games/fortunes" "$out")
rows=""
for deb in "$tmp"/*.deb; do
  rows+="| Debian \`$(dpkg-deb -f "$deb" Package)\` | $(dpkg-deb -f "$deb" Version) (sha256 $(sha256sum "$deb" | cut -d' ' -f1)) | BSD (debian/copyright: \"This program falls under the BSD copyright\", Regents of the University of California; Debian main) | every fortune file except art, ascii-art, translate-me |"$'\n'
done
cat > "$out/SOURCES.md" <<MD
# Fine-tuning text: quotes

| source | version | licence | what was taken |
|---|---|---|---|
${rows}
Converted by training/fortunes_to_jsonl.py (attribution lines split off as \`author\`, 20–400 characters, printable
English). The packages' full copyright notice: /usr/share/doc/fortunes/copyright inside either package.

\`\`\`
$counts
\`\`\`
MD
cat "$out/SOURCES.md"
