//===- Timer.h - CUDA-event timings for `qlora-bench kernels` ---------------===//
//
// Two ways to time a kernel with a cold L2, for two questions:
//  - afterFlush: one run after an L2 flush (L2Flush.h), between two events.
//    The figure of a kernel that runs once, with its inputs in DRAM; for a
//    kernel of a few microseconds it also holds the event and launch
//    latency.
//  - backToBack: many runs captured in one CUDA graph, each over the next of
//    several copies of its weight, so many that their bytes exceed the L2
//    twice and every run finds its weight in DRAM. The graph's time divided
//    by the runs: the steady cost of one layer in a decoding step, without
//    the launch gaps (what a ≤ 5 µs target is about).
//
//===----------------------------------------------------------------------===//
#pragma once

#include "L2Flush.h"

#include <cuda_runtime.h>

#include <functional>

namespace qlora::bench {

class Timer {
public:
  /// Creates the stream every timed body must enqueue on, and the flush.
  static Expected<Timer> create(L2Flush::Mode mode);
  ~Timer();
  Timer(Timer &&other) noexcept;
  Timer(const Timer &) = delete;
  Timer &operator=(const Timer &) = delete;
  Timer &operator=(Timer &&) = delete;

  cudaStream_t stream() const { return stream_; }

  /// Median milliseconds of `body` over `repeats` runs after 3 warm-ups,
  /// each run after an L2 flush.
  Expected<double> afterFlush(int repeats,
                              const std::function<Status()> &body) const;

  /// Median milliseconds per run of a graph of `runs` back-to-back calls
  /// body(0), ..., body(runs - 1), over `repeats` replays. body(i) must use
  /// copy i % copies of its data (the caller sizes the copies with
  /// copiesToExceedL2).
  Expected<double> backToBack(int repeats, int runs,
                              const std::function<Status(int)> &body) const;

  /// How many copies of `bytes` exceed the L2 twice (at least 2).
  int copiesToExceedL2(double bytes) const;

private:
  Timer(L2Flush flush, cudaStream_t stream, cudaEvent_t start,
        cudaEvent_t stop, int l2Bytes)
      : flush_(std::move(flush)), stream_(stream), start_(start), stop_(stop),
        l2Bytes_(l2Bytes) {}
  /// Milliseconds between the two events after `enqueue`.
  Expected<double> timeOnce(const std::function<Status()> &enqueue) const;

  L2Flush flush_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  int l2Bytes_ = 0;
};

} // namespace qlora::bench
