//===- GridStride.h - Launch sizing for the grid-stride CUDA kernels ------===//
//
// Private to runtime/cuda. The memory-bound kernels stride over their items,
// taking 16-byte vectors where every pointer allows; these host helpers pick
// the vector path and the grid, one definition for all of them.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>

namespace qlora::cuda::detail {

/// Whether every pointer is 16-byte aligned (a uint4 / float4 load or store).
inline bool aligned16(std::initializer_list<const void *> pointers) {
  for (const void *p : pointers)
    if ((reinterpret_cast<uintptr_t>(p) & 15u) != 0)
      return false;
  return true;
}

/// Enough blocks of `threadsPerBlock` to give every thread one item, capped
/// at 2^16 blocks: the kernels stride over the rest.
inline unsigned gridStrideBlocks(int64_t items, int threadsPerBlock) {
  return unsigned(std::clamp<int64_t>(
      (items + threadsPerBlock - 1) / threadsPerBlock, 1, 1 << 16));
}

} // namespace qlora::cuda::detail
