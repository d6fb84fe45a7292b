//===- Dropout.h - LoRA dropout masks from a counter-based RNG --------------===//
//
// PEFT applies nn.Dropout(p) to the input of each LoRA branch. Here the mask
// is a pure function of (seed, stream, element) through Philox4x32-10 (Salmon
// et al., "Parallel random numbers: as easy as 1, 2, 3"): the host draws a
// seed per micro-batch, each branch of the step has its own stream, and the
// backward redraws the very mask the forward used instead of storing it.
// The same function runs on the cpu and on the GPU, so both backends drop
// the same elements.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define QLORA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define QLORA_HOST_DEVICE inline
#endif

namespace qlora::dropout {

struct Philox4 {
  uint32_t x[4];
};

/// Philox4x32-10 of `counter` under the key (k0, k1).
QLORA_HOST_DEVICE Philox4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2,
                                     uint32_t c3, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(kM0) * c0, p1 = uint64_t(kM1) * c2;
    uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return {{c0, c1, c2, c3}};
}

/// Whether element `index` of stream `stream` is dropped at rate `p`: one
/// Philox block per 4 elements (counter = index / 4 and the stream, key =
/// the seed), its words compared as 24-bit uniforms against p.
QLORA_HOST_DEVICE bool dropped(uint32_t seed, uint32_t stream, uint64_t index,
                               float p) {
  uint64_t block = index / 4;
  Philox4 bits = philox4x32(uint32_t(block), uint32_t(block >> 32), stream, 0u,
                            seed, 0x51ed270bu);
  uint32_t word = bits.x[index % 4];
  return float(word >> 8) * (1.0f / 16777216.0f) < p;
}

} // namespace qlora::dropout
