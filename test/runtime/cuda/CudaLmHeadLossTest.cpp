//===- CudaLmHeadLossTest.cpp - The chunked lm_head loss against the CPU ----===//
#include "runtime/Float16.h"
#include "runtime/cpu/Kernels.h"
#include "runtime/cuda/DeviceBuffer.h"
#include "runtime/cuda/LmHeadLoss.h"
#include "runtime/cuda/NF4Kernels.h"

#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace qlora::cuda {
namespace {

class CudaLmHeadLoss : public ::testing::Test {
protected:
  void SetUp() override {
    if (!haveCudaDevice())
      GTEST_SKIP() << "no CUDA device";
    ASSERT_EQ(cublasCreate(&blas_), CUBLAS_STATUS_SUCCESS);
  }
  void TearDown() override {
    if (blas_)
      cublasDestroy(blas_);
  }
  cublasHandle_t blas_ = nullptr;
};

struct Problem {
  int64_t rows = 300, hidden = 256, vocab = 1031;
  std::vector<uint16_t> x, w;
  std::vector<int32_t> labels;
  explicit Problem(uint64_t seed) {
    std::mt19937_64 random(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_int_distribution<int32_t> label(0, int32_t(vocab) - 1);
    x.resize(rows * hidden);
    w.resize(vocab * hidden);
    for (uint16_t &v : x)
      v = floatToBf16(normal(random));
    for (uint16_t &v : w)
      v = floatToBf16(normal(random) * 0.05f);
    labels.resize(rows);
    for (int32_t &l : labels)
      l = (random() % 5 == 0) ? -100 : label(random);
  }
};

TEST_F(CudaLmHeadLoss, MatchesTheCpuLossAndGradient) {
  uint64_t seed = std::random_device{}();
  Problem p(seed);
  // The CPU reference from the same bf16 values, in fp32.
  std::vector<float> xf(p.x.size()), wf(p.w.size());
  for (size_t i = 0; i < xf.size(); ++i)
    xf[i] = bf16ToFloat(p.x[i]);
  for (size_t i = 0; i < wf.size(); ++i)
    wf[i] = bf16ToFloat(p.w[i]);
  std::vector<float> logits(p.rows * p.vocab), dlogits(logits.size());
  cpu::linear(xf.data(), wf.data(), p.rows, p.vocab, p.hidden, logits.data());
  float loss = 0.0f;
  Expected<int64_t> count = cpu::crossEntropy(
      logits.data(), p.labels.data(), p.rows, p.vocab, -100, &loss);
  ASSERT_TRUE(count);
  cpu::crossEntropyBackward(logits.data(), p.labels.data(), p.rows, p.vocab,
                            -100, 1.0f, *count, dlogits.data());
  std::vector<float> dx(p.rows * p.hidden);
  cpu::linearBackwardInput(dlogits.data(), wf.data(), p.rows, p.vocab,
                           p.hidden, 0.0f, dx.data());

  auto dxDevice = DeviceBuffer<uint16_t>::upload(p.x);
  auto wDevice = DeviceBuffer<uint16_t>::upload(p.w);
  auto labelDevice = DeviceBuffer<int32_t>::upload(p.labels);
  auto gradDevice = DeviceBuffer<uint16_t>::allocate(p.rows * p.hidden);
  auto scratch = DeviceBuffer<uint8_t>::allocate(
      lmHeadLossScratchBytes(p.rows, p.vocab, 128));
  ASSERT_TRUE(dxDevice && wDevice && labelDevice && gradDevice && scratch);
  ASSERT_TRUE(gradDevice->poison());
  Expected<double> gpuLoss = lmHeadLoss(
      blas_, dxDevice->data(), wDevice->data(), labelDevice->data(), p.rows,
      p.hidden, p.vocab, -100, 128, scratch->data(), gradDevice->data(),
      nullptr);
  ASSERT_TRUE(gpuLoss) << gpuLoss.message();
  EXPECT_NEAR(*gpuLoss, loss, 1e-4 * std::fabs(loss)) << "seed " << seed;

  Expected<std::vector<uint16_t>> grad = gradDevice->download();
  ASSERT_TRUE(grad);
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < dx.size(); ++i) {
    double got = bf16ToFloat((*grad)[i]);
    ASSERT_FALSE(std::isnan(got)) << i;
    diff += (got - dx[i]) * (got - dx[i]);
    norm += double(dx[i]) * dx[i];
  }
  EXPECT_LT(std::sqrt(diff / norm), 1e-2) << "seed " << seed;
}

TEST_F(CudaLmHeadLoss, ReportsAnInvalidLabel) {
  Problem p(5);
  p.labels[200] = int32_t(p.vocab) + 7;
  auto x = DeviceBuffer<uint16_t>::upload(p.x);
  auto w = DeviceBuffer<uint16_t>::upload(p.w);
  auto labels = DeviceBuffer<int32_t>::upload(p.labels);
  auto grad = DeviceBuffer<uint16_t>::allocate(p.rows * p.hidden);
  auto scratch = DeviceBuffer<uint8_t>::allocate(
      lmHeadLossScratchBytes(p.rows, p.vocab, 128));
  ASSERT_TRUE(x && w && labels && grad && scratch);
  Expected<double> loss =
      lmHeadLoss(blas_, x->data(), w->data(), labels->data(), p.rows,
                 p.hidden, p.vocab, -100, 128, scratch->data(), grad->data(),
                 nullptr);
  ASSERT_FALSE(loss);
  EXPECT_NE(loss.message().find("1038"), std::string::npos) << loss.message();
}

} // namespace
} // namespace qlora::cuda
