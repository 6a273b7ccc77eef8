#!/usr/bin/env python3
"""Hugging Face transformers' MambaForCausalLM on the same shapes as `mamba bench` (the side-by-side reference).

Prints one JSON object per measurement with the keys of `mamba bench --json`: batch, prompt_tokens, new_tokens,
prefill_tokens_per_second, decode_ms_per_token, decode_tokens_per_second, peak_bytes.
Random weights (the config's init), greedy decoding, CUDA-event timing, median of --repeat runs after a warm-up.
transformers uses its torch path here unless mamba-ssm/causal-conv1d are installed (they are not on the GPU host).
"""
import argparse
import json
import statistics

import torch
from transformers import MambaConfig, MambaForCausalLM

PRESETS = {"130m": (768, 24), "370m": (1024, 48), "790m": (1536, 48), "1.4b": (2048, 48), "2.8b": (2560, 64)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="130m")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32", "f16"])
    ap.add_argument("--batch", default="1")
    ap.add_argument("--prompt-tokens", default="2048")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32, "f16": torch.float16}[args.dtype]
    torch.backends.cuda.matmul.allow_tf32 = False
    hidden, layers = PRESETS[args.config]
    config = MambaConfig(vocab_size=50280, hidden_size=hidden, num_hidden_layers=layers, state_size=16)
    torch.manual_seed(1)
    model = MambaForCausalLM(config).to("cuda", dtype=dtype).eval()
    gen = torch.Generator(device="cpu").manual_seed(7)

    def timed(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000.0, out

    for batch in [int(x) for x in args.batch.split(",")]:
        for length in [int(x) for x in args.prompt_tokens.split(",")]:
            ids = torch.randint(0, 50280, (batch, length), generator=gen).to("cuda")
            torch.cuda.reset_peak_memory_stats()
            prefill, decode = [], []
            with torch.inference_mode():
                for r in range(args.repeat + 1):
                    t_prefill, _ = timed(lambda: model(ids, use_cache=True, logits_to_keep=1))
                    # generate = prefill + new_tokens-1 decode steps; subtract the prefill to get the steps alone.
                    # min_new_tokens = max_new_tokens suppresses eos (id 0), so every run decodes the full length.
                    t_total, out = timed(lambda: model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                                                  do_sample=False, eos_token_id=0, pad_token_id=0))
                    if r == 0:
                        continue
                    prefill.append(t_prefill)
                    decode.append(max(t_total - t_prefill, 1e-9) / max(args.new_tokens - 1, 1))
            p, d = statistics.median(prefill), statistics.median(decode)
            print(json.dumps({
                "model": args.config, "device": "cuda", "d_type": args.dtype, "batch": batch, "prompt_tokens": length,
                "new_tokens": args.new_tokens, "prefill_seconds": p, "prefill_tokens_per_second": batch * length / p,
                "decode_ms_per_token": d * 1000, "decode_tokens_per_second": batch / d,
                "peak_bytes": torch.cuda.max_memory_allocated(), "implementation": "transformers",
            }), flush=True)


if __name__ == "__main__":
    main()
