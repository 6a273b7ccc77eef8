#!/usr/bin/env python3
"""PEFT round trip for LoRA adapters (needs torch, transformers 5.17, peft 0.21).

Writes a check-reference adapter fixture OUT/ (model -> BASE, adapter -> the adapter, reference.safetensors) whose
tensors PEFT computed in float64 in training mode: input_ids, labels, logits (base + adapter, unmerged), loss,
grad.<key> for every key of adapter_model.safetensors, merged.logits (after merge_and_unload). Then
`mamba check-reference OUT` compares the library with PEFT on that adapter.

  peft_roundtrip.py BASE ADAPTER OUT            PEFT loads ADAPTER (e.g. one `mamba finetune` wrote)
  peft_roundtrip.py BASE --create ADAPTER OUT   PEFT makes and saves a new adapter (random B) into ADAPTER first,
                       [--targets in_proj,x_proj,embeddings] [--r 8] [--alpha 16]
"""
import argparse, os, torch
from safetensors.torch import save_file
from transformers import MambaForCausalLM
from peft import LoraConfig, PeftModel, get_peft_model

p = argparse.ArgumentParser()
p.add_argument("base")
p.add_argument("adapter")
p.add_argument("out")
p.add_argument("--create", action="store_true")
p.add_argument("--targets", default="in_proj,x_proj,embeddings")
p.add_argument("--r", type=int, default=8)
p.add_argument("--alpha", type=float, default=16)
p.add_argument("--seed", type=int, default=7)
a = p.parse_args()
torch.manual_seed(a.seed)

if a.create:
    # Made and saved as a user would: a float32 model (PEFT saves the adapter in the model's dtype).
    model = get_peft_model(MambaForCausalLM.from_pretrained(a.base, torch_dtype=torch.float32), LoraConfig(r=a.r, lora_alpha=a.alpha, target_modules=a.targets.split(","), lora_dropout=0.0,
                                            bias="none", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if "lora_B" in name or "lora_embedding_A" in name:  # PEFT starts these at zero: make the adapter matter
                prm.normal_(0, 0.05)
    model.save_pretrained(a.adapter)
    print("PEFT saved", a.adapter, sorted(os.listdir(a.adapter)))
    model = PeftModel.from_pretrained(MambaForCausalLM.from_pretrained(a.base, torch_dtype=torch.float64), a.adapter, is_trainable=True)
else:
    model = PeftModel.from_pretrained(MambaForCausalLM.from_pretrained(a.base, torch_dtype=torch.float64), a.adapter, is_trainable=True)
    print("PEFT loaded", a.adapter)
model = model.double()
model.train()

vocab = min(model.config.vocab_size, 50277)
ids = torch.randint(0, vocab, (2, 24), dtype=torch.int64)
labels = ids.clone()
labels[0, 5] = -100
labels[1, 17:] = -100
out = model(input_ids=ids, labels=labels)
out.loss.backward()
tensors = {"input_ids": ids, "labels": labels, "logits": out.logits.detach().float(), "loss": out.loss.detach().float().reshape(1)}
for name, prm in model.named_parameters():
    if prm.requires_grad and "lora_" in name:
        key = name.replace(".default", "")
        tensors["grad." + key] = (prm.grad if prm.grad is not None else torch.zeros_like(prm)).detach().float()
with torch.no_grad():
    merged = model.merge_and_unload()
    tensors["merged.logits"] = merged(input_ids=ids).logits.float()
os.makedirs(a.out, exist_ok=True)
save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(a.out, "reference.safetensors"))
for name, target in (("model", a.base), ("adapter", a.adapter)):
    link = os.path.join(a.out, name)
    if not os.path.exists(link):
        os.symlink(os.path.abspath(target), link)
print("wrote", a.out, "with", len([k for k in tensors if k.startswith("grad.")]), "adapter gradients, loss", float(out.loss.detach()))
