//===- CudaNF4Test.cpp - NF4 kernels on the GPU against the CPU reference ---===//
//
// Label `gpu`: skipped without a CUDA device. Fresh random weights every
// run; outputs are poisoned with NaN first so that an unwritten element
// fails. Dequantization must be bit-identical to the CPU reference; the
// products must be within bf16 rounding of a float64 reference built from
// the same bf16 operands.
//
//===----------------------------------------------------------------------===//
#include "GpuTestUtil.h"
#include "runtime/BnbFormat.h"
#include "runtime/Float16.h"
#include "runtime/cuda/DeviceNF4.h"
#include "runtime/cuda/NF4Kernels.h"

#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <random>

namespace qlora::cuda {
namespace {

using testing::relativeError;

/// Fresh random inputs each run (the seed printed on failure), and a cuBLAS
/// handle for the tests that need one.
class CudaNF4 : public testing::SeededGpuTest {
protected:
  void TearDown() override {
    if (blas_)
      cublasDestroy(blas_);
    SeededGpuTest::TearDown();
  }
  /// A cuBLAS handle for the test, made on first use.
  cublasHandle_t blas() {
    if (!blas_)
      EXPECT_EQ(cublasCreate(&blas_), CUBLAS_STATUS_SUCCESS);
    return blas_;
  }
  NF4Weight quantized(int64_t rows, int64_t cols, bool doubleQuant) {
    std::vector<uint16_t> values = randomBf16(rows * cols, 0.0f, 0.02f);
    Expected<NF4Weight> weight = quantizeWeight(
        values.data(), ElementType::BF16, {rows, cols}, 64, doubleQuant);
    EXPECT_TRUE(weight) << weight.message();
    return weight.take();
  }

private:
  cublasHandle_t blas_ = nullptr;
};

struct Shape {
  int64_t rows, cols;
};

TEST_F(CudaNF4, DequantizeIsBitIdenticalToTheCpu) {
  for (Shape shape : {Shape{1024, 4096}, Shape{688, 256}, Shape{256, 688},
                      Shape{33, 70}}) {
    for (bool doubleQuant : {true, false}) {
      NF4Weight weight = quantized(shape.rows, shape.cols, doubleQuant);
      std::vector<uint16_t> expected(weight.numElements());
      dequantizeWeight(weight, ElementType::BF16, expected.data());
      Expected<DeviceNF4> device = DeviceNF4::upload(weight);
      ASSERT_TRUE(device) << device.message();
      Expected<DeviceBuffer<uint16_t>> out =
          DeviceBuffer<uint16_t>::allocate(weight.numElements());
      ASSERT_TRUE(out && out->poison());
      ASSERT_TRUE(dequantizeNF4(device->view, out->data(), nullptr));
      Expected<std::vector<uint16_t>> got = out->download();
      ASSERT_TRUE(got) << got.message();
      EXPECT_EQ(*got, expected) << shape.rows << "x" << shape.cols
                                << (doubleQuant ? " dq" : " plain");
    }
  }
}

/// y[m, n] = sum_k bf16(W)[n, k] * x[m, k] in float64, transposed as asked.
std::vector<double> reference(const NF4Weight &weight,
                              const std::vector<uint16_t> &x, int64_t M,
                              bool gradInput) {
  int64_t N = weight.shape[0], K = weight.shape[1];
  std::vector<uint16_t> w(N * K);
  dequantizeWeight(weight, ElementType::BF16, w.data());
  int64_t inner = gradInput ? N : K, outer = gradInput ? K : N;
  std::vector<double> y(M * outer, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t o = 0; o < outer; ++o) {
      double sum = 0.0;
      for (int64_t i = 0; i < inner; ++i) {
        double wv = gradInput ? bf16ToFloat(w[i * K + o])
                              : bf16ToFloat(w[o * K + i]);
        sum += wv * bf16ToFloat(x[m * inner + i]);
      }
      y[m * outer + o] = sum;
    }
  return y;
}

/// A small-M forward product under test: y (=) x[M, K] · Wᵀ.
using Forward = std::function<Status(const uint16_t *x, uint16_t *y)>;

/// The bound for products whose weight enters as bf16(code) * absmax
/// instead of the reference's bf16(code * absmax): up to one more bf16
/// rounding per weight on top of the output's, and the shapes here have as
/// few as 40 outputs, so the error norm itself scatters (0.0040 seen once
/// in a racecheck run at 40x640, M = 1). A wrong code or block maximum
/// gives errors near 1.
constexpr double kBf16CodeBound = 6e-3;

/// Runs `forward` on fresh random x into a poisoned y and compares with the
/// float64 reference; `what` names the case in a failure.
void expectForwardMatches(const NF4Weight &weight, int64_t M,
                          std::vector<uint16_t> x, const Forward &forward,
                          const std::string &what, double bound = 4e-3) {
  Expected<DeviceBuffer<uint16_t>> dx = DeviceBuffer<uint16_t>::upload(x);
  Expected<DeviceBuffer<uint16_t>> dy =
      DeviceBuffer<uint16_t>::allocate(M * weight.shape[0]);
  ASSERT_TRUE(dx && dy && dy->poison()) << what;
  ASSERT_TRUE(forward(dx->data(), dy->data())) << what;
  Expected<std::vector<uint16_t>> y = dy->download();
  ASSERT_TRUE(y) << y.message();
  EXPECT_LT(relativeError(*y, reference(weight, x, M, false)), bound) << what;
}

std::string describe(Shape shape, int64_t M) {
  return std::to_string(shape.rows) + "x" + std::to_string(shape.cols) +
         " M=" + std::to_string(M);
}

TEST_F(CudaNF4, DequantizingRowRangesMatchesTheWhole) {
  NF4Weight weight = quantized(300, 256, true);
  std::vector<uint16_t> expected(weight.numElements());
  dequantizeWeight(weight, ElementType::BF16, expected.data());
  Expected<DeviceNF4> device = DeviceNF4::upload(weight);
  Expected<DeviceBuffer<uint16_t>> out =
      DeviceBuffer<uint16_t>::allocate(weight.numElements());
  ASSERT_TRUE(device && out && out->poison());
  for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, 77},
                            {77, 256}, {256, 300}})
    ASSERT_TRUE(dequantizeNF4Rows(device->view, begin, end, out->data(),
                                  nullptr));
  Expected<std::vector<uint16_t>> got = out->download();
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, expected);
}

