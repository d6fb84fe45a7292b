#!/usr/bin/env python3
"""Loads an adapter written by qlora-train with PEFT and checks it.

Run on a host with torch, transformers and peft:
    python3 tools/verify/peft_load_check.py DIR
where DIR holds tiny-llama/ (the base model), adapter/ (qlora-train's
--output_dir) and tiny-llama-batch.safetensors. It checks that
PeftModel.from_pretrained accepts the adapter, that every tensor it loaded
equals the file, and prints the loss of the batch with the adapter.
"""
import torch, json, sys
from transformers import AutoModelForCausalLM
from peft import PeftModel
from safetensors.torch import load_file
d = sys.argv[1]
base = AutoModelForCausalLM.from_pretrained(d + '/tiny-llama', torch_dtype=torch.float32)
model = PeftModel.from_pretrained(base, d + '/adapter')
ours = load_file(d + '/adapter/adapter_model.safetensors')
sd = model.state_dict()
matched = 0
for k, v in ours.items():
    key = k.replace('.lora_A.weight', '.lora_A.default.weight').replace('.lora_B.weight', '.lora_B.default.weight')
    assert key in sd, key
    assert torch.equal(sd[key].cpu(), v), key
    matched += 1
cfg = model.peft_config['default']
print('peft loaded', matched, 'tensors; r', cfg.r, 'alpha', cfg.lora_alpha, 'targets', sorted(cfg.target_modules))
ids = load_file(d + '/tiny-llama-batch.safetensors')['input_ids']
with torch.no_grad():
    loss = model(input_ids=ids, labels=ids).loss
print('loss with the adapter on the fp32 (unquantized) base:', loss.item())
