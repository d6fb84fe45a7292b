//===- NormRopeTest.cpp - Embedding, RMSNorm and rope against float64 -------===//
#include "KernelTestUtil.h"

#include "runtime/cpu/Kernels.h"

#include <cstring>

namespace qlora {
namespace cpu {
namespace {

using namespace testing;

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

TEST(EmbeddingTest, GathersRows) {
  const int64_t vocab = 1031, hidden = 256, tokens = 37;
  std::vector<float> table = randomVector(size_t(vocab * hidden), 1);
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < tokens; ++t)
    ids.push_back(int32_t((t * 977 + 5) % vocab));
  ids[3] = 0;
  ids[4] = int32_t(vocab - 1);
  std::vector<float> out = poisoned(size_t(tokens * hidden));
  Status status = embedding(table.data(), ids.data(), tokens, hidden, vocab, out.data());
  ASSERT_TRUE(status) << status.message();
  for (int64_t t = 0; t < tokens; ++t)
    EXPECT_EQ(0, std::memcmp(out.data() + t * hidden,
                             table.data() + int64_t(ids[size_t(t)]) * hidden,
                             hidden * sizeof(float)))
        << "token " << t;
}

TEST(EmbeddingTest, RefusesIdsOutsideTheVocabularyNamingThem) {
  const int64_t vocab = 100, hidden = 8;
  std::vector<float> table = randomVector(size_t(vocab * hidden), 2);
  for (int32_t bad : {100, -1, 12345}) {
    std::vector<int32_t> ids = {1, 2, bad, 3};
    std::vector<float> out = poisoned(ids.size() * hidden);
    Status status = embedding(table.data(), ids.data(), int64_t(ids.size()),
                              hidden, vocab, out.data());
    ASSERT_FALSE(status);
    EXPECT_NE(status.message().find("token id " + std::to_string(bad)),
              std::string::npos) << status.message();
    EXPECT_NE(status.message().find("position 2"), std::string::npos)
        << status.message();
    for (float value : out) // nothing written on failure
      EXPECT_TRUE(std::isnan(value));
  }
}

//===----------------------------------------------------------------------===//
// RMSNorm
//===----------------------------------------------------------------------===//

std::vector<double> rmsNormReference(const std::vector<double> &x,
                                     const std::vector<double> &w, int64_t rows,
                                     int64_t hidden, double eps) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (int64_t i = 0; i < hidden; ++i)
      sum += x[size_t(r * hidden + i)] * x[size_t(r * hidden + i)];
    double inv = 1.0 / std::sqrt(sum / double(hidden) + eps);
    for (int64_t i = 0; i < hidden; ++i)
      y[size_t(r * hidden + i)] = w[size_t(i)] * x[size_t(r * hidden + i)] * inv;
  }
  return y;
}

struct NormShape {
  int64_t rows, hidden;
  float eps;
};

class RmsNormTest : public ::testing::TestWithParam<NormShape> {};

TEST_P(RmsNormTest, ForwardMatchesFloat64) {
  auto [rows, hidden, eps] = GetParam();
  std::vector<float> x = randomVector(size_t(rows * hidden), 1, -2.0f, 2.0f);
  std::vector<float> w = randomVector(size_t(hidden), 2, 0.5f, 1.5f);
  std::vector<double> expected = rmsNormReference(toDouble(x), toDouble(w), rows, hidden, eps);
  std::vector<float> y = poisoned(x.size());
  rmsNorm(x.data(), w.data(), rows, hidden, eps, y.data());
  EXPECT_LT(relativeError(y, expected), 1e-5);
  // In place (y aliasing x) is allowed.
  std::vector<float> inPlace = x;
  rmsNorm(inPlace.data(), w.data(), rows, hidden, eps, inPlace.data());
  EXPECT_EQ(0, std::memcmp(inPlace.data(), y.data(), y.size() * sizeof(float)));
}

TEST_P(RmsNormTest, BackwardMatchesFloat64AndFiniteDifferences) {
  auto [rows, hidden, eps] = GetParam();
  std::vector<float> x = randomVector(size_t(rows * hidden), 3, -2.0f, 2.0f);
  std::vector<float> w = randomVector(size_t(hidden), 4, 0.5f, 1.5f);
  std::vector<float> dy = randomVector(x.size(), 5);
  std::vector<float> dx = poisoned(x.size());
  rmsNormBackward(x.data(), w.data(), dy.data(), rows, hidden, eps, dx.data());

  std::vector<double> expected(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x.data() + r * hidden, *dyr = dy.data() + r * hidden;
    double sum = 0.0, dot = 0.0;
    for (int64_t i = 0; i < hidden; ++i) {
      sum += double(xr[i]) * xr[i];
      dot += double(w[size_t(i)]) * dyr[i] * xr[i];
    }
    double inv = 1.0 / std::sqrt(sum / double(hidden) + eps);
    for (int64_t i = 0; i < hidden; ++i)
      expected[size_t(r * hidden + i)] =
          inv * w[size_t(i)] * dyr[i] -
          xr[i] * inv * inv * inv * dot / double(hidden);
  }
  EXPECT_LT(relativeError(dx, expected), 1e-5);
  std::vector<double> wd = toDouble(w);
  expectFiniteDifferences(
      "dx", dx.data(), toDouble(x),
      [&](const std::vector<double> &xd) {
        return project(rmsNormReference(xd, wd, rows, hidden, eps), dy);
      },
      8, 6);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormTest,
                         ::testing::Values(NormShape{37, 256, 1e-6f},
                                           NormShape{64, 688, 1e-5f},
                                           NormShape{3, 7, 1e-6f}));

