//===- RopeScaling.cpp - The rotary embedding's inverse frequencies ---------===//
#include "runtime/RopeScaling.h"

#include <cmath>

namespace qlora {

std::vector<float> ropeInverseFrequencies(int64_t headDim, float theta,
                                          const RopeScaling &scaling) {
  const int64_t half = headDim / 2;
  std::vector<float> invFreq(size_t(half > 0 ? half : 0));
  for (int64_t i = 0; i < half; ++i) {
    // torch: arange(0, dim, 2).float() / dim, then base ** that, then 1 /.
    float exponent = float(2 * i) / float(headDim);
    invFreq[size_t(i)] = 1.0f / std::pow(theta, exponent);
  }
  if (!scaling.enabled())
    return invFreq;
  // transformers' _compute_llama3_parameters, tensor ops in fp32 with the
  // Python scalars rounded to fp32 where they meet a tensor: wavelengths
  // longer than the low-frequency bound are divided by `factor`, shorter
  // than the high-frequency bound kept, and the band between blended.
  const double context = double(scaling.originalMaxPositionEmbeddings);
  const float lowWavelen = float(context / double(scaling.lowFreqFactor));
  const float highWavelen = float(context / double(scaling.highFreqFactor));
  const float twoPi = float(2.0 * M_PI);
  const float band =
      float(double(scaling.highFreqFactor) - double(scaling.lowFreqFactor));
  for (float &freq : invFreq) {
    // 2π / inv_freq is reciprocal(inv_freq) * 2π for a tensor.
    float wavelen = (1.0f / freq) * twoPi;
    float scaled = wavelen > lowWavelen ? freq / scaling.factor : freq;
    bool medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    if (medium) {
      float smooth =
          ((1.0f / wavelen) * float(context) - scaling.lowFreqFactor) / band;
      scaled = (1.0f - smooth) * scaled / scaling.factor + smooth * scaled;
    }
    freq = scaled;
  }
  return invFreq;
}

} // namespace qlora
