#!/usr/bin/env python3
"""Writes a check-reference fixture for a model folder from transformers (float32, CPU): OUT/reference.safetensors with
input_ids (the given prompts' tokens, right-aligned batch of one each is avoided: one prompt per call), logits,
hidden_states.*, last_hidden_state, generate.prompt and generate.greedy (16 new tokens) for the first prompt, and
OUT/model -> the model folder. Then `mamba check-reference OUT --only forward,generate` compares ours with it.

usage: hf_reference.py MODEL_DIR OUT_DIR "prompt one" ["prompt two" ...]
"""
import os, sys, torch
from safetensors.torch import save_file
from transformers import MambaForCausalLM, PreTrainedTokenizerFast

model_dir, out = sys.argv[1], sys.argv[2]
prompts = sys.argv[3:] or ["The Mamba architecture"]
torch.manual_seed(0)
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
model = MambaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
os.makedirs(out, exist_ok=True)
ids = torch.tensor([tok.encode(prompts[0], add_special_tokens=False)])
with torch.no_grad():
    o = model(ids, output_hidden_states=True)
    tensors = {"input_ids": ids, "logits": o.logits.float().contiguous(), "last_hidden_state": o.hidden_states[-1].float().contiguous()}
    for i, h in enumerate(o.hidden_states):
        tensors[f"hidden_states.{i}"] = h.float().contiguous()
    g = model.generate(ids, max_new_tokens=16, do_sample=False)
    tensors["generate.prompt"] = ids
    tensors["generate.greedy"] = g
save_file({k: v.clone().contiguous() for k, v in tensors.items()}, os.path.join(out, "reference.safetensors"))
link = os.path.join(out, "model")
if not os.path.exists(link):
    os.symlink(os.path.abspath(model_dir), link)
for p in prompts:
    pi = torch.tensor([tok.encode(p, add_special_tokens=False)])
    with torch.no_grad():
        g = model.generate(pi, max_new_tokens=24, do_sample=False)
    print("transformers greedy:", repr(tok.decode(g[0])))
