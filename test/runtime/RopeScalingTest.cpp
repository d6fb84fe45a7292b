//===- RopeScalingTest.cpp - RoPE's inverse frequencies ---------------------===//
//
// ropeInverseFrequencies against the same definitions evaluated here in
// float64: the default frequencies, and Llama 3's three regimes (kept above
// the high-frequency bound, divided by `factor` below the low-frequency
// bound, blended between).
//
//===----------------------------------------------------------------------===//
#include "runtime/RopeScaling.h"

#include <gtest/gtest.h>

#include <cmath>

namespace qlora {
namespace {

double defaultFrequency(int64_t i, int64_t headDim, double theta) {
  return 1.0 / std::pow(theta, double(2 * i) / double(headDim));
}

TEST(RopeScaling, DefaultFrequenciesAreTheBasesPowers) {
  std::vector<float> freq = ropeInverseFrequencies(64, 10000.0f);
  ASSERT_EQ(freq.size(), 32u);
  for (int64_t i = 0; i < 32; ++i)
    EXPECT_NEAR(freq[size_t(i)], defaultFrequency(i, 64, 10000.0),
                1e-6 * defaultFrequency(i, 64, 10000.0))
        << i;
}

TEST(RopeScaling, Llama3KeepsHighDividesLowAndBlendsTheBand) {
  // Llama 3.1's values.
  const RopeScaling scaling{8.0f, 1.0f, 4.0f, 8192};
  const int64_t headDim = 128;
  const double theta = 500000.0;
  std::vector<float> freq =
      ropeInverseFrequencies(headDim, float(theta), scaling);
  ASSERT_EQ(freq.size(), 64u);
  int kept = 0, divided = 0, blended = 0;
  for (int64_t i = 0; i < 64; ++i) {
    double base = defaultFrequency(i, headDim, theta);
    double wavelen = 2.0 * M_PI / base;
    double expected;
    if (wavelen < 8192.0 / 4.0) {
      expected = base;
      ++kept;
    } else if (wavelen > 8192.0 / 1.0) {
      expected = base / 8.0;
      ++divided;
    } else {
      double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      expected = (1.0 - smooth) * base / 8.0 + smooth * base;
      ++blended;
    }
    EXPECT_NEAR(freq[size_t(i)], expected, 1e-5 * expected) << i;
  }
  // The head dimension spans all three regimes.
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

TEST(RopeScaling, WithoutAnOriginalContextNothingIsScaled) {
  RopeScaling none{8.0f, 1.0f, 4.0f, 0};
  EXPECT_FALSE(none.enabled());
  EXPECT_EQ(ropeInverseFrequencies(128, 500000.0f, none),
            ropeInverseFrequencies(128, 500000.0f));
}

} // namespace
} // namespace qlora
