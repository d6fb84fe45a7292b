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
# cuDNN's fused attention (runtime/cuda/CudnnAttention.h): on a GPU host it
# usually comes with PyTorch's wheels (nvidia-cudnn-cu13), whose headers the
# build needs and whose library the steps dlopen.
if [[ -z "${CUDNN_INCLUDE_DIR:-}" ]] && command -v python3 >/dev/null; then
  cudnn_header="$(python3 -c '
import glob, site
for root in site.getsitepackages():
    for header in glob.glob(root + "/nvidia/**/cudnn_graph.h", recursive=True):
        print(header)
        raise SystemExit
' 2>/dev/null || true)"
  if [[ -n "$cudnn_header" ]]; then
    export CUDNN_INCLUDE_DIR="$(dirname "$cudnn_header")"
    cudnn_lib="$(dirname "$CUDNN_INCLUDE_DIR")/lib"
    [[ -d "$cudnn_lib" ]] && export LD_LIBRARY_PATH="$cudnn_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
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
