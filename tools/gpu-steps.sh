#!/usr/bin/env bash
# Compiles, here (where MLIR and nvcc are), the steps that CudaStepTest
# trains on a GPU host, and copies the oracle data they train against, into
# one directory that travels to the GPU host (default: gpu-steps/, ignored
# by git). There: QLORA_GPU_STEPS=gpu-steps QLORA_ORACLE_DIR=gpu-steps/oracle
# bash tools/gpu-check.sh. The fixtures are those of test/train/CudaStepTest.cpp.
# Usage: [BENCH=1] tools/gpu-steps.sh [OUT_DIR [BUILD_DIR]]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/gpu-steps}"
build="${2:-$root/build}"
oracle="${QLORA_ORACLE_DIR:-$root/../shared/oracle}"
compile="$build/bin/qlora-compile"
[[ -x "$compile" ]] || { echo "gpu-steps.sh: build first ($compile)" >&2; exit 2; }
rm -rf "$out"
mkdir -p "$out/oracle"
cp -r "$oracle/tiny-llama" "$oracle/tiny-llama-adapter-init" \
  "$oracle/tiny-llama-adapter-step8" "$oracle/tiny-llama-batch.safetensors" \
  "$oracle/tiny-llama-grads-step1.safetensors" \
  "$oracle/tiny-llama-trajectory.json" "$out/oracle/"
"$build/bin/qlora-quantize" --demo "$out/models" >/dev/null

step() { # name model target options...
  local name="$1" model="$2" target="$3"
  shift 3
  "$compile" --model_name_or_path "$model" --output_dir "$out/$name" \
    --target "$target" --quiet "$@"
  echo "compiled $out/$name"
}
demo="$out/models/tiny-llama"
step oracle-cuda "$oracle/tiny-llama" cuda --per_device_train_batch_size=2 \
  --max_seq_length=64 --r=8 --lora_alpha=16 --target_modules=all-linear \
  --max_grad_norm=0
step demo-cuda "$demo" cuda --per_device_train_batch_size=4 \
  --max_seq_length=128 --r=8 --lora_alpha=16 --target_modules=all-linear
step demo-cpu "$demo" cpu --per_device_train_batch_size=4 \
  --max_seq_length=128 --r=8 --lora_alpha=16 --target_modules=all-linear
step seed-cuda "$demo" cuda --per_device_train_batch_size=4 \
  --max_seq_length=128 --r=8 --lora_alpha=32 --lora_dropout=0.05 \
  --target_modules=q_proj,k_proj,v_proj,o_proj
step seed-cuda-remat "$demo" cuda --per_device_train_batch_size=4 \
  --max_seq_length=128 --r=8 --lora_alpha=32 --lora_dropout=0.05 \
  --target_modules=q_proj,k_proj,v_proj,o_proj --max_memory=296MiB
step dropout-cuda "$demo" cuda --per_device_train_batch_size=4 \
  --max_seq_length=128 --r=8 --lora_alpha=16 --lora_dropout=0.05
step dropout-cuda-offload "$demo" cuda --per_device_train_batch_size=4 \
  --max_seq_length=128 --r=8 --lora_alpha=16 --lora_dropout=0.05 \
  --max_memory=295.9MiB

# With BENCH=1, also the steps qlora-bench step times (bare configs, random
# weights on the GPU): the Llama-2-7B shape at 4 x 2048 with r 16 on every
# linear layer (also under 20 GiB, 8 GiB and Unsloth's 6.1 GiB budgets), the seed
# configuration, the Llama-3-8B shape (also under Unsloth's 8 GiB), and the
# Llama-2-70B shape at 1 x 2048
# under 48 GiB.
if [[ "${BENCH:-0}" == 1 ]]; then
  bench() { # name options...
    local name="$1"
    shift
    "$compile" --output_dir "$out/bench-$name" --target cuda --quiet \
      --per_device_train_batch_size=4 --max_seq_length=2048 "$@"
    rm -f "$out/bench-$name/model.mlir" "$out/bench-$name/train_step.mlir"
    echo "compiled $out/bench-$name"
  }
  bench llama2-7b-r16 --config=llama2-7b --r=16 --lora_alpha=32
  bench llama2-7b-seed --config=llama2-7b --r=8 --lora_alpha=32 \
    --lora_dropout=0.05 --target_modules=q_proj,k_proj,v_proj,o_proj
  bench llama3-8b-r16 --config=llama3-8b --r=16 --lora_alpha=32
  bench llama2-7b-r16-20gib --config=llama2-7b --r=16 --lora_alpha=32 \
    --max_memory=20GiB
  bench llama2-7b-r16-8gib --config=llama2-7b --r=16 --lora_alpha=32 \
    --max_memory=8GiB
  bench llama2-7b-r16-6.1gib --config=llama2-7b --r=16 --lora_alpha=32 \
    --max_memory=6.1GiB
  bench llama3-8b-r16-8gib --config=llama3-8b --r=16 --lora_alpha=32 \
    --max_memory=8GiB
  bench llama2-70b-48gib --config=llama2-70b --r=16 --lora_alpha=32 \
    --per_device_train_batch_size=1 --max_memory=48GiB
fi
