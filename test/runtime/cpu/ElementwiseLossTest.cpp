//===- ElementwiseLossTest.cpp - SwiGLU, elementwise, loss and AdamW --------===//
#include "KernelTestUtil.h"

#include "runtime/Parallel.h"
#include "runtime/cpu/Kernels.h"

#include <cstring>

namespace qlora {
namespace cpu {
namespace {

using namespace testing;

//===----------------------------------------------------------------------===//
// SwiGLU
//===----------------------------------------------------------------------===//

std::vector<double> swigluReference(const std::vector<double> &gate,
                                    const std::vector<double> &up) {
  std::vector<double> out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i)
    out[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  return out;
}

TEST(SwigluTest, ForwardMatchesFloat64) {
  for (int64_t n : {int64_t(37 * 688), int64_t(5), int64_t(100000)}) {
    std::vector<float> gate = randomVector(size_t(n), 1, -6.0f, 6.0f);
    std::vector<float> up = randomVector(size_t(n), 2, -2.0f, 2.0f);
    std::vector<float> out = poisoned(size_t(n));
    swiglu(gate.data(), up.data(), n, out.data());
    EXPECT_LT(relativeError(out, swigluReference(toDouble(gate), toDouble(up))), 1e-5)
        << n;
    std::vector<float> inPlace = gate; // out may alias gate
    swiglu(inPlace.data(), up.data(), n, inPlace.data());
    EXPECT_EQ(0, std::memcmp(inPlace.data(), out.data(), out.size() * sizeof(float)));
  }
}

TEST(SwigluTest, BackwardMatchesFloat64AndFiniteDifferences) {
  const int64_t n = 37 * 688;
  std::vector<float> gate = randomVector(size_t(n), 3, -6.0f, 6.0f);
  std::vector<float> up = randomVector(size_t(n), 4, -2.0f, 2.0f);
  std::vector<float> dout = randomVector(size_t(n), 5);
  std::vector<float> dgate = poisoned(size_t(n)), dup = poisoned(size_t(n));
  swigluBackward(gate.data(), up.data(), dout.data(), n, dgate.data(), dup.data());
  std::vector<double> dgateExpected(static_cast<size_t>(n)),
      dupExpected(static_cast<size_t>(n));
  for (size_t i = 0; i < size_t(n); ++i) {
    double g = gate[i], s = 1.0 / (1.0 + std::exp(-g));
    dgateExpected[i] = double(dout[i]) * up[i] * s * (1.0 + g * (1.0 - s));
    dupExpected[i] = double(dout[i]) * g * s;
  }
  EXPECT_LT(relativeError(dgate, dgateExpected), 1e-5);
  EXPECT_LT(relativeError(dup, dupExpected), 1e-5);
  std::vector<double> gd = toDouble(gate), ud = toDouble(up);
  expectFiniteDifferences(
      "dgate", dgate.data(), gd,
      [&](const std::vector<double> &x) { return project(swigluReference(x, ud), dout); },
      8, 6);
  expectFiniteDifferences(
      "dup", dup.data(), ud,
      [&](const std::vector<double> &x) { return project(swigluReference(gd, x), dout); },
      8, 7);
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

TEST(ElementwiseTest, AddAccumulateScaleFill) {
  for (int64_t n : {int64_t(1), int64_t(37 * 256), int64_t(300001)}) {
    std::vector<float> a = randomVector(size_t(n), 1), b = randomVector(size_t(n), 2);
    std::vector<float> out = poisoned(size_t(n));
    add(a.data(), b.data(), n, out.data());
    std::vector<float> acc = a;
    accumulate(acc.data(), b.data(), n);
    std::vector<float> scaled = a;
    scale(scaled.data(), n, -0.375f);
    std::vector<float> filled = poisoned(size_t(n));
    fill(filled.data(), n, 2.5f);
    for (size_t i = 0; i < size_t(n); ++i) {
      ASSERT_EQ(out[i], a[i] + b[i]) << i;
      ASSERT_EQ(acc[i], a[i] + b[i]) << i;
      ASSERT_EQ(scaled[i], a[i] * -0.375f) << i;
      ASSERT_EQ(filled[i], 2.5f) << i;
    }
    std::vector<float> aliased = a; // out may alias an input
    add(aliased.data(), b.data(), n, aliased.data());
    EXPECT_EQ(0, std::memcmp(aliased.data(), out.data(), out.size() * sizeof(float)));
  }
}

TEST(ElementwiseTest, SumOfSquaresIsFloat64AndThreadIndependent) {
  const int64_t n = 1000003;
  std::vector<float> x = randomVector(size_t(n), 3);
  long double expected = 0.0L;
  for (float value : x)
    expected += (long double)value * value;
  double single = 0.0;
  setNumThreads(1);
  single = sumOfSquares(x.data(), n);
  setNumThreads(3);
  double three = sumOfSquares(x.data(), n);
  setNumThreads(0);
  EXPECT_EQ(single, three);
  EXPECT_NEAR(single, double(expected), 1e-12 * double(expected));
  EXPECT_EQ(sumOfSquares(x.data(), 0), 0.0);
}

//===----------------------------------------------------------------------===//
// Cross-entropy
//===----------------------------------------------------------------------===//

constexpr int32_t kIgnore = -100;

/// Mean over counted rows of lse - logit[label] in float64.
double crossEntropyReference(const std::vector<double> &logits,
                             const std::vector<int32_t> &labels,
                             int64_t vocab) {
  double sum = 0.0;
  int64_t count = 0;
  for (size_t r = 0; r < labels.size(); ++r) {
    if (labels[r] == kIgnore)
      continue;
    const double *row = logits.data() + r * size_t(vocab);
    double max = *std::max_element(row, row + vocab), total = 0.0;
    for (int64_t j = 0; j < vocab; ++j)
      total += std::exp(row[j] - max);
    sum += max + std::log(total) - row[labels[r]];
    ++count;
  }
  return count ? sum / double(count) : 0.0;
}

struct LossFixture {
  int64_t rows = 37, vocab = 1031;
  std::vector<float> logits = randomVector(size_t(rows * vocab), 1, -4.0f, 4.0f);
  std::vector<int32_t> labels;
  LossFixture() {
    for (int64_t r = 0; r < rows; ++r)
      labels.push_back(r % 5 == 1 ? kIgnore : int32_t((r * 389 + 7) % vocab));
    labels[0] = 0;
    labels[2] = int32_t(vocab - 1);
  }
};

TEST(CrossEntropyTest, MeanOverCountedRows) {
  LossFixture f;
  float loss = std::nanf("");
  Expected<int64_t> count = crossEntropy(f.logits.data(), f.labels.data(), f.rows,
                                         f.vocab, kIgnore, &loss);
  ASSERT_TRUE(count) << count.message();
  EXPECT_EQ(*count, f.rows - 8); // rows 1, 6, 11, ..., 36 are ignored
  double expected = crossEntropyReference(toDouble(f.logits), f.labels, f.vocab);
  EXPECT_NEAR(loss, expected, 1e-5 * expected);
}

TEST(CrossEntropyTest, BackwardMatchesFloat64AndFiniteDifferences) {
  LossFixture f;
  float loss;
  Expected<int64_t> count = crossEntropy(f.logits.data(), f.labels.data(), f.rows,
                                         f.vocab, kIgnore, &loss);
  ASSERT_TRUE(count);
  const float dloss = 0.75f;
  std::vector<float> dlogits = poisoned(f.logits.size());
  crossEntropyBackward(f.logits.data(), f.labels.data(), f.rows, f.vocab,
                       kIgnore, dloss, *count, dlogits.data());
  std::vector<double> expected(f.logits.size(), 0.0);
  for (int64_t r = 0; r < f.rows; ++r) {
    if (f.labels[size_t(r)] == kIgnore)
      continue;
    const float *row = f.logits.data() + r * f.vocab;
    double max = *std::max_element(row, row + f.vocab), total = 0.0;
    for (int64_t j = 0; j < f.vocab; ++j)
      total += std::exp(double(row[j]) - max);
    for (int64_t j = 0; j < f.vocab; ++j)
      expected[size_t(r * f.vocab + j)] =
          double(dloss) *
          (std::exp(double(row[j]) - max) / total - (j == f.labels[size_t(r)])) /
          double(*count);
  }
  EXPECT_LT(relativeError(dlogits, expected), 1e-5);
  for (int64_t j = 0; j < f.vocab; ++j) // an ignored row is all zero
    ASSERT_EQ(dlogits[size_t(1 * f.vocab + j)], 0.0f);
  // A few coordinates on labelled entries, the rest at random.
  std::vector<double> logitsD = toDouble(f.logits);
  auto lossOf = [&](const std::vector<double> &x) {
    return double(dloss) * crossEntropyReference(x, f.labels, f.vocab);
  };
  expectFiniteDifferences("dlogits", dlogits.data(), logitsD, lossOf, 8, 2);
  for (int64_t r : {0, 2, 3}) {
    size_t c = size_t(r * f.vocab + f.labels[size_t(r)]);
    double h = 1e-5, saved = logitsD[c];
    logitsD[c] = saved + h;
    double plus = lossOf(logitsD);
    logitsD[c] = saved - h;
    double minus = lossOf(logitsD);
    logitsD[c] = saved;
    EXPECT_NEAR(dlogits[c], (plus - minus) / (2 * h), 1e-6) << "row " << r;
  }
}

TEST(CrossEntropyTest, AllIgnoredGivesZeroLossAndZeroGradient) {
  LossFixture f;
  std::fill(f.labels.begin(), f.labels.end(), kIgnore);
  float loss = std::nanf("");
  Expected<int64_t> count = crossEntropy(f.logits.data(), f.labels.data(), f.rows,
                                         f.vocab, kIgnore, &loss);
  ASSERT_TRUE(count);
  EXPECT_EQ(*count, 0);
  EXPECT_EQ(loss, 0.0f);
  std::vector<float> dlogits = poisoned(f.logits.size());
  crossEntropyBackward(f.logits.data(), f.labels.data(), f.rows, f.vocab,
                       kIgnore, 1.0f, 0, dlogits.data());
  for (float value : dlogits)
    ASSERT_EQ(value, 0.0f);
}

TEST(CrossEntropyTest, RefusesBadLabelsNamingThem) {
  LossFixture f;
  for (int32_t bad : {int32_t(f.vocab), int32_t(-1), int32_t(-101)}) {
    std::vector<int32_t> labels = f.labels;
    labels[9] = bad;
    float loss = std::nanf("");
    Expected<int64_t> count = crossEntropy(f.logits.data(), labels.data(), f.rows,
                                           f.vocab, kIgnore, &loss);
    ASSERT_FALSE(count);
    EXPECT_NE(count.message().find("label " + std::to_string(bad) + " at row 9"),
              std::string::npos) << count.message();
    EXPECT_TRUE(std::isnan(loss)); // nothing written
  }
}

//===----------------------------------------------------------------------===//
// AdamW
//===----------------------------------------------------------------------===//

struct AdamWCase {
  float lr, weightDecay;
  bool zeroInit; ///< parameters start at 0, so they are the updates alone
  double tolerance;
};

TEST(AdamWTest, ThreeStepsMatchTheFormula) {
  const int64_t n = 100003;
  const float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  // From zero the parameters are the sum of the updates, checked to 1e-5;
  // from random values with a large decay, lr * wd = 1e-3 per step is far
  // above the 1e-6 tolerance, so a missing or coupled decay fails.
  for (AdamWCase c : {AdamWCase{1e-3f, 0.0f, true, 1e-5},
                      AdamWCase{1e-2f, 0.1f, false, 1e-6}}) {
    std::vector<float> param = c.zeroInit ? std::vector<float>(size_t(n), 0.0f)
                                          : randomVector(size_t(n), 1);
    std::vector<float> m(size_t(n), 0.0f), v(size_t(n), 0.0f);
    std::vector<double> p = toDouble(param), md(size_t(n), 0.0), vd(size_t(n), 0.0);
    for (int64_t step = 1; step <= 3; ++step) {
      // Gradients of very different sizes, so that eps and the bias
      // corrections all matter somewhere.
      std::vector<float> grad = randomVector(size_t(n), uint32_t(10 + step));
      for (size_t i = 0; i < size_t(n); i += 7)
        grad[i] *= 1e-6f;
      adamw(param.data(), grad.data(), m.data(), v.data(), n, c.lr, beta1,
            beta2, eps, c.weightDecay, step);
      double b1 = beta1, b2 = beta2;
      for (size_t i = 0; i < size_t(n); ++i) {
        double g = grad[i];
        p[i] *= 1.0 - double(c.lr) * double(c.weightDecay);
        md[i] = b1 * md[i] + (1.0 - b1) * g;
        vd[i] = b2 * vd[i] + (1.0 - b2) * g * g;
        double denom =
            std::sqrt(vd[i]) / std::sqrt(1.0 - std::pow(b2, double(step))) + eps;
        p[i] -= double(c.lr) / (1.0 - std::pow(b1, double(step))) * md[i] / denom;
      }
      EXPECT_LT(relativeError(param, p), c.tolerance) << "step " << step;
      EXPECT_LT(relativeError(m, md), 1e-5) << "step " << step;
      EXPECT_LT(relativeError(v, vd), 1e-5) << "step " << step;
    }
  }
}

} // namespace
} // namespace cpu
} // namespace qlora
