#!/usr/bin/env bash
# On a GPU host with CUDA but without LLVM (the device machine): builds the
# runtime, the GPU tests and qlora-bench, runs the tests labelled `gpu`, then
# the kernel benchmark and the step benchmark. CudaStepTest trains steps
# compiled elsewhere: tools/gpu-steps.sh fills gpu-steps/ (with the oracle
# data they train against), which this script uses when it is there.
# Usage: tools/gpu-check.sh [BUILD_DIR [BENCH_OPTION...]]
# (for example `tools/gpu-check.sh build-gpu --l2_flush dirty`).
# Environment: SANITIZE=1 also runs every GPU test binary under
# compute-sanitizer's memcheck and racecheck; BENCH=0 skips the benchmarks;
# QLORA_GPU_STEPS and QLORA_ORACLE_DIR point elsewhere.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build-gpu}"
if [[ -d "$root/gpu-steps" ]]; then
  export QLORA_GPU_STEPS="${QLORA_GPU_STEPS:-$root/gpu-steps}"
  export QLORA_ORACLE_DIR="${QLORA_ORACLE_DIR:-$root/gpu-steps/oracle}"
fi
cmake -G Ninja -S "$root" -B "$build" -DQLORA_ENABLE_COMPILER=OFF \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="80;90a" >/dev/null
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" -L gpu --output-on-failure
if [[ "${SANITIZE:-0}" == 1 ]]; then
  for test in "$build"/bin/Cuda*Test; do
    for tool in memcheck racecheck; do
      echo "== compute-sanitizer --tool $tool $(basename "$test")"
      compute-sanitizer --tool "$tool" --error-exitcode 1 "$test" \
        --gtest_brief=1
    done
  done
fi
if [[ "${BENCH:-1}" != 0 ]]; then
  "$build/bin/qlora-bench" kernels --repeats 20 "${@:2}"
  for step in "${QLORA_GPU_STEPS:-$root/gpu-steps}"/bench-*; do
    [[ -d "$step" ]] && "$build/bin/qlora-bench" step --step_dir "$step"
  done
fi
