//===- L2Flush.h - Emptying the GPU's L2 cache before a timed run -----------===//
//
// Every timed run starts with a cold L2 (50 MiB on an H200), so that a
// figure is a kernel's own DRAM traffic and not a cache hit. There are two
// ways to push the previous run's data out, and they charge the timed kernel
// differently:
//  - dirty: write a 256 MiB buffer (cudaMemsetAsync; what Triton's do_bench
//    and nvbench do). The L2 is left full of written lines, and the timed
//    kernel pays for writing them back as it evicts them: up to 50 MiB of
//    extra DRAM traffic, a large share of a 4096x4096 NF4 product's 8 MiB.
//  - clean: read the buffer (a sum over it). The L2 is left full of clean
//    lines, which are dropped for free: the kernel pays only for its own
//    bytes, which is what a bandwidth figure claims to measure.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/cuda/DeviceBuffer.h"

#include <string>

namespace qlora::bench {

class L2Flush {
public:
  enum class Mode { Dirty, Clean };

  /// "dirty" or "clean"; anything else is an error naming both.
  static Expected<Mode> parseMode(const std::string &text);
  static const char *name(Mode mode);

  /// Allocates the flush buffer (and, for a clean flush, fills it once).
  static Expected<L2Flush> create(Mode mode);

  /// Enqueues the flush on `stream`.
  Status run(cudaStream_t stream) const;

  Mode mode() const { return mode_; }

private:
  L2Flush(Mode mode, cuda::DeviceBuffer<float> buffer,
          cuda::DeviceBuffer<double> partials, cuda::DeviceBuffer<float> sum)
      : mode_(mode), buffer_(std::move(buffer)),
        partials_(std::move(partials)), sum_(std::move(sum)) {}

  Mode mode_;
  cuda::DeviceBuffer<float> buffer_;
  // Where the clean flush's reduction writes: a few KiB of dirty lines.
  cuda::DeviceBuffer<double> partials_;
  cuda::DeviceBuffer<float> sum_;
};

} // namespace qlora::bench
