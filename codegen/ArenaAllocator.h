//===- ArenaAllocator.h - Static offsets for buffers with known lifetimes ---===//
//
// The memory plan of a compiled step: every temporary has a size and a live
// range [first, last] in program order, known ahead of time. Offsets are
// assigned greedily in order of definition, first fit among the gaps left by
// buffers already dead, so that the arena is close to the peak of live bytes.
// Buffers whose ranges overlap never share bytes; a kernel's inputs (last use
// at the kernel) and outputs (defined at the kernel) overlap by construction.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace mlir::qlora {

class ArenaAllocator {
public:
  explicit ArenaAllocator(uint64_t alignment = 64) : alignment_(alignment) {}

  /// Registers a buffer live from `first` to `last` (inclusive); returns its
  /// index for offsetOf().
  size_t add(uint64_t bytes, int64_t first, int64_t last);

  /// Keeps buffer `index` live through `last` too: a result written over an
  /// operand that dies where it is made.
  void extend(size_t index, int64_t last) {
    buffers_[index].last = std::max(buffers_[index].last, last);
  }

  /// Assigns offsets to every buffer added; returns the bytes needed.
  uint64_t assign();

  uint64_t offsetOf(size_t index) const { return buffers_[index].offset; }
  /// The largest sum of bytes live at one point (the lower bound), and the
  /// first point where it is reached.
  std::pair<uint64_t, int64_t> peak() const;
  uint64_t peakLiveBytes() const { return peak().first; }

private:
  struct Buffer {
    uint64_t bytes;
    int64_t first, last;
    uint64_t offset = 0;
  };
  uint64_t alignment_;
  std::vector<Buffer> buffers_;
};

} // namespace mlir::qlora
