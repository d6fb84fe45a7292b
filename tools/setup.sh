#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds the project, and runs a job.
#
#   tools/setup.sh demo    build, then compile and fine-tune the built-in tiny
#                          Llama on the built-in text, writing a PEFT adapter
#   tools/setup.sh test    build, then run every test (ctest: GoogleTest + lit)
#   tools/setup.sh build   install what is missing and build only
#
# Idempotent: packages already installed are not touched, an existing build
# directory is reused, and a second run only rebuilds what changed.
# Environment: QLORA_BUILD_DIR (default: build), QLORA_JOBS (default: nproc).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${QLORA_BUILD_DIR:-$root/build}"
jobs="${QLORA_JOBS:-$(nproc)}"
job="${1:-build}"

case "$job" in
  demo|test|build) ;;
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "setup.sh: unknown job '$job' (expected demo, test or build)" >&2; exit 2 ;;
esac

# Debian's packages for LLVM/MLIR 22 (in bookworm-security), the linker,
# the build tools and the libraries the runtime and its tests use.
packages=(
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools lld-22
  libzstd-dev libedit-dev zlib1g-dev libfmt-dev libgtest-dev libbenchmark-dev
  cmake ninja-build g++ python3
)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if ((${#missing[@]})); then
  echo "setup.sh: installing ${missing[*]}"
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# nvcc is part of the CUDA toolkit, not of Debian: use it where it is.
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

if [[ ! -f "$build/build.ninja" ]]; then
  cmake -G Ninja -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build" -j "$jobs"

case "$job" in
  demo)
    "$build/bin/qlora-train" --output_dir "$build/demo" --max_steps 300 \
      --learning_rate 3e-3 --lr_scheduler_type cosine --warmup_steps 10 \
      --per_device_train_batch_size 4 --max_seq_length 128 --logging_steps 25
    ;;
  test)
    cd "$build"
    ctest --output-on-failure -j "$jobs"
    ;;
esac
