#!/usr/bin/env python3
"""Debian fortune files -> JSONL quotes (the english_quotes layout: a `quote` text field, plus `author` and `tags`).

    fortunes_to_jsonl.py FORTUNE_DIR OUT_DIR

Reads every fortune file (entries separated by lines holding only "%") in FORTUNE_DIR except the picture and
non-English collections, splits off a trailing "-- Name" attribution as `author`, joins wrapped lines with single spaces
(keeping the line breaks of verse, where most lines are short), and keeps entries of 20 to 400 characters that are
printable English text. Every 20th kept entry (in file and entry order) goes to valid.jsonl, never trained on; the rest
to train.jsonl. Prints the counts.
"""
import json
import os
import re
import sys

# Pictures, not text, and a collection that is mostly other languages.
SKIP = {"art", "ascii-art", "translate-me"}
ATTRIBUTION = re.compile(r"^\s*--\s*(.+?)\s*$")


def entries(path):
    with open(path, encoding="utf-8", errors="strict") as f:
        block = []
        for line in f:
            if line.rstrip("\n") == "%":
                if block:
                    yield block
                block = []
            else:
                block.append(line.rstrip("\n"))
        if block:
            yield block


def clean(block):
    lines = [l.rstrip() for l in block]
    while lines and not lines[-1].strip():
        lines.pop()
    author = None
    # The attribution: the last line(s) starting with "--" (may wrap onto one more indented line).
    for k in range(len(lines) - 1, max(-1, len(lines) - 3), -1):
        m = ATTRIBUTION.match(lines[k])
        if m:
            author = " ".join([m.group(1)] + [l.strip() for l in lines[k + 1:]])
            lines = lines[:k]
            break
    body = [l.strip() for l in lines if l.strip()]
    if not body:
        return None, None
    verse = sum(len(l) < 40 for l in body) > len(body) / 2 and len(body) > 2
    text = "\n".join(body) if verse else " ".join(body)
    text = re.sub(r"[ \t]+", " ", text).strip()
    return text, author


def english(text):
    if not 20 <= len(text) <= 400:
        return False
    if any(ord(c) < 32 and c != "\n" for c in text):
        return False
    letters = sum(c.isascii() and c.isalpha() for c in text)
    return letters >= 0.6 * len(text.replace(" ", "").replace("\n", "")) and "____" not in text


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    kept = skipped = 0
    per_file = {}
    with open(os.path.join(out, "train.jsonl"), "w", encoding="utf-8") as train, \
         open(os.path.join(out, "valid.jsonl"), "w", encoding="utf-8") as valid:
        for name in sorted(os.listdir(src)):
            path = os.path.join(src, name)
            if name in SKIP or "." in name or not os.path.isfile(path):
                continue
            for block in entries(path):
                text, author = clean(block)
                if text is None or not english(text):
                    skipped += 1
                    continue
                row = {"quote": text, "author": author, "tags": [name]}
                (valid if kept % 20 == 19 else train).write(json.dumps(row, ensure_ascii=False) + "\n")
                kept += 1
                per_file[name] = per_file.get(name, 0) + 1
    n_valid = kept // 20
    print(f"entries kept {kept} (train {kept - n_valid}, valid {n_valid}), skipped {skipped}")
    print("per file: " + ", ".join(f"{k} {v}" for k, v in sorted(per_file.items())))


if __name__ == "__main__":
    main()