TEST_F(CudaNF4, GemvMatchesTheReference) {
  for (Shape shape : {Shape{1024, 4096}, Shape{688, 256}, Shape{256, 688},
                      Shape{37, 1376}}) {
    NF4Weight weight = quantized(shape.rows, shape.cols, true);
    Expected<DeviceNF4> device = DeviceNF4::upload(weight);
    ASSERT_TRUE(device) << device.message();
    // Every tiling: 37 rows leave row groups with no row at all, which
    // must still reach the block barrier of the split-K tilings.
    for (int64_t M : {1, 3, 8})
      for (GemvTiling tiling : gemvTilings(M))
        expectForwardMatches(
            weight, M, randomBf16(M * shape.cols, 0.0f, 1.0f),
            [&](const uint16_t *x, uint16_t *y) {
              return nf4Gemv(x, M, device->view, y, nullptr, tiling);
            },
            describe(shape, M) + " with " +
                std::to_string(tiling.warpsPerRow) + " warps a row, " +
                std::to_string(tiling.steps) + " steps");
  }
}

TEST_F(CudaNF4, SmallMTensorCoresMatchTheReference) {
  for (Shape shape : {Shape{1024, 4096}, Shape{4096, 1024}, Shape{40, 640}}) {
    NF4Weight weight = quantized(shape.rows, shape.cols, true);
    Expected<DeviceNF4> device = DeviceNF4::upload(weight);
    ASSERT_TRUE(device) << device.message();
    for (int64_t M : {1, 5, 8, 9, 16})
      for (SmallMTiling tiling : smallMTilings())
        expectForwardMatches(
            weight, M, randomBf16(M * shape.cols, 0.0f, 1.0f),
            [&](const uint16_t *x, uint16_t *y) {
              return nf4MatmulSmallM(x, M, device->view, y, nullptr, tiling);
            },
            describe(shape, M) + " with " + std::to_string(tiling.warps) +
                " warps",
            kBf16CodeBound);
  }
  NF4Weight odd = quantized(64, 96, true); // K = 96 is not a multiple of 64
  Expected<DeviceNF4> device = DeviceNF4::upload(odd);
  ASSERT_TRUE(device);
  Status status = nf4MatmulSmallM(nullptr, 1, device->view, nullptr, nullptr);
  ASSERT_FALSE(status);
  EXPECT_NE(status.message().find("K = 96"), std::string::npos);
}

