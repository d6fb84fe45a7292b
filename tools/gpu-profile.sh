#!/usr/bin/env bash
# Nsight Compute on one launch of one kernel inside `qlora-bench kernels`
# (4096x4096 weights), on a GPU host with CUDA; builds like gpu-check.sh.
# Usage: tools/gpu-profile.sh KERNEL_REGEX [BUILD_DIR [NCU_OPTION...]]
# for example `tools/gpu-profile.sh gemvKernel build-gpu --export gemv`.
# The first matching launch after the warm-ups is profiled with the speed of
# light, memory, warp-state and source-counter sections.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kernel="$1"
build="${2:-$root/build-gpu}"
cmake -G Ninja -S "$root" -B "$build" -DQLORA_ENABLE_COMPILER=OFF \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="80;90a" >/dev/null
cmake --build "$build" -j "$(nproc)" --target qlora-bench
ncu --kernel-name "regex:$kernel" --launch-skip 3 --launch-count 1 \
  --section SpeedOfLight --section MemoryWorkloadAnalysis \
  --section WarpStateStats --section SourceCounters --section Occupancy \
  "${@:3}" \
  "$build/bin/qlora-bench" kernels --shapes 4096x4096 --repeats 1
