//===- RopeScaling.h - The rotary embedding's inverse frequencies -----------===//
//
// The one computation of RoPE's inverse frequencies, for both backends'
// kernels (they rotate by pos * inv_freq[i] in fp32): transformers' default
// rope, and Llama 3's rope scaling (rope_type "llama3"), which divides the
// low frequencies by `factor` and blends the band between low_freq_factor
// and high_freq_factor, in fp32 as transformers computes it.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <vector>

namespace qlora {

/// Llama 3's rope scaling; originalMaxPositionEmbeddings 0 means none.
struct RopeScaling {
  float factor = 1.0f;
  float lowFreqFactor = 1.0f;
  float highFreqFactor = 4.0f;
  int64_t originalMaxPositionEmbeddings = 0;

  bool enabled() const { return originalMaxPositionEmbeddings > 0; }
};

/// inv_freq[i] for i < headDim / 2: 1 / theta^(2i / headDim), then the
/// scaling.
std::vector<float> ropeInverseFrequencies(int64_t headDim, float theta,
                                          const RopeScaling &scaling = {});

} // namespace qlora