TEST_F(CudaNF4, GemvRejectsUnsupportedShapes) {
  NF4Weight weight = quantized(256, 70, true); // K = 70 is not a multiple of 8
  Expected<DeviceNF4> device = DeviceNF4::upload(weight);
  ASSERT_TRUE(device);
  Status status = nf4Gemv(nullptr, 1, device->view, nullptr, nullptr);
  ASSERT_FALSE(status);
  EXPECT_NE(status.message().find("K = 70"), std::string::npos);
  weight = quantized(64, 64, true);
  device = DeviceNF4::upload(weight);
  status = nf4Gemv(nullptr, 9, device->view, nullptr, nullptr);
  ASSERT_FALSE(status);
  EXPECT_NE(status.message().find("got 9"), std::string::npos);
}

TEST_F(CudaNF4, FusedGemmMatchesTheReference) {
  if (!haveFusedNF4Matmul())
    GTEST_SKIP() << "the fused product needs a Hopper GPU and sm_90a code";
  // Partial tiles in M and N (688 = 5 x 128 + 48), an odd N, several K
  // steps, and K of one step.
  for (Shape shape : {Shape{688, 256}, Shape{256, 1024}, Shape{37, 128},
                      Shape{128, 64}}) {
    NF4Weight weight = quantized(shape.rows, shape.cols, true);
    Expected<DeviceNF4> device = DeviceNF4::upload(weight);
    ASSERT_TRUE(device) << device.message();
    for (int64_t M : {1, 96, 300})
      expectForwardMatches(
          weight, M, randomBf16(M * shape.cols, 0.0f, 1.0f),
          [&](const uint16_t *x, uint16_t *y) {
            return nf4MatmulFused(x, M, device->view, y, nullptr);
          },
          describe(shape, M));
  }
}

TEST_F(CudaNF4, MatmulTakesEachPathToTheReference) {
  for (Shape shape : {Shape{688, 256}, Shape{96, 520}}) {
    NF4Weight weight = quantized(shape.rows, shape.cols, true);
    Expected<DeviceNF4> device = DeviceNF4::upload(weight);
    Expected<DeviceBuffer<uint16_t>> scratch =
        DeviceBuffer<uint16_t>::allocate(weight.numElements());
    ASSERT_TRUE(device && scratch);
    for (int64_t M : {1, 3, 4, 9, 16, 17, 96})
      expectForwardMatches(
          weight, M, randomBf16(M * shape.cols, 0.0f, 1.0f),
          [&](const uint16_t *x, uint16_t *y) {
            return nf4Matmul(blas(), x, M, device->view, scratch->data(), y,
                             nullptr);
          },
          describe(shape, M), kBf16CodeBound);
  }
}

