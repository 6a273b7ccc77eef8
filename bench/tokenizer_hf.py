#!/usr/bin/env python3
"""Single-thread encode throughput of Hugging Face `tokenizers` on the texts of TokenizerBenchmarks.

Usage (on a host with `pip install tokenizers`):
    python bench/tokenizer_hf.py [--tokenizer PATH/tokenizer.json] [--seconds 3]
    python bench/tokenizer_hf.py --write-data      # regenerate bench/data/tokenizer_*.txt (needs no tokenizers)

It encodes the same files as the BenchmarkDotNet class bench/Mamba.Bench/TokenizerBenchmarks.cs
(bench/data/tokenizer_english.txt and bench/data/tokenizer_mixed.txt, one `encode` call per file, like the C#
benchmark) and prints MB/s of UTF-8 input, the token count and a SHA-256 of the ids (int32 little-endian), which
must equal what `TokenizerBenchmarks` prints, proving both produced the same tokens.
The tokenizer is found like the C# side: --tokenizer, else $MAMBA_FIXTURES/tokenizer/tokenizer.json, else
../shared/fixtures/tokenizer/tokenizer.json beside the repository root.
"""
import argparse
import hashlib
import os
import random
import struct
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "bench", "data")
FILES = {"english": "tokenizer_english.txt", "mixed": "tokenizer_mixed.txt"}

# ---- deterministic text generation (only used with --write-data) -------------------------------------------

_WORDS = """the of and to a in is that for it as was with be by on not he I this are or his from at which but have an
they you were her she there been one all we their has would when if so no will more can out other its what about
up time could into only some them these than then may also new two first any like our over now such state model
space sequence language data network layer training input output memory attention selective scan hidden token
tokens performance results method methods long short context length paper work show shows shown using used based
large small linear recurrent convolution parameters efficient efficiently inference hardware GPU kernel faster
architecture information dense modeling however while because through between each both where after before under
different important example problem approach system systems function learning deep research recent previous
propose proposed present number high low best better most many several known general simple complex structure
structured continuous discrete time-invariant transformer transformers quadratic scaling benchmark benchmarks
experiments experiment evaluation evaluate evaluated dataset datasets audio genomics text vision downstream
pretrained pretraining fine-tuning zero-shot accuracy perplexity throughput latency batch size step steps matrix
vector vectors dimension dimensions expansion projection gate gating normalization residual block blocks
Mamba S4 H3 Hyena RWKV RetNet GPT-3 Pythia LLaMA Figure Table Section Appendix we're it's don't can't doesn't
isn't they're you'll I've we'd world people year years way day man woman child government company city country
water house school story family night point hand part place case week fact group question right left end""".split()

_CJK = [
    "状态空间模型是一种新的序列建模方法，它在长序列上表现出色。",
    "我们提出了一种选择性扫描算法，可以在硬件上高效运行。",
    "大規模言語モデルは、テキストの生成と理解において重要な役割を果たします。",
    "この論文では、新しいアーキテクチャを紹介します。",
    "맘바는 선택적 상태 공간 모델을 사용하는 새로운 아키텍처입니다.",
    "한국어 문장도 토크나이저가 정확하게 처리해야 합니다.",
]
_OTHER = [
    "Ünïcödé façade — naïve café à la carte, São Paulo, Zürich, Kraków, Ελληνικά, русский язык.",
    "Emoji: 🐍🚀✨ 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ 🤖 done!",
    "Math: ∑ᵢ xᵢ² ≤ ∞, α·β = γ, ½ + ¼ = ¾, 10⁻⁵ < ε.",
    "हिन्दी पाठ और العربية النص و עברית טקסט.",
]
_CODE = [
    "def selective_scan(u, delta, A, B, C, D=None):\n    x = torch.zeros(batch, dim, dstate)\n    for i in range(L):\n        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]\n        ys.append(einsum(\"bdn,bn->bd\", x, C[:, :, i]))\n    return torch.stack(ys, dim=2)\n",
    "public static int Add(int a, int b)\n{\n    // adds two numbers\n    return a + b;\n}\n",
    "{\"d_model\": 768, \"n_layer\": 24, \"vocab_size\": 50277, \"ssm_cfg\": {}, \"rms_norm\": true}\n",
    "for (int i = 0; i < n; ++i) {\n\t\tsum += x[i] * w[i];\t// dot\n}\n",
]


