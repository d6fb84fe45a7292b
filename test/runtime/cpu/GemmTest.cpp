//===- GemmTest.cpp - The blocked SGEMM against a float64 reference ---------===//
//
// Every transpose combination on shapes that are multiples of no tile size,
// with padded leading dimensions, several alpha/beta, depths beyond one
// packed block and widths beyond one packed B block; every instruction-set
// path and thread count must give the same bits.
//
//===----------------------------------------------------------------------===//
#include "KernelTestUtil.h"

#include "runtime/Parallel.h"
#include "runtime/cpu/Kernels.h"

#include <cstring>

namespace qlora {
namespace cpu {
namespace {

using namespace testing;

struct GemmCase {
  int64_t M, N, K;
  bool transA, transB;
  float alpha, beta;
  int64_t pad; ///< extra elements per row of A, B and C
};

void PrintTo(const GemmCase &c, std::ostream *os) {
  *os << c.M << "x" << c.N << "x" << c.K << (c.transA ? " T" : " N")
      << (c.transB ? "T" : "N") << " alpha " << c.alpha << " beta " << c.beta
      << " pad " << c.pad;
}

/// Inputs of one case plus its float64 expected C.
struct GemmProblem {
  std::vector<float> A, B, C0;
  int64_t lda, ldb, ldc;
  std::vector<double> expected; ///< full ldc-strided C

  explicit GemmProblem(const GemmCase &c, uint32_t seed) {
    int64_t aRows = c.transA ? c.K : c.M, aCols = c.transA ? c.M : c.K;
    int64_t bRows = c.transB ? c.N : c.K, bCols = c.transB ? c.K : c.N;
    lda = aCols + c.pad;
    ldb = bCols + c.pad;
    ldc = c.N + c.pad;
    A = randomVector(size_t(aRows * lda), seed);
    B = randomVector(size_t(bRows * ldb), seed + 1);
    C0 = c.beta == 0.0f ? poisoned(size_t(c.M * ldc))
                        : randomVector(size_t(c.M * ldc), seed + 2);
    expected.assign(C0.begin(), C0.end());
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) {
        double sum = 0.0;
        for (int64_t p = 0; p < c.K; ++p) {
          double a = c.transA ? A[size_t(p * lda + i)] : A[size_t(i * lda + p)];
          double b = c.transB ? B[size_t(j * ldb + p)] : B[size_t(p * ldb + j)];
          sum += a * b;
        }
        double &e = expected[size_t(i * ldc + j)];
        e = double(c.alpha) * sum + (c.beta == 0.0f ? 0.0 : double(c.beta) * e);
      }
  }

  std::vector<float> run(const GemmCase &c) const {
    std::vector<float> C = C0;
    gemm(c.transA, c.transB, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(),
         ldb, c.beta, C.data(), ldc);
    return C;
  }
};

class GemmTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GemmTest, MatchesFloat64Reference) {
  const GemmCase &c = GetParam();
  GemmProblem problem(c, 7);
  std::vector<float> C = problem.run(c);
  // Only the M x N window is defined; padding must stay untouched.
  std::vector<float> window;
  std::vector<double> expected;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < problem.ldc; ++j) {
      size_t at = size_t(i * problem.ldc + j);
      if (j < c.N) {
        window.push_back(C[at]);
        expected.push_back(problem.expected[at]);
      } else if (c.beta == 0.0f) {
        EXPECT_TRUE(std::isnan(C[at])) << "padding written at " << i << "," << j;
      } else {
        EXPECT_EQ(C[at], problem.C0[at]) << "padding written at " << i << "," << j;
      }
    }
  EXPECT_LT(relativeError(window, expected), 1e-5);
}

TEST_P(GemmTest, EveryIsaAndThreadCountGivesTheSameBits) {
  const GemmCase &c = GetParam();
  GemmProblem problem(c, 11);
  Isa saved = gemmIsa();
  std::vector<float> reference = problem.run(c);
  for (int isa = 0; isa <= int(hostIsa()); ++isa) {
    setGemmIsa(Isa(isa));
    for (int threads : {1, 3}) {
      setNumThreads(threads);
      std::vector<float> C = problem.run(c);
      EXPECT_EQ(0, std::memcmp(C.data(), reference.data(),
                               C.size() * sizeof(float)))
          << isaName(Isa(isa)) << " with " << threads << " threads";
    }
  }
  setNumThreads(0);
  setGemmIsa(saved);
}

std::vector<GemmCase> gemmCases() {
  std::vector<GemmCase> cases;
  for (bool transA : {false, true})
    for (bool transB : {false, true}) {
      cases.push_back({37, 53, 29, transA, transB, 1.0f, 0.0f, 0});
      cases.push_back({100, 70, 300, transA, transB, 0.5f, 1.0f, 3});
      cases.push_back({128, 688, 256, transA, transB, 1.0f, 0.0f, 0});
      cases.push_back({1, 17, 513, transA, transB, 2.0f, -0.5f, 1});
      // More than 2 row blocks: the shared-B path.
      cases.push_back({301, 75, 520, transA, transB, 1.0f, 0.0f, 2});
    }
  cases.push_back({1, 1, 1, false, false, 1.0f, 0.0f, 0});
  cases.push_back({7, 5, 3, false, true, 1.0f, 0.25f, 2});
  cases.push_back({5, 4133, 9, false, false, 1.0f, 0.0f, 0}); // N > one B block
  cases.push_back({200, 4133, 9, false, true, 1.0f, 1.0f, 0}); // ... shared
  cases.push_back({13, 11, 0, false, false, 1.0f, 0.0f, 0});  // K == 0: C = 0
  cases.push_back({13, 11, 0, false, false, 1.0f, 0.5f, 0});  // K == 0: C *= beta
  cases.push_back({13, 11, 19, false, false, 0.0f, 2.0f, 0}); // alpha == 0
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmTest, ::testing::ValuesIn(gemmCases()));

TEST(GemmIsaTest, PinningIsCappedAtTheHost) {
  Isa saved = gemmIsa();
  setGemmIsa(Isa::Avx512);
  EXPECT_EQ(gemmIsa(), hostIsa());
  setGemmIsa(Isa::Generic);
  EXPECT_EQ(gemmIsa(), Isa::Generic);
  setGemmIsa(saved);
  EXPECT_STREQ(isaName(Isa::Avx2), "avx2");
}

} // namespace
} // namespace cpu
} // namespace qlora