/// The shape classes of nf4Matmul, decided without a GPU.
TEST(CudaNF4Arguments, MatmulPathsByShapeClass) {
  NF4DeviceWeight weight;
  weight.rows = 4096;
  weight.cols = 4096;
  EXPECT_EQ(chooseNF4MatmulPath(1, weight), NF4MatmulPath::SmallM);
  EXPECT_EQ(chooseNF4MatmulPath(4, weight), NF4MatmulPath::SmallM);
  EXPECT_EQ(chooseNF4MatmulPath(16, weight), NF4MatmulPath::SmallM);
  EXPECT_EQ(chooseNF4MatmulPath(17, weight), NF4MatmulPath::DequantGemm);
  // A weight past the small-M kernel's 32-bit offsets takes the GEMV.
  NF4DeviceWeight huge = weight;
  huge.rows = int64_t(1) << 20;
  EXPECT_EQ(chooseNF4MatmulPath(1, huge), NF4MatmulPath::Gemv);
  // 16 warps only where 132 SMs get fewer than two row tiles each and K is
  // one stage of 16 warps.
  EXPECT_EQ(chooseSmallMTiling(weight, 132).warps, 16);
  weight.rows = 11008;
  EXPECT_EQ(chooseSmallMTiling(weight, 132).warps, 8);
  weight.rows = 4096;
  weight.cols = 11008;
  EXPECT_EQ(chooseSmallMTiling(weight, 132).warps, 8);
  weight.cols = 4096;
  // Only dequantize + cuBLAS applies epilogues.
  uint16_t residual = 0;
  EXPECT_EQ(chooseNF4MatmulPath(1, weight, GemmEpilogue{&residual, nullptr}),
            NF4MatmulPath::DequantGemm);
  // K = 520 is not a multiple of 64: no tensor-core kernel, the GEMV up to
  // M = 8.
  weight.cols = 520;
  EXPECT_EQ(chooseNF4MatmulPath(1, weight), NF4MatmulPath::Gemv);
  EXPECT_EQ(chooseNF4MatmulPath(5, weight), NF4MatmulPath::Gemv);
  EXPECT_EQ(chooseNF4MatmulPath(9, weight), NF4MatmulPath::DequantGemm);
  // Without a handle the cuBLAS path is a clear error.
  Status status =
      nf4Matmul(nullptr, nullptr, 40, weight, nullptr, nullptr, nullptr);
  ASSERT_FALSE(status);
  EXPECT_NE(status.message().find("needs a cuBLAS handle"), std::string::npos)
      << status.message();
}

/// Tiling choices and their errors come before any launch, so this runs
/// without a GPU.
TEST(CudaNF4Arguments, TilingsAndShapeErrors) {
  auto names = [](const std::vector<GemvTiling> &tilings) {
    std::string text;
    for (GemvTiling tiling : tilings)
      text += std::to_string(tiling.warpsPerRow) + "w" +
              std::to_string(tiling.steps) + "s ";
    return text;
  };
  EXPECT_EQ(names(gemvTilings(1)), "1w4s 2w4s 4w4s 1w8s 2w8s 4w8s ");
  EXPECT_EQ(names(gemvTilings(5)), "1w4s 2w4s 4w4s ");
  NF4DeviceWeight weight;
  weight.rows = 64;
  weight.cols = 64;
  // The fused product checks its shape before it looks for a GPU.
  NF4DeviceWeight odd;
  odd.rows = 64;
  odd.cols = 96;
  Status fused = nf4MatmulFused(nullptr, 4, odd, nullptr, nullptr);
  ASSERT_FALSE(fused);
  EXPECT_NE(fused.message().find("K = 96"), std::string::npos)
      << fused.message();
  for (GemvTiling bad : {GemvTiling{3, 4}, GemvTiling{0, 4}, GemvTiling{1, 8},
                         GemvTiling{1, 2}}) {
    Status status = nf4Gemv(nullptr, 2, weight, nullptr, nullptr, bad);
    ASSERT_FALSE(status);
    EXPECT_NE(status.message().find("no tiling with " +
                                    std::to_string(bad.warpsPerRow) +
                                    " warps per row and " +
                                    std::to_string(bad.steps) + " steps"),
              std::string::npos)
        << status.message();
  }
  // The small-M kernel checks its tiling before its shape or the GPU.
  // Offsets are 32-bit in the small-M kernel: a weight of 2^32 elements is
  // refused by name before anything runs.
  NF4DeviceWeight huge;
  huge.rows = int64_t(1) << 20;
  huge.cols = int64_t(1) << 12;
  huge.blockSize = 64;
  Status tooLarge = nf4MatmulSmallM(nullptr, 1, huge, nullptr, nullptr);
  ASSERT_FALSE(tooLarge);
  EXPECT_NE(tooLarge.message().find("32-bit offsets"), std::string::npos)
      << tooLarge.message();
  for (SmallMTiling bad : {SmallMTiling{12}, SmallMTiling{4}}) {
    Status status = nf4MatmulSmallM(nullptr, 1, weight, nullptr, nullptr, bad);
    ASSERT_FALSE(status);
    EXPECT_NE(status.message().find("no tiling with " +
                                    std::to_string(bad.warps) + " warps"),
              std::string::npos)
        << status.message();
  }
}

