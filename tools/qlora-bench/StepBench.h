//===- StepBench.h - `qlora-bench step`: a compiled step's figures ----------===//
#pragma once

#include <cstdint>
#include <string>

namespace qlora::bench {

struct StepBenchOptions {
  std::string stepDir;
  int64_t warmup = 3, steps = 10;
  int64_t gradientAccumulationSteps = 1;
  bool profile = false;
};

/// Runs a cuda step compiled by qlora-compile (from a checkpoint or a bare
/// --config) on random weights made on the GPU and random tokens, and prints
/// tokens/s (the median optimizer step after warm-up), model TFLOP/s as
/// ../shared/PEERS.md counts them, the device memory the process holds
/// beside the plan's arena, and with `profile` the time of each kernel of
/// the step. Returns a process exit code.
int runStepBench(const StepBenchOptions &options);

} // namespace qlora::bench
