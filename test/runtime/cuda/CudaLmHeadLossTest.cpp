//===- CudaLmHeadLossTest.cpp - The chunked lm_head loss against the CPU ----===//
//
// Label `gpu`. lmHeadLossChunked against the CPU reference computed from the
// same bf16 values (logits rounded to bf16, as the GPU stores them; labels
// shifted within each row of `seq`), over chunks that leave a partial one,
// with a dloss other than 1. dx is poisoned first, so an unwritten row
// fails. An invalid label lands in the status word at its shifted position.
//
//===----------------------------------------------------------------------===//
#include "runtime/Float16.h"
#include "runtime/cpu/Kernels.h"
#include "runtime/cuda/DeviceBuffer.h"
#include "runtime/cuda/LmHeadLoss.h"
#include "runtime/cuda/NF4Kernels.h"
#include "runtime/cuda/Workspaces.h"
#include "runtime/step/StepStatus.h"

#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
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
  int64_t batch = 3, seq = 100, hidden = 256, vocab = 1031;
  int64_t rows() const { return batch * seq; }
  std::vector<uint16_t> x, w;
  std::vector<int32_t> labels;
  explicit Problem(uint64_t seed) {
    std::mt19937_64 random(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_int_distribution<int32_t> label(0, int32_t(vocab) - 1);
    x.resize(rows() * hidden);
    w.resize(vocab * hidden);
    for (uint16_t &v : x)
      v = floatToBf16(normal(random));
    for (uint16_t &v : w)
      v = floatToBf16(normal(random) * 0.05f);
    labels.resize(rows());
    for (int32_t &l : labels)
      l = (random() % 5 == 0) ? -100 : label(random);
  }
  /// Position t of a row predicts labels[t + 1] of the same row.
  std::vector<int32_t> shifted() const {
    std::vector<int32_t> out(rows());
    for (int64_t r = 0; r < rows(); ++r)
      out[r] = (r % seq) + 1 < seq ? labels[r + 1] : -100;
    return out;
  }
};

/// The fused op's device buffers and one run of it.
struct FusedRun {
  Expected<DeviceBuffer<uint16_t>> x, w, dx, chunkLogits;
  Expected<DeviceBuffer<int32_t>> labels, status;
  Expected<DeviceBuffer<float>> loss, dloss;
  Expected<DeviceBuffer<uint8_t>> workspace;
  Status status_;

  FusedRun(cublasHandle_t blas, const Problem &p, int64_t chunkRows, float scale)
      : x(DeviceBuffer<uint16_t>::upload(p.x)),
        w(DeviceBuffer<uint16_t>::upload(p.w)),
        dx(DeviceBuffer<uint16_t>::allocate(p.rows() * p.hidden)),
        chunkLogits(DeviceBuffer<uint16_t>::allocate(chunkRows * p.vocab)),
        labels(DeviceBuffer<int32_t>::upload(p.labels)),
        status(DeviceBuffer<int32_t>::upload(std::vector<int32_t>(
            step_status::kStatusWords, step_status::kStatusNone))),
        loss(DeviceBuffer<float>::allocate(1)),
        dloss(DeviceBuffer<float>::upload(std::vector<float>{scale})),
        workspace(DeviceBuffer<uint8_t>::allocate(
            CrossEntropyWorkspace::forRows(p.rows()).bytes)) {
    if (!x || !w || !dx || !chunkLogits || !labels || !status || !loss ||
        !dloss || !workspace) {
      status_ = makeError("allocation failed");
      return;
    }
    status_ = dx->poison();
    if (status_)
      status_ = lmHeadLossChunked(
          blas, x->data(), w->data(), labels->data(), p.batch, p.seq,
          p.hidden, p.vocab, -100, chunkRows, workspace->data(),
          chunkLogits->data(), status->data(), loss->data(), dloss->data(),
          dx->data(), nullptr);
    if (status_ && cudaDeviceSynchronize() != cudaSuccess)
      status_ = makeError("the kernels failed");
  }
};

