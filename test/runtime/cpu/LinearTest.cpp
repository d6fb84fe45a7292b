//===- LinearTest.cpp - Dense, NF4 and LoRA linears against float64 ---------===//
//
// The dense linears and the LoRA branch are checked against float64
// references and finite differences. The NF4 linears are checked against a
// reference that applies bitsandbytes' roundings (x and the dequantized
// weight in bf16, the result rounded to bf16) to an exact float64 sum: each
// element must be exactly that bf16 value, unless the exact sum lies within
// the fp32 accumulation error bound of a bf16 rounding midpoint, where the
// neighbour is also correct rounding of the fp32 sum.
//
//===----------------------------------------------------------------------===//
#include "KernelTestUtil.h"

#include "runtime/BnbFormat.h"
#include "runtime/Float16.h"
#include "runtime/NF4.h"
#include "runtime/cpu/Kernels.h"

#include <cstring>

namespace qlora {
namespace cpu {
namespace {

using namespace testing;

float bf16Round(float x) { return bf16ToFloat(floatToBf16(x)); }

/// y[M,N] = x[M,K] W^T in float64, W [N, K].
std::vector<double> matmulTransposed(const std::vector<double> &x,
                                     const std::vector<double> &w, int64_t M,
                                     int64_t N, int64_t K) {
  std::vector<double> y(size_t(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double sum = 0.0;
      for (int64_t p = 0; p < K; ++p)
        sum += x[size_t(i * K + p)] * w[size_t(j * K + p)];
      y[size_t(i * N + j)] = sum;
    }
  return y;
}

/// dx[M,K] = dy[M,N] W in float64, W [N, K].
std::vector<double> matmulPlain(const std::vector<double> &dy,
                                const std::vector<double> &w, int64_t M,
                                int64_t N, int64_t K) {
  std::vector<double> dx(size_t(M * K), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t p = 0; p < K; ++p)
        dx[size_t(i * K + p)] += dy[size_t(i * N + j)] * w[size_t(j * K + p)];
  return dx;
}

//===----------------------------------------------------------------------===//
// Dense linear
//===----------------------------------------------------------------------===//

struct LinearShape {
  int64_t M, N, K;
};

class LinearTest : public ::testing::TestWithParam<LinearShape> {};

TEST_P(LinearTest, ForwardMatchesFloat64) {
  auto [M, N, K] = GetParam();
  std::vector<float> x = randomVector(size_t(M * K), 1);
  std::vector<float> w = randomVector(size_t(N * K), 2);
  std::vector<float> y = poisoned(size_t(M * N));
  linear(x.data(), w.data(), M, N, K, y.data());
  EXPECT_LT(relativeError(y, matmulTransposed(toDouble(x), toDouble(w), M, N, K)),
            1e-5);
}

TEST_P(LinearTest, BackwardInputMatchesFloat64AndFiniteDifferences) {
  auto [M, N, K] = GetParam();
  std::vector<float> x = randomVector(size_t(M * K), 3);
  std::vector<float> w = randomVector(size_t(N * K), 4);
  std::vector<float> dy = randomVector(size_t(M * N), 5);
  std::vector<double> expected = matmulPlain(toDouble(dy), toDouble(w), M, N, K);

  std::vector<float> dx = poisoned(size_t(M * K));
  linearBackwardInput(dy.data(), w.data(), M, N, K, 0.0f, dx.data());
  EXPECT_LT(relativeError(dx, expected), 1e-5);
  std::vector<double> wd = toDouble(w);
  expectFiniteDifferences(
      "dx", dx.data(), toDouble(x),
      [&](const std::vector<double> &xd) {
        return project(matmulTransposed(xd, wd, M, N, K), dy);
      },
      6, 17);

  // beta = 1 accumulates.
  std::vector<float> acc = randomVector(size_t(M * K), 6);
  std::vector<double> accExpected(acc.begin(), acc.end());
  for (size_t i = 0; i < accExpected.size(); ++i)
    accExpected[i] += expected[i];
  linearBackwardInput(dy.data(), w.data(), M, N, K, 1.0f, acc.data());
  EXPECT_LT(relativeError(acc, accExpected), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(LinearShape{37, 688, 256},
                                           LinearShape{37, 256, 688},
                                           LinearShape{64, 1031, 256},
                                           LinearShape{3, 5, 7},
                                           LinearShape{300, 96, 272}));

//===----------------------------------------------------------------------===//
// NF4 linear
//===----------------------------------------------------------------------===//

/// A random NF4 weight and its bf16 dequantization from runtime/NF4 (the
/// codec verified bit for bit against bitsandbytes).
struct NF4Fixture {
  int64_t N, K;
  std::vector<uint8_t> packed;
  std::vector<float> absmax;
  std::vector<double> dequantized; ///< bf16 values, [N, K]

  NF4Fixture(int64_t n, int64_t k, int64_t blockSize, bool doubleQuant,
             uint32_t seed)
      : N(n), K(k) {
    std::vector<float> w = randomVector(size_t(N * K), seed, -0.2f, 0.2f);
    if (doubleQuant) {
      Expected<NF4Weight> weight =
          quantizeWeight(w.data(), ElementType::F32, {N, K}, blockSize, true);
      EXPECT_TRUE(weight) << weight.message();
      packed = weight->packed;
      absmax = weight->blockAbsmax();
    } else {
      packed.resize(size_t(nf4::packedBytes(N * K)));
      absmax.resize(size_t(nf4::numBlocks(N * K, blockSize)));
      nf4::quantize(w.data(), ElementType::F32, N * K, blockSize, packed.data(),
                    absmax.data());
    }
    std::vector<uint16_t> bf16(size_t(N * K));
    nf4::dequantize(packed.data(), absmax.data(), N * K, blockSize,
                    ElementType::BF16, bf16.data());
    for (uint16_t h : bf16)
      dequantized.push_back(bf16ToFloat(h));
    view = NF4View{packed.data(), absmax.data(), N, K, blockSize};
  }

  NF4View view;
};

/// The bf16 values an fp32-accumulated, bf16-rounded sum may take: the
/// correct rounding of the exact sum, plus its neighbour when the exact sum
/// is within `bound` (the fp32 summation error bound) of their midpoint.
std::vector<float> acceptableBf16(double exact, double bound) {
  float rounded = bf16Round(float(exact));
  if (double(rounded) == exact)
    return {rounded};
  bool up = exact > double(rounded);
  uint16_t bits = floatToBf16(rounded), neighbourBits;
  if (rounded == 0.0f)
    neighbourBits = up ? 0x0001 : 0x8001;
  else if (!(bits & 0x8000))
    neighbourBits = uint16_t(up ? bits + 1 : bits - 1);
  else
    neighbourBits = uint16_t(up ? bits - 1 : bits + 1);
  float neighbour = bf16ToFloat(neighbourBits);
  double midpoint = (double(rounded) + double(neighbour)) / 2.0;
  if (std::fabs(exact - midpoint) <= bound)
    return {rounded, neighbour};
  return {rounded};
}

/// Exact sums of bf16(a[i,:]) . w[j,:] (rowsB = true: w [N, inner]) or of
/// bf16(a[i,:]) . w[:,j] (w [inner, N]), and their error bounds.
struct ExactProduct {
  std::vector<double> value, bound;
};
ExactProduct exactBf16Product(const std::vector<float> &a,
                              const std::vector<double> &w, int64_t M,
                              int64_t N, int64_t inner, bool wRows) {
  ExactProduct out;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double sum = 0.0, magnitude = 0.0;
      for (int64_t p = 0; p < inner; ++p) {
        double wv = wRows ? w[size_t(j * inner + p)] : w[size_t(p * N + j)];
        double term = double(bf16Round(a[size_t(i * inner + p)])) * wv;
        sum += term;
        magnitude += std::fabs(term);
      }
      out.value.push_back(sum);
      out.bound.push_back(double(inner) * std::ldexp(1.0, -24) * magnitude);
    }
  return out;
}

struct NF4Shape {
  int64_t M, N, K, blockSize;
  bool doubleQuant;
};

class NF4LinearTest : public ::testing::TestWithParam<NF4Shape> {};

TEST_P(NF4LinearTest, ForwardIsBf16RoundingOfTheExactProduct) {
  const NF4Shape &s = GetParam();
  NF4Fixture w(s.N, s.K, s.blockSize, s.doubleQuant, 21);
  std::vector<float> x = randomVector(size_t(s.M * s.K), 22);
  std::vector<float> y = poisoned(size_t(s.M * s.N));
  nf4Linear(x.data(), w.view, s.M, y.data());

  ExactProduct exact = exactBf16Product(x, w.dequantized, s.M, s.N, s.K, true);
  int64_t ties = 0, mismatches = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    std::vector<float> ok = acceptableBf16(exact.value[i], exact.bound[i]);
    ties += ok.size() > 1 && y[i] != ok[0];
    mismatches += std::find(ok.begin(), ok.end(), y[i]) == ok.end();
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_LT(ties, int64_t(y.size()) / 100 + 1);
}

TEST_P(NF4LinearTest, BackwardInputIsBf16RoundingOfTheExactProduct) {
  const NF4Shape &s = GetParam();
  NF4Fixture w(s.N, s.K, s.blockSize, s.doubleQuant, 31);
  std::vector<float> dy = randomVector(size_t(s.M * s.N), 32);
  ExactProduct exact =
      exactBf16Product(dy, w.dequantized, s.M, s.K, s.N, /*wRows=*/false);

  for (float beta : {0.0f, 1.0f, 0.5f}) {
    std::vector<float> before = beta == 0.0f ? poisoned(size_t(s.M * s.K))
                                             : randomVector(size_t(s.M * s.K), 33);
    std::vector<float> dx = before;
    nf4LinearBackwardInput(dy.data(), w.view, s.M, beta, dx.data());
    int64_t mismatches = 0;
    for (size_t i = 0; i < dx.size(); ++i) {
      bool matched = false;
      for (float value : acceptableBf16(exact.value[i], exact.bound[i]))
        matched |= dx[i] == (beta == 0.0f ? value : beta * before[i] + value);
      mismatches += !matched;
    }
    EXPECT_EQ(mismatches, 0) << "beta " << beta;
  }

  // The math (not only the roundings): finite differences of the unrounded
  // float64 product, within bf16 precision.
  std::vector<float> dx = poisoned(size_t(s.M * s.K));
  nf4LinearBackwardInput(dy.data(), w.view, s.M, 0.0f, dx.data());
  std::vector<float> x = randomVector(size_t(s.M * s.K), 34);
  expectFiniteDifferences(
      "dx", dx.data(), toDouble(x),
      [&](const std::vector<double> &xd) {
        return project(matmulTransposed(xd, w.dequantized, s.M, s.N, s.K), dy);
      },
      6, 35, /*relTol=*/2e-2);
}

TEST_P(NF4LinearTest, EveryIsaGivesTheSameBits) {
  const NF4Shape &s = GetParam();
  NF4Fixture w(s.N, s.K, s.blockSize, s.doubleQuant, 41);
  std::vector<float> x = randomVector(size_t(s.M * s.K), 42);
  Isa saved = gemmIsa();
  std::vector<float> reference(size_t(s.M * s.N));
  nf4Linear(x.data(), w.view, s.M, reference.data());
  for (int isa = 0; isa <= int(hostIsa()); ++isa) {
    setGemmIsa(Isa(isa));
    std::vector<float> y = poisoned(size_t(s.M * s.N));
    nf4Linear(x.data(), w.view, s.M, y.data());
    EXPECT_EQ(0, std::memcmp(y.data(), reference.data(), y.size() * sizeof(float)))
        << isaName(Isa(isa));
  }
  setGemmIsa(saved);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, NF4LinearTest,
    ::testing::Values(NF4Shape{37, 688, 256, 64, true},  // gate/up_proj
                      NF4Shape{37, 256, 688, 64, true},  // down_proj
                      NF4Shape{64, 128, 256, 64, false}, // k/v_proj, GQA
                      NF4Shape{5, 33, 70, 64, false},    // blocks cross rows
                      NF4Shape{3, 17, 300, 128, false},
                      NF4Shape{200, 160, 300, 64, true})); // shared-B path

//===----------------------------------------------------------------------===//
// LoRA
//===----------------------------------------------------------------------===//

struct LoraShape {
  int64_t M, N, K, r;
  float scale;
};

/// scale * (x A^T) B^T in float64.
std::vector<double> loraReference(const std::vector<double> &x,
                                  const std::vector<double> &A,
                                  const std::vector<double> &B,
                                  const LoraShape &s) {
  std::vector<double> xa = matmulTransposed(x, A, s.M, s.r, s.K);
  std::vector<double> y = matmulTransposed(xa, B, s.M, s.N, s.r);
  for (double &value : y)
    value *= double(s.scale);
  return y;
}

class LoraTest : public ::testing::TestWithParam<LoraShape> {};

TEST_P(LoraTest, ForwardAddsTheBranchAndSavesXA) {
  const LoraShape &s = GetParam();
  std::vector<float> x = randomVector(size_t(s.M * s.K), 51);
  std::vector<float> A = randomVector(size_t(s.r * s.K), 52);
  std::vector<float> B = randomVector(size_t(s.N * s.r), 53);
  std::vector<float> y = randomVector(size_t(s.M * s.N), 54);
  std::vector<double> yExpected(y.begin(), y.end());
  std::vector<double> branch = loraReference(toDouble(x), toDouble(A), toDouble(B), s);
  for (size_t i = 0; i < yExpected.size(); ++i)
    yExpected[i] += branch[i];
  std::vector<float> xa = poisoned(size_t(s.M * s.r));
  loraForward(x.data(), A.data(), B.data(), s.M, s.N, s.K, s.r, s.scale,
              xa.data(), y.data());
  EXPECT_LT(relativeError(xa, matmulTransposed(toDouble(x), toDouble(A), s.M, s.r, s.K)),
            1e-5);
  EXPECT_LT(relativeError(y, yExpected), 1e-5);
}

TEST_P(LoraTest, BackwardAccumulatesAndMatchesFiniteDifferences) {
  const LoraShape &s = GetParam();
  std::vector<float> x = randomVector(size_t(s.M * s.K), 61);
  std::vector<float> A = randomVector(size_t(s.r * s.K), 62);
  std::vector<float> B = randomVector(size_t(s.N * s.r), 63);
  std::vector<float> dy = randomVector(size_t(s.M * s.N), 64);
  std::vector<float> xa(size_t(s.M * s.r)), scratchY(size_t(s.M * s.N), 0.0f);
  loraForward(x.data(), A.data(), B.data(), s.M, s.N, s.K, s.r, s.scale,
              xa.data(), scratchY.data());

  // Start from zero to see the gradients themselves.
  std::vector<float> dA(A.size(), 0.0f), dB(B.size(), 0.0f), dx(x.size(), 0.0f);
  loraBackward(x.data(), A.data(), B.data(), xa.data(), dy.data(), s.M, s.N,
               s.K, s.r, s.scale, dA.data(), dB.data(), dx.data());

  // float64 analytic gradients: g = scale dy B; dA = g^T x; dB = scale dy^T xa;
  // dx = g A.
  std::vector<double> xd = toDouble(x), Ad = toDouble(A), Bd = toDouble(B),
                      dyd = toDouble(dy);
  std::vector<double> g = matmulPlain(dyd, Bd, s.M, s.N, s.r);
  for (double &value : g)
    value *= double(s.scale);
  std::vector<double> xaD = matmulTransposed(xd, Ad, s.M, s.r, s.K);
  std::vector<double> dAExpected(A.size(), 0.0), dBExpected(B.size(), 0.0);
  for (int64_t i = 0; i < s.M; ++i) {
    for (int64_t q = 0; q < s.r; ++q)
      for (int64_t p = 0; p < s.K; ++p)
        dAExpected[size_t(q * s.K + p)] +=
            g[size_t(i * s.r + q)] * xd[size_t(i * s.K + p)];
    for (int64_t j = 0; j < s.N; ++j)
      for (int64_t q = 0; q < s.r; ++q)
        dBExpected[size_t(j * s.r + q)] += double(s.scale) *
                                           dyd[size_t(i * s.N + j)] *
                                           xaD[size_t(i * s.r + q)];
  }
  std::vector<double> dxExpected = matmulPlain(g, Ad, s.M, s.r, s.K);
  EXPECT_LT(relativeError(dA, dAExpected), 1e-5);
  EXPECT_LT(relativeError(dB, dBExpected), 1e-5);
  EXPECT_LT(relativeError(dx, dxExpected), 1e-5);

  auto loss = [&](const std::vector<double> &xv, const std::vector<double> &Av,
                  const std::vector<double> &Bv) {
    return project(loraReference(xv, Av, Bv, s), dy);
  };
  expectFiniteDifferences("dA", dA.data(), Ad,
                          [&](const std::vector<double> &v) { return loss(xd, v, Bd); },
                          5, 71);
  expectFiniteDifferences("dB", dB.data(), Bd,
                          [&](const std::vector<double> &v) { return loss(xd, Ad, v); },
                          5, 72);
  expectFiniteDifferences("dx", dx.data(), xd,
                          [&](const std::vector<double> &v) { return loss(v, Ad, Bd); },
                          5, 73);

  // A second call adds the same amounts again: gradient accumulation.
  std::vector<float> dA2 = dA, dB2 = dB, dx2 = dx;
  loraBackward(x.data(), A.data(), B.data(), xa.data(), dy.data(), s.M, s.N,
               s.K, s.r, s.scale, dA2.data(), dB2.data(), dx2.data());
  for (std::vector<double> *expected : {&dAExpected, &dBExpected, &dxExpected})
    for (double &value : *expected)
      value *= 2.0;
  EXPECT_LT(relativeError(dA2, dAExpected), 1e-5);
  EXPECT_LT(relativeError(dB2, dBExpected), 1e-5);
  EXPECT_LT(relativeError(dx2, dxExpected), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LoraTest,
                         ::testing::Values(LoraShape{37, 688, 256, 16, 2.0f},
                                           LoraShape{64, 128, 256, 8, 0.5f},
                                           LoraShape{5, 7, 11, 3, 4.0f}));

} // namespace
} // namespace cpu
} // namespace qlora
