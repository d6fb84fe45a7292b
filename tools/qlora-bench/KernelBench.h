//===- KernelBench.h - `qlora-bench kernels`: GPU figures -------------------===//
#pragma once

#include "L2Flush.h"

#include <cstdint>
#include <vector>

namespace qlora::bench {

/// Prints the GPU kernel table, each row beside bf16 cuBLAS on the same
/// shapes, measured in the same run, each timed run after an L2 flush of
/// `flushMode`. Returns a process exit code.
int runKernelBench(const std::vector<std::vector<int64_t>> &shapes,
                   int repeats, L2Flush::Mode flushMode);

} // namespace qlora::bench
