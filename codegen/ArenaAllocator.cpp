//===- ArenaAllocator.cpp - Static offsets for buffers with known lifetimes ===//
#include "codegen/ArenaAllocator.h"

#include <algorithm>
#include <map>
#include <numeric>

namespace mlir::qlora {

size_t ArenaAllocator::add(uint64_t bytes, int64_t first, int64_t last) {
  uint64_t rounded = (bytes + alignment_ - 1) / alignment_ * alignment_;
  buffers_.push_back(Buffer{std::max<uint64_t>(rounded, alignment_), first,
                            std::max(first, last)});
  return buffers_.size() - 1;
}

uint64_t ArenaAllocator::assign() {
  std::vector<size_t> order(buffers_.size());
  std::iota(order.begin(), order.end(), 0);
  // Larger buffers first among those born at the same point packs tighter.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (buffers_[a].first != buffers_[b].first)
      return buffers_[a].first < buffers_[b].first;
    return buffers_[a].bytes > buffers_[b].bytes;
  });
  uint64_t total = 0;
  std::vector<size_t> placed;
  for (size_t index : order) {
    Buffer &buffer = buffers_[index];
    // Occupied intervals of buffers whose lifetimes overlap this one.
    std::vector<std::pair<uint64_t, uint64_t>> busy;
    for (size_t other : placed) {
      const Buffer &o = buffers_[other];
      if (o.last >= buffer.first && o.first <= buffer.last)
        busy.emplace_back(o.offset, o.offset + o.bytes);
    }
    std::sort(busy.begin(), busy.end());
    uint64_t candidate = 0;
    for (const auto &[begin, end] : busy) {
      if (candidate + buffer.bytes <= begin)
        break;
      candidate = std::max(candidate, end);
    }
    buffer.offset = candidate;
    total = std::max(total, candidate + buffer.bytes);
    placed.push_back(index);
  }
  return total;
}

std::pair<uint64_t, int64_t> ArenaAllocator::peak() const {
  std::map<int64_t, int64_t> delta;
  for (const Buffer &buffer : buffers_) {
    delta[buffer.first] += int64_t(buffer.bytes);
    delta[buffer.last + 1] -= int64_t(buffer.bytes);
  }
  int64_t live = 0, peak = 0, at = 0;
  for (const auto &[point, change] : delta) {
    live += change;
    if (live > peak) {
      peak = live;
      at = point;
    }
  }
  return {uint64_t(peak), at};
}

} // namespace mlir::qlora