TEST_F(CudaNF4, DequantGemmForwardAndInputGradient) {
  for (Shape shape : {Shape{1024, 512}, Shape{688, 256}}) {
    NF4Weight weight = quantized(shape.rows, shape.cols, true);
    Expected<DeviceNF4> device = DeviceNF4::upload(weight);
    Expected<DeviceBuffer<uint16_t>> scratch =
        DeviceBuffer<uint16_t>::allocate(weight.numElements());
    ASSERT_TRUE(device && scratch);
    const int64_t M = 96;
    std::vector<uint16_t> x = randomBf16(M * shape.cols, 0.0f, 1.0f);
    Expected<DeviceBuffer<uint16_t>> dx = DeviceBuffer<uint16_t>::upload(x);
    Expected<DeviceBuffer<uint16_t>> dy =
        DeviceBuffer<uint16_t>::allocate(M * shape.rows);
    ASSERT_TRUE(dx && dy && dy->poison());
    ASSERT_TRUE(nf4MatmulDequantGemm(blas(), dx->data(), M, device->view,
                                     scratch->data(), dy->data(), nullptr));
    Expected<std::vector<uint16_t>> y = dy->download();
    ASSERT_TRUE(y);
    std::vector<double> expected = reference(weight, x, M, false);
    EXPECT_LT(relativeError(*y, expected), 4e-3);
    // The pipelined variant (dequantization in row panels on a side
    // stream) gives the product too (cuBLAS may pick other algorithms for
    // the narrower panels, so the bits may differ).
    ASSERT_TRUE(dy->poison());
    ASSERT_TRUE(scratch->poison());
    ASSERT_TRUE(nf4MatmulDequantGemmPipelined(blas(), dx->data(), M,
                                              device->view, scratch->data(),
                                              dy->data(), nullptr, 3));
    Expected<std::vector<uint16_t>> pipelined = dy->download();
    ASSERT_TRUE(pipelined);
    EXPECT_LT(relativeError(*pipelined, expected), 4e-3);

    std::vector<uint16_t> g = randomBf16(M * shape.rows, 0.0f, 1.0f);
    Expected<DeviceBuffer<uint16_t>> dg = DeviceBuffer<uint16_t>::upload(g);
    Expected<DeviceBuffer<uint16_t>> dgx =
        DeviceBuffer<uint16_t>::allocate(M * shape.cols);
    ASSERT_TRUE(dg && dgx && dgx->poison());
    ASSERT_TRUE(nf4MatmulGradInput(blas(), dg->data(), M, device->view,
                                   scratch->data(), dgx->data(), nullptr));
    Expected<std::vector<uint16_t>> gx = dgx->download();
    ASSERT_TRUE(gx);
    EXPECT_LT(relativeError(*gx, reference(weight, g, M, true)), 4e-3);
  }
}

