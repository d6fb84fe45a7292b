#!/usr/bin/env bash
# qlora-quantize on the oracle's tiny Llama must write the very checkpoint
# that transformers + bitsandbytes saved (the whole file, byte for byte).
# usage: quantize-oracle.sh QLORA_QUANTIZE ORACLE_DIR SCRATCH_DIR
# (run through with-oracle.sh, which skips where the oracle is absent)
set -euo pipefail
quantize="$1" oracle="$2" scratch="$3"
rm -rf "$scratch"
"$quantize" "$oracle/tiny-llama" "$scratch" --quiet
cmp "$scratch/model.safetensors" "$oracle/tiny-llama-bnb-nf4/model.safetensors"
cmp "$scratch/generation_config.json" "$oracle/tiny-llama/generation_config.json"
grep -q '"quant_method": "bitsandbytes"' "$scratch/config.json"
echo "identical to $oracle/tiny-llama-bnb-nf4/model.safetensors"