//===----------------------------------------------------------------------===//
// Rope
//===----------------------------------------------------------------------===//

struct RopeShape {
  int64_t batch, seq, heads, headDim;
  float theta;
  RopeScaling scaling = {};
};

void PrintTo(const RopeShape &s, std::ostream *os) {
  *os << "batch " << s.batch << " seq " << s.seq << " heads " << s.heads
      << " headDim " << s.headDim << " theta " << s.theta
      << (s.scaling.enabled() ? " llama3" : "");
}

/// The rotation in float64, from the angles torch computes in fp32
/// (inv_freq = 1 / theta^(2i/d) and pos * inv_freq, both rounded to fp32).
/// sign = -1 applies the inverse rotation.
std::vector<double> ropeReference(const std::vector<double> &x,
                                  const RopeShape &s, double sign = 1.0) {
  std::vector<double> y(x.size());
  int64_t half = s.headDim / 2, width = s.heads * s.headDim;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t pos = 0; pos < s.seq; ++pos)
      for (int64_t h = 0; h < s.heads; ++h) {
        size_t base = size_t((b * s.seq + pos) * width + h * s.headDim);
        for (int64_t i = 0; i < half; ++i) {
          float invFreq =
              s.scaling.enabled()
                  ? ropeInverseFrequencies(s.headDim, s.theta,
                                           s.scaling)[size_t(i)]
                  : 1.0f / std::pow(s.theta, float(2 * i) / float(s.headDim));
          double angle = double(float(pos) * invFreq);
          double c = std::cos(angle), sn = sign * std::sin(angle);
          double x1 = x[base + size_t(i)], x2 = x[base + size_t(i + half)];
          y[base + size_t(i)] = x1 * c - x2 * sn;
          y[base + size_t(i + half)] = x2 * c + x1 * sn;
        }
      }
  return y;
}

class RopeTest : public ::testing::TestWithParam<RopeShape> {};

TEST_P(RopeTest, ForwardMatchesFloat64) {
  const RopeShape &s = GetParam();
  size_t n = size_t(s.batch * s.seq * s.heads * s.headDim);
  std::vector<float> x = randomVector(n, 1);
  std::vector<float> y = poisoned(n);
  rope(x.data(), s.batch, s.seq, s.heads, s.headDim, s.theta, y.data(),
       s.scaling);
  EXPECT_LT(relativeError(y, ropeReference(toDouble(x), s)), 1e-5);
}

TEST_P(RopeTest, BackwardMatchesFloat64AndFiniteDifferences) {
  const RopeShape &s = GetParam();
  size_t n = size_t(s.batch * s.seq * s.heads * s.headDim);
  std::vector<float> dy = randomVector(n, 2);
  std::vector<float> dx = poisoned(n);
  ropeBackward(dy.data(), s.batch, s.seq, s.heads, s.headDim, s.theta,
               dx.data(), s.scaling);
  EXPECT_LT(relativeError(dx, ropeReference(toDouble(dy), s, -1.0)), 1e-5);
  expectFiniteDifferences(
      "dx", dx.data(), toDouble(randomVector(n, 3)),
      [&](const std::vector<double> &xd) { return project(ropeReference(xd, s), dy); },
      8, 4);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeTest,
                         ::testing::Values(RopeShape{2, 64, 4, 64, 10000.0f},
                                           RopeShape{2, 37, 2, 64, 10000.0f},
                                           RopeShape{1, 37, 3, 16, 500000.0f},
                                           // Llama 3.1's scaling at its
                                           // head dim (frequencies from
                                           // RopeScalingTest's check).
                                           RopeShape{1, 300, 2, 128, 500000.0f,
                                                     {8.0f, 1.0f, 4.0f, 8192}}),
                         [](const ::testing::TestParamInfo<RopeShape> &info) {
                           const RopeShape &s = info.param;
                           return "b" + std::to_string(s.batch) + "_s" +
                                  std::to_string(s.seq) + "_h" +
                                  std::to_string(s.heads) + "_d" +
                                  std::to_string(s.headDim) +
                                  (s.scaling.enabled() ? "_llama3" : "");
                         });

} // namespace
} // namespace cpu
} // namespace qlora
