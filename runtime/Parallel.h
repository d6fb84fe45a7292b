//===- Parallel.h - A small fork-join pool for CPU kernels ------------------===//
//
// CPU kernels (NF4 packing, later the reference backend) split their work into
// contiguous ranges. One process-wide pool serves them; its size defaults to
// the hardware concurrency and can be pinned with QLORA_NUM_THREADS.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <functional>

namespace qlora {

/// Number of worker threads that parallelFor uses (at least 1).
int numThreads();

/// Overrides the pool size; 0 restores the default. Not safe to call while a
/// parallelFor is running.
void setNumThreads(int threads);

/// Calls body(begin, end) on disjoint subranges covering [begin, end), each at
/// least `grain` long (except the last), using the pool. Returns when all
/// subranges are done. Runs inline when the range is small or when called
/// from inside another parallelFor.
void parallelFor(int64_t begin, int64_t end, int64_t grain,
                 const std::function<void(int64_t, int64_t)> &body);

} // namespace qlora
