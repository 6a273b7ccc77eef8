#!/usr/bin/env python3
"""Unigram and bigram perplexity of a validation text under counts from the training text, with the same tokenizer and
packing as `mamba train` (documents' tokens with EOS after each). The bigram model interpolates with the unigram
(Jelinek-Mercer, weight chosen on the validation text from a small grid, which favours the baseline) and the unigram
is add-one smoothed over the vocabulary, so every token has a probability. Needs `tokenizers` or `transformers`.

usage: ngram_baselines.py TOKENIZER_JSON TRAIN.jsonl VALID.jsonl [--eos 0] [--field text]
       ngram_baselines.py --token-cache TRAIN_tokens.bin VALID_tokens.bin [--vocab 50277]
(the second form reads the int32 token caches `mamba train` wrote: OUTPUT/data-cache/tokens.bin and
OUTPUT/data-cache/eval/tokens.bin, so the baselines see exactly the trainer's tokens)
"""
import argparse, array, collections, json, math

def load_tokenizer(path):
    try:
        from tokenizers import Tokenizer
        t = Tokenizer.from_file(path)
        return lambda s: t.encode(s).ids, t.get_vocab_size()
    except ImportError:
        from transformers import PreTrainedTokenizerFast
        t = PreTrainedTokenizerFast(tokenizer_file=path)
        return lambda s: t.encode(s, add_special_tokens=False), len(t)

def tokens(path, encode, field, eos):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.extend(encode(json.loads(line)[field]))
                out.append(eos)
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--token-cache", action="store_true"); ap.add_argument("--vocab", type=int, default=50277)
    ap.add_argument("--eos", type=int, default=0); ap.add_argument("--field", default="text")
    a = ap.parse_args()
    if a.token_cache:
        def read(path):
            values = array.array("i")
            with open(path, "rb") as f:
                values.frombytes(f.read())
            return values.tolist()
        train, valid, vocab = read(a.paths[0]), read(a.paths[1]), a.vocab
    else:
        encode, vocab = load_tokenizer(a.paths[0])
        train = tokens(a.paths[1], encode, a.field, a.eos)
        valid = tokens(a.paths[2], encode, a.field, a.eos)
    uni = collections.Counter(train)
    big = collections.Counter(zip(train, train[1:]))
    n = len(train)
    p1 = lambda w: (uni[w] + 1) / (n + vocab)
    nll1 = -sum(math.log(p1(w)) for w in valid[1:]) / (len(valid) - 1)
    best = None
    for lam in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9):
        s = 0.0
        for prev, w in zip(valid, valid[1:]):
            c = uni[prev]
            pb = big[(prev, w)] / c if c else 0.0
            s -= math.log(lam * pb + (1 - lam) * p1(w))
        s /= len(valid) - 1
        if best is None or s < best[0]: best = (s, lam)
    print(json.dumps({"train_tokens": n, "valid_tokens": len(valid), "vocab": vocab,
                      "unigram_nll": round(nll1, 4), "unigram_perplexity": round(math.exp(nll1), 1),
                      "bigram_nll": round(best[0], 4), "bigram_perplexity": round(math.exp(best[0]), 1), "bigram_lambda": best[1]}))

if __name__ == "__main__":
    main()
