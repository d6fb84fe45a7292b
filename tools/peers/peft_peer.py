"""The reference stack beside ours: PEFT LoRA on a bf16 base, and bitsandbytes + PEFT QLoRA, on the
random Llama shape of ../shared/peers/unsloth_peer.py, timed by its own loop (train_and_report), so
that every peer is measured the same way. Run one configuration per process:

  python3 tools/peers/peft_peer.py peft_bnb_r16_all_nogc    # needs the model unsloth_peer.py saved
  python3 tools/peers/peft_peer.py peft_bf16_r16_all_nogc

with peers/ (a copy of ../shared/peers) beside it on sys.path. Prints one RESULT line.
"""
import os, sys

sys.path.insert(0, os.path.join(os.getcwd(), "peers"))
import unsloth_peer as up  # noqa: E402

CONFIGS = {
    "peft_bnb_r16_all_nogc": dict(r=16, alpha=32, targets=up.ALL7, four_bit=True),
    "peft_bf16_r16_all_nogc": dict(r=16, alpha=32, targets=up.ALL7, four_bit=False),
}


def run(a, name, c):
    import torch, peft, transformers
    from transformers import LlamaForCausalLM, BitsAndBytesConfig
    cfg = up.llama_config(a)
    if c["four_bit"]:
        import bitsandbytes
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
        model = LlamaForCausalLM.from_pretrained(up.model_dir(a), quantization_config=quant,
                                                 dtype=torch.bfloat16, device_map={"": 0})
        extra = dict(bitsandbytes=bitsandbytes.__version__)
    else:
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg)
        torch.set_default_dtype(torch.float32)
        extra = {}
    model.config.use_cache = False
    lora = peft.LoraConfig(r=c["r"], lora_alpha=c["alpha"], target_modules=c["targets"], lora_dropout=0.0,
                           bias="none", task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    up.train_and_report(a, name, model, params, cfg, dict(
        mode="peft", r=c["r"], alpha=c["alpha"], targets=c["targets"], four_bit=c["four_bit"],
        gradient_checkpointing=False, peft=peft.__version__, transformers=transformers.__version__, **extra))


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", choices=sorted(CONFIGS))
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--shape", default="llama2-7b", choices=sorted(up.SHAPES))
    ap.add_argument("--bs", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--model-root", default="/tmp")
    a = ap.parse_args()
    a.smoke, a.tiny = False, False
    run(a, a.config, CONFIGS[a.config])


if __name__ == "__main__":
    main()
