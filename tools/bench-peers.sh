#!/usr/bin/env bash
# On the GPU host: our compiled steps and the peers, same card, same shapes,
# one run, then the ratios (tools/peers/summarize.py). Needs, carried with
# the tree: gpu-steps/ (BENCH=1 tools/gpu-steps.sh), build-gpu/ built by
# tools/gpu-check.sh, .whl/ (../shared/peers/unsloth_wheels.sh) and peers/
# (a copy of ../shared/peers). Environment: BUDGET (seconds for the peers,
# default 420), CONFIGS (unsloth_peer.py's configurations), STEPS (our step
# directories to time first; default the 7B r16 and seed steps),
# PEFT_CONFIGS (tools/peers/peft_peer.py's; empty skips them).
# Usage: tools/bench-peers.sh [LOG]
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log="${1:-$root/bench-peers.log}"
cd "$root"
: > "$log"
for step in ${STEPS:-gpu-steps/bench-llama2-7b-r16 gpu-steps/bench-llama2-7b-seed}; do
  build-gpu/bin/qlora-bench step --step_dir "$step" 2>&1 | tee -a "$log"
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 peers/unsloth_peer.py all --budget "${BUDGET:-420}" \
  --configs "${CONFIGS:-unsloth_r16_all_nogc,unsloth_r16_all_gc,unsloth_seed_r8_qkvo_nogc,torchao_r16_all_nogc_compiled}" \
  2>&1 | tee -a "$log" | grep -E "^RESULT|---"
for config in ${PEFT_CONFIGS-peft_bnb_r16_all_nogc peft_bf16_r16_all_nogc}; do
  timeout 150 python3 tools/peers/peft_peer.py "$config" 2>&1 | tee -a "$log" |
    grep -E "^RESULT|Error" | tail -2
done
python3 tools/peers/summarize.py "$log"
