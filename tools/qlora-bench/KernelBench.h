//===- KernelBench.h - `qlora-bench kernels`: GPU figures -------------------===//
#pragma once

#include <cstdint>
#include <vector>

namespace qlora::bench {

/// Prints the GPU kernel table, each row beside bf16 cuBLAS on the same
/// shapes, measured in the same run. Returns a process exit code.
int runKernelBench(const std::vector<std::vector<int64_t>> &shapes,
                   int repeats);

} // namespace qlora::bench
