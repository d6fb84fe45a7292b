//===- AsyncCopy.cuh - cp.async from global to shared memory (sm_80+) -------===//
//
// Private to runtime/cuda: the PTX wrappers the tiled kernels (attention,
// the fused NF4 product) share to fill shared-memory tiles asynchronously.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>

namespace qlora::cuda::detail {

/// The shared-state-space address of a pointer into shared memory.
__device__ __forceinline__ uint32_t sharedAddress(const void *pointer) {
  return uint32_t(__cvta_generic_to_shared(pointer));
}

/// 16 bytes global -> shared, asynchronously; zeros when !valid (then no
/// byte of `src` is read).
__device__ __forceinline__ void cpAsync16(void *dst, const void *src,
                                          bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                   sharedAddress(dst)),
               "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}

__device__ __forceinline__ void cpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/// Waits until at most N of this thread's committed groups are in flight.
template <int N> __device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

} // namespace qlora::cuda::detail