/// Dense products in float64 on row-major operands: out[m, n] =
/// sum_k in[m, k] * w[n, k] (transposedWeight) or in[m, k] * w[k, n].
std::vector<double> dense(const std::vector<double> &in, int64_t M, int64_t K,
                          const std::vector<double> &w, int64_t N,
                          bool transposedWeight) {
  std::vector<double> out(M * N, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0.0;
      for (int64_t k = 0; k < K; ++k)
        sum += in[m * K + k] * (transposedWeight ? w[n * K + k] : w[k * N + n]);
      out[m * N + n] = sum;
    }
  return out;
}

std::vector<double> toDouble(const std::vector<uint16_t> &bf16) {
  std::vector<double> values(bf16.size());
  for (size_t i = 0; i < bf16.size(); ++i)
    values[i] = bf16ToFloat(bf16[i]);
  return values;
}

/// The bf16 rounding of each value, as the GPU stores an intermediate.
std::vector<double> roundedToBf16(std::vector<double> values) {
  for (double &value : values)
    value = bf16ToFloat(floatToBf16(float(value)));
  return values;
}

/// The float64 reference of a product with both epilogues: out = residual +
/// in·W + scale · bf16(branchIn·first)·second, every product with the same
/// weight layout (forward: W, A and B transposed; dX: W, B then A plain).
struct EpilogueReference {
  std::vector<double> out, hidden;
};
EpilogueReference withEpilogues(const std::vector<uint16_t> &in,
                                const std::vector<uint16_t> &branchIn,
                                int64_t M, int64_t inner,
                                const std::vector<double> &w, int64_t outer,
                                bool transposedWeight,
                                const std::vector<uint16_t> &first,
                                const std::vector<uint16_t> &second,
                                int64_t rank, float scale,
                                const std::vector<uint16_t> &residual) {
  EpilogueReference ref;
  ref.hidden = dense(toDouble(branchIn), M, inner, toDouble(first), rank,
                     transposedWeight);
  ref.out = dense(toDouble(in), M, inner, w, outer, transposedWeight);
  std::vector<double> loraTerm = dense(roundedToBf16(ref.hidden), M, rank,
                                       toDouble(second), outer,
                                       transposedWeight);
  for (int64_t i = 0; i < M * outer; ++i)
    ref.out[i] += bf16ToFloat(residual[i]) + scale * loraTerm[i];
  return ref;
}

/// The output and the LoRA inner product against the reference.
void expectMatches(const DeviceBuffer<uint16_t> &out,
                   const DeviceBuffer<uint16_t> &hidden,
                   const EpilogueReference &ref) {
  Expected<std::vector<uint16_t>> got = out.download();
  Expected<std::vector<uint16_t>> gotHidden = hidden.download();
  ASSERT_TRUE(got && gotHidden);
  EXPECT_LT(relativeError(*gotHidden, ref.hidden), 4e-3);
  EXPECT_LT(relativeError(*got, ref.out), 4e-3);
}