TEST_F(CudaLmHeadLoss, MatchesTheCpuLossAndGradient) {
  uint64_t seed = std::random_device{}();
  Problem p(seed);
  const float scale = 0.5f;
  // The CPU reference from the same bf16 values, logits rounded to bf16.
  std::vector<float> xf(p.x.size()), wf(p.w.size());
  for (size_t i = 0; i < xf.size(); ++i)
    xf[i] = bf16ToFloat(p.x[i]);
  for (size_t i = 0; i < wf.size(); ++i)
    wf[i] = bf16ToFloat(p.w[i]);
  std::vector<float> logits(p.rows() * p.vocab), dlogits(logits.size());
  cpu::linear(xf.data(), wf.data(), p.rows(), p.vocab, p.hidden,
              logits.data());
  for (float &value : logits)
    value = bf16ToFloat(floatToBf16(value));
  std::vector<int32_t> shifted = p.shifted();
  float loss = 0.0f;
  Expected<int64_t> count = cpu::crossEntropy(
      logits.data(), shifted.data(), p.rows(), p.vocab, -100, &loss);
  ASSERT_TRUE(count);
  cpu::crossEntropyBackward(logits.data(), shifted.data(), p.rows(), p.vocab,
                            -100, scale, *count, dlogits.data());
  std::vector<float> dx(p.rows() * p.hidden);
  cpu::linearBackwardInput(dlogits.data(), wf.data(), p.rows(), p.vocab,
                           p.hidden, 0.0f, dx.data());

  // 64-row chunks: four whole ones and a partial one of 44 rows.
  FusedRun run(blas_, p, 64, scale);
  ASSERT_TRUE(run.status_) << run.status_.message();
  Expected<std::vector<float>> gpuLoss = run.loss->download();
  Expected<std::vector<uint16_t>> grad = run.dx->download();
  Expected<std::vector<int32_t>> status = run.status->download();
  ASSERT_TRUE(gpuLoss && grad && status);
  EXPECT_NEAR((*gpuLoss)[0], loss, 1e-4 * std::fabs(loss)) << "seed " << seed;
  EXPECT_EQ((*status)[step_status::kBadLabelPosition],
            step_status::kStatusNone);
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < dx.size(); ++i) {
    double got = bf16ToFloat((*grad)[i]);
    ASSERT_FALSE(std::isnan(got)) << i;
    diff += (got - dx[i]) * (got - dx[i]);
    norm += double(dx[i]) * dx[i];
  }
  EXPECT_LT(std::sqrt(diff / norm), 1e-2) << "seed " << seed;
}

TEST_F(CudaLmHeadLoss, ReportsAnInvalidLabelAtItsShiftedPosition) {
  Problem p(5);
  // Label 201 is the target of position 200 (row 2, position 0).
  p.labels[201] = int32_t(p.vocab) + 7;
  FusedRun run(blas_, p, 128, 1.0f);
  ASSERT_TRUE(run.status_) << run.status_.message();
  Expected<std::vector<int32_t>> status = run.status->download();
  ASSERT_TRUE(status);
  EXPECT_EQ((*status)[step_status::kBadLabelPosition], 200);
}

TEST(LmHeadChunkRows, KeepsAChunksLogitsWithin64MiB) {
  // Llama-2's and Llama-3's vocabularies at 8192 rows.
  EXPECT_LE(lmHeadChunkRows(8192, 32000) * 32000 * 2, kLmHeadChunkLogitBytes);
  EXPECT_LE(lmHeadChunkRows(8192, 128256) * 128256 * 2,
            kLmHeadChunkLogitBytes);
  EXPECT_EQ(lmHeadChunkRows(8192, 128256) % 64, 0);
  // Never more rows than there are, never fewer than 64 (a huge vocabulary).
  EXPECT_EQ(lmHeadChunkRows(100, 1000), 100);
  EXPECT_EQ(lmHeadChunkRows(8192, int64_t(1) << 30), 64);
}

} // namespace
} // namespace qlora::cuda