def _english(rng, size):
    weights = [1.0 / (i + 1) ** 0.9 for i in range(len(_WORDS))]
    out, n = [], 0
    while n < size:
        words = rng.choices(_WORDS, weights, k=rng.randint(6, 24))
        words[0] = words[0][:1].upper() + words[0][1:]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(1, 99999)))
        if rng.random() < 0.3:
            words[rng.randrange(len(words))] += ","
        sentence = " ".join(words) + rng.choice([".", ".", ".", "?", "!", ":"])
        sentence += "\n\n" if rng.random() < 0.12 else " "
        out.append(sentence)
        n += len(sentence.encode("utf-8"))
    return "".join(out)


def _mixed(rng, size):
    out, n = [], 0
    while n < size:
        kind = rng.random()
        if kind < 0.35:
            piece = _english(rng, 200)
        elif kind < 0.6:
            piece = rng.choice(_CJK) + "\n"
        elif kind < 0.8:
            piece = rng.choice(_OTHER) + " "
        else:
            piece = rng.choice(_CODE)
        out.append(piece)
        n += len(piece.encode("utf-8"))
    return "".join(out)


def write_data(size=256 * 1024):
    os.makedirs(DATA, exist_ok=True)
    for name, gen, seed in (("english", _english, 1), ("mixed", _mixed, 2)):
        text = gen(random.Random(seed), size)
        with open(os.path.join(DATA, FILES[name]), "w", encoding="utf-8", newline="") as f:
            f.write(text)
        print(f"wrote {FILES[name]}: {len(text.encode('utf-8'))} bytes")


# ---- measurement -----------------------------------------------------------------------------------------

def find_tokenizer():
    env = os.environ.get("MAMBA_FIXTURES")
    if env and os.path.isdir(env):
        return os.path.join(env, "tokenizer", "tokenizer.json")
    return os.path.join(os.path.dirname(REPO), "shared", "fixtures", "tokenizer", "tokenizer.json")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per text")
    ap.add_argument("--write-data", action="store_true")
    args = ap.parse_args()
    if args.write_data:
        write_data()
        return

    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import tokenizers
    from tokenizers import Tokenizer

    path = args.tokenizer or find_tokenizer()
    tok = Tokenizer.from_file(path)
    print(f"tokenizers {tokenizers.__version__}, python {sys.version.split()[0]}, {path}")
    for name, file in FILES.items():
        with open(os.path.join(DATA, file), encoding="utf-8", newline="") as f:
            text = f.read()
        nbytes = len(text.encode("utf-8"))
        ids = tok.encode(text, add_special_tokens=False).ids  # warm-up (fills the BPE cache, as the C# warm-up does)
        digest = hashlib.sha256(struct.pack(f"<{len(ids)}i", *ids)).hexdigest()
        runs, best, start = 0, float("inf"), time.perf_counter()
        while time.perf_counter() - start < args.seconds or runs < 3:
            t0 = time.perf_counter()
            tok.encode(text, add_special_tokens=False)
            best = min(best, time.perf_counter() - t0)
            runs += 1
        mean = (time.perf_counter() - start) / runs
        print(f"{name:8s} {nbytes} bytes, {len(ids)} tokens, sha256 {digest[:16]}: "
              f"mean {nbytes / mean / 1e6:.2f} MB/s, best {nbytes / best / 1e6:.2f} MB/s ({runs} runs)")


if __name__ == "__main__":
    main()