TEST_F(CudaNF4, DequantGemmEpiloguesAddTheResidualAndTheLoraTerm) {
  const int64_t N = 688, K = 256, M = 96, rank = 8;
  NF4Weight weight = quantized(N, K, true);
  std::vector<uint16_t> dequantized(N * K);
  dequantizeWeight(weight, ElementType::BF16, dequantized.data());
  const std::vector<double> w = toDouble(dequantized);
  // Sizes chosen so that the base product, the residual and the LoRA term
  // are all of the same order: a dropped term fails the bound.
  std::vector<uint16_t> a = randomBf16(rank * K, 0.0f, 0.05f),
                        b = randomBf16(N * rank, 0.0f, 0.05f);
  const float scale = 2.0f;
  Expected<DeviceNF4> device = DeviceNF4::upload(weight);
  Expected<DeviceBuffer<uint16_t>> scratch =
      DeviceBuffer<uint16_t>::allocate(N * K);
  Expected<DeviceBuffer<uint16_t>> da = DeviceBuffer<uint16_t>::upload(a);
  Expected<DeviceBuffer<uint16_t>> db = DeviceBuffer<uint16_t>::upload(b);
  Expected<DeviceBuffer<uint16_t>> hidden =
      DeviceBuffer<uint16_t>::allocate(M * rank);
  ASSERT_TRUE(device && scratch && da && db && hidden);

  // Out-of-place: a separate residual, the branch on its own input (as
  // after dropout); in place: the output holds the residual, the branch
  // reads the product's input.
  for (bool inPlace : {false, true}) {
    SCOPED_TRACE(inPlace ? "in place" : "separate residual");
    std::vector<uint16_t> x = randomBf16(M * K, 0.0f, 1.0f),
                          branchInput = randomBf16(M * K, 0.0f, 1.0f),
                          residual = randomBf16(M * N, 0.0f, 0.3f);
    Expected<DeviceBuffer<uint16_t>> dx = DeviceBuffer<uint16_t>::upload(x);
    Expected<DeviceBuffer<uint16_t>> dBranch =
        DeviceBuffer<uint16_t>::upload(branchInput);
    Expected<DeviceBuffer<uint16_t>> dResidual =
        DeviceBuffer<uint16_t>::upload(residual);
    Expected<DeviceBuffer<uint16_t>> dy =
        inPlace ? DeviceBuffer<uint16_t>::upload(residual)
                : DeviceBuffer<uint16_t>::allocate(M * N);
    ASSERT_TRUE(dx && dBranch && dResidual && dy && hidden->poison());
    if (!inPlace)
      ASSERT_TRUE(dy->poison());
    LoraTerm lora{da->data(), db->data(), rank, scale,
                  inPlace ? nullptr : dBranch->data(), hidden->data()};
    GemmEpilogue epilogue{inPlace ? dy->data() : dResidual->data(), &lora};
    ASSERT_TRUE(nf4MatmulDequantGemm(blas(), dx->data(), M, device->view,
                                     scratch->data(), dy->data(), nullptr,
                                     epilogue));
    expectMatches(*dy, *hidden,
                  withEpilogues(x, inPlace ? x : branchInput, M, K, w, N, true,
                                a, b, rank, scale, residual));
  }

  // The input gradient: dX = residual + dY·W + scale·(dY·B)·A.
  std::vector<uint16_t> g = randomBf16(M * N, 0.0f, 1.0f),
                        residual = randomBf16(M * K, 0.0f, 0.3f);
  Expected<DeviceBuffer<uint16_t>> dg = DeviceBuffer<uint16_t>::upload(g);
  Expected<DeviceBuffer<uint16_t>> dResidual =
      DeviceBuffer<uint16_t>::upload(residual);
  Expected<DeviceBuffer<uint16_t>> dgx =
      DeviceBuffer<uint16_t>::allocate(M * K);
  ASSERT_TRUE(dg && dResidual && dgx && dgx->poison() && hidden->poison());
  LoraTerm lora{da->data(), db->data(), rank, scale, nullptr, hidden->data()};
  ASSERT_TRUE(nf4MatmulGradInput(blas(), dg->data(), M, device->view,
                                 scratch->data(), dgx->data(), nullptr,
                                 GemmEpilogue{dResidual->data(), &lora}));
  expectMatches(*dgx, *hidden,
                withEpilogues(g, g, M, N, w, K, false, b, a, rank, scale,
                              residual));

  // An incomplete LoRA term is an error, before any work is queued.
  LoraTerm missing{da->data(), nullptr, 0, scale, nullptr, hidden->data()};
  Status status = nf4MatmulDequantGemm(blas(), dg->data(), M, device->view,
                                       scratch->data(), dgx->data(), nullptr,
                                       GemmEpilogue{nullptr, &missing});
  ASSERT_FALSE(status);
  EXPECT_NE(status.message().find("rank 0, no lora_B"), std::string::npos)
      << status.message();
}

} // namespace
} // namespace qlora::cuda
