#!/usr/bin/env bash
# Runs a command that reads the oracle data, or skips (exit 77, and a line
# ctest's SKIP_REGULAR_EXPRESSION matches) where ../shared/oracle is absent.
# usage: with-oracle.sh ORACLE_DIR COMMAND [ARG...]
set -euo pipefail
oracle="$1"
shift
if [[ ! -d "$oracle/tiny-llama" ]]; then
  echo "oracle data not found at $oracle; skipping"
  exit 77
fi
exec "$@"
