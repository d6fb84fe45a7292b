//===- CudaTrainingKernelsTest.cpp - Training kernels against the CPU -------===//
//
// Label `gpu`: skipped without a CUDA device. Each test draws fresh random
// inputs (the seed is printed when it fails), runs the CUDA kernel into
// outputs poisoned with NaN (0xff bytes) so that an unwritten element fails,
// and compares with runtime/cpu's reference computed in fp32 from the same
// bf16-rounded inputs. bf16 outputs: the reference is rounded to bf16 too and
// the relative L2 error must be below 1e-2; fp32 outputs: below 1e-5 (AdamW:
// bit for bit). Sizes are awkward on purpose: hidden 4096 + 3 starts rows at
// every alignment, vocab 1031 likewise, and offset pointers force the scalar
// paths.
//
//===----------------------------------------------------------------------===//
#include "GpuTestUtil.h"
#include "runtime/Float16.h"
#include "runtime/cpu/Kernels.h"
#include "runtime/cuda/DeviceBuffer.h"
#include "runtime/cuda/NF4Kernels.h"
#include "runtime/cuda/TrainingKernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace qlora::cuda {
namespace {

using testing::relativeError;
using testing::take;
using testing::roundedToBf16;
using testing::toFloat;

using CudaTrainingKernels = testing::SeededGpuTest;

/// A device copy of `values` starting `offset` elements into its allocation
/// (offset 1 breaks 16-byte alignment); the elements before are poisoned.
template <typename T> struct Placed {
  DeviceBuffer<T> buffer;
  int64_t offset = 0;
  T *data() const { return buffer.data() + offset; }
};

template <typename T>
Placed<T> place(const std::vector<T> &values, int64_t offset = 0) {
  std::vector<T> padded(values.size() + size_t(offset));
  std::memset(padded.data(), 0xff, size_t(offset) * sizeof(T));
  std::copy(values.begin(), values.end(), padded.begin() + offset);
  return {take(DeviceBuffer<T>::upload(padded)), offset};
}

/// `count` poisoned (NaN) elements at `offset` into their allocation.
template <typename T> Placed<T> poisoned(int64_t count, int64_t offset = 0) {
  Placed<T> placed{take(DeviceBuffer<T>::allocate(size_t(count + offset))),
                   offset};
  if (placed.buffer.data()) {
    EXPECT_TRUE(placed.buffer.poison().isOk());
  }
  return placed;
}

template <typename T>
std::vector<T> download(const Placed<T> &placed, int64_t count) {
  Expected<std::vector<T>> values = placed.buffer.download();
  if (!values) {
    ADD_FAILURE() << values.message();
    return std::vector<T>(static_cast<size_t>(count));
  }
  return std::vector<T>(values->begin() + placed.offset,
                        values->begin() + placed.offset + count);
}


constexpr double kBf16Tolerance = 1e-2;
constexpr double kFp32Tolerance = 1e-5;

//===----------------------------------------------------------------------===//
// RMSNorm
//===----------------------------------------------------------------------===//

TEST_F(CudaTrainingKernels, RmsNormMatchesTheCpu) {
  const float eps = 1e-5f;
  struct Case {
    int64_t rows, hidden;
    int64_t outOffset; ///< 1: y / dx misaligned against x (scalar path)
    bool inPlace;
  };
  for (Case c : {Case{37, 256, 0, false}, Case{64, 688, 0, false},
                 Case{37, 4096 + 3, 0, false}, Case{37, 688, 1, false},
                 Case{37, 4096 + 3, 0, true}}) {
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " hidden " +
                 std::to_string(c.hidden) + " offset " +
                 std::to_string(c.outOffset) + (c.inPlace ? " in place" : ""));
    const int64_t n = c.rows * c.hidden;
    std::vector<uint16_t> x = randomBf16(n, 0.1f, 1.0f);
    std::vector<uint16_t> weight = randomBf16(c.hidden, 1.0f, 0.2f);
    std::vector<uint16_t> dy = randomBf16(n, 0.0f, 1.0f);
    std::vector<float> xf = toFloat(x), wf = toFloat(weight), dyf = toFloat(dy);

    std::vector<float> yRef(size_t(n), 0.0f), dxRef(size_t(n), 0.0f);
    cpu::rmsNorm(xf.data(), wf.data(), c.rows, c.hidden, eps, yRef.data());
    cpu::rmsNormBackward(xf.data(), wf.data(), dyf.data(), c.rows, c.hidden,
                         eps, dxRef.data());
    std::vector<float> rstdRef(size_t(c.rows));
    for (int64_t r = 0; r < c.rows; ++r) {
      double sum = 0.0;
      for (int64_t i = 0; i < c.hidden; ++i)
        sum += double(xf[r * c.hidden + i]) * double(xf[r * c.hidden + i]);
      rstdRef[r] = float(1.0 / std::sqrt(sum / double(c.hidden) + eps));
    }

    Placed<uint16_t> dX = place(x), dW = place(weight), dDy = place(dy);
    Placed<uint16_t> dY = poisoned<uint16_t>(n, c.outOffset);
    Placed<float> dRstd = poisoned<float>(c.rows);
    uint16_t *yOut = c.inPlace ? dX.data() : dY.data();
    ASSERT_OK(rmsNormForward(dX.data(), dW.data(), c.rows, c.hidden, eps, yOut,
                             dRstd.data(), nullptr));
    ASSERT_SYNCED();
    std::vector<uint16_t> y = download(c.inPlace ? dX : dY, n);
    EXPECT_LT(relativeError(y, roundedToBf16(yRef)), kBf16Tolerance);
    EXPECT_LT(relativeError(download(dRstd, c.rows), rstdRef), kFp32Tolerance);

    if (c.inPlace) // x was overwritten: the backward needs it again
      dX = place(x);
    Placed<uint16_t> dDx = poisoned<uint16_t>(n, c.outOffset);
    uint16_t *dxOut = c.inPlace ? dDy.data() : dDx.data();
    ASSERT_OK(rmsNormBackward(dX.data(), dW.data(), dDy.data(), dRstd.data(),
                              c.rows, c.hidden, dxOut, nullptr));
    ASSERT_SYNCED();
    std::vector<uint16_t> dx = download(c.inPlace ? dDy : dDx, n);
    EXPECT_LT(relativeError(dx, roundedToBf16(dxRef)), kBf16Tolerance);
  }
}

//===----------------------------------------------------------------------===//
// RoPE
//===----------------------------------------------------------------------===//

TEST_F(CudaTrainingKernels, RopeMatchesTheCpu) {
  struct Case {
    int64_t batch, seq, heads, headDim;
    float theta;
    int64_t outOffset; ///< 1: misaligned output (scalar path)
    bool inPlace;
    RopeScaling scaling = {};
  };
  const RopeScaling llama3{8.0f, 1.0f, 4.0f, 8192};
  for (Case c : {Case{2, 37, 4, 64, 10000.0f, 0, false},
                 Case{2, 64, 4, 64, 10000.0f, 0, false},
                 Case{1, 64, 4, 128, 500000.0f, 0, true},
                 Case{2, 37, 3, 20, 10000.0f, 0, false}, // half 10: scalar
                 Case{2, 37, 4, 64, 10000.0f, 1, false},
                 Case{2, 300, 4, 128, 500000.0f, 0, false, llama3}}) {
    SCOPED_TRACE("batch " + std::to_string(c.batch) + " seq " +
                 std::to_string(c.seq) + " heads " + std::to_string(c.heads) +
                 " headDim " + std::to_string(c.headDim) + " offset " +
                 std::to_string(c.outOffset) + (c.inPlace ? " in place" : "") +
                 (c.scaling.enabled() ? " llama3 scaling" : ""));
    const int64_t n = c.batch * c.seq * c.heads * c.headDim;
    for (bool backward : {false, true}) {
      SCOPED_TRACE(backward ? "backward" : "forward");
      std::vector<uint16_t> x = randomBf16(n, 0.0f, 1.0f);
      std::vector<float> xf = toFloat(x), ref(size_t(n), 0.0f);
      if (backward)
        cpu::ropeBackward(xf.data(), c.batch, c.seq, c.heads, c.headDim,
                          c.theta, ref.data(), c.scaling);
      else
        cpu::rope(xf.data(), c.batch, c.seq, c.heads, c.headDim, c.theta,
                  ref.data(), c.scaling);
      Placed<uint16_t> dX = place(x);
      Placed<uint16_t> dY = poisoned<uint16_t>(n, c.outOffset);
      uint16_t *out = c.inPlace ? dX.data() : dY.data();
      auto entry = backward ? ropeBackward : ropeForward;
      ASSERT_OK(entry(dX.data(), c.batch, c.seq, c.heads, c.headDim, c.theta,
                      out, nullptr, c.scaling));
      ASSERT_SYNCED();
      std::vector<uint16_t> y = download(c.inPlace ? dX : dY, n);
      EXPECT_LT(relativeError(y, roundedToBf16(ref)), kBf16Tolerance);
    }
  }
}

TEST_F(CudaTrainingKernels, RopeRejectsBadHeadDims) {
  Status odd = ropeForward(nullptr, 1, 1, 1, 7, 10000.0f, nullptr, nullptr);
  ASSERT_FALSE(odd.isOk());
  EXPECT_NE(odd.message().find("got 7"), std::string::npos) << odd.message();
  Status large = ropeBackward(nullptr, 1, 1, 1, 2 * kMaxRopeHeadDim, 10000.0f,
                              nullptr, nullptr);
  ASSERT_FALSE(large.isOk());
  EXPECT_NE(large.message().find("got 1024"), std::string::npos)
      << large.message();
}

//===----------------------------------------------------------------------===//
// SwiGLU
//===----------------------------------------------------------------------===//

TEST_F(CudaTrainingKernels, SwigluMatchesTheCpu) {
  struct Case {
    int64_t n;
    int64_t inOffset; ///< 1: misaligned gate (scalar path)
  };
  for (Case c : {Case{37 * 688, 0}, Case{3 * (4096 + 3), 0}, Case{37 * 688, 1},
                 Case{5, 0}}) {
    SCOPED_TRACE("n " + std::to_string(c.n) + " offset " +
                 std::to_string(c.inOffset));
    std::vector<uint16_t> gate = randomBf16(c.n, 0.0f, 3.0f);
    std::vector<uint16_t> up = randomBf16(c.n, 0.0f, 1.0f);
    std::vector<uint16_t> dout = randomBf16(c.n, 0.0f, 1.0f);
    std::vector<float> gf = toFloat(gate), uf = toFloat(up), df = toFloat(dout);
    std::vector<float> outRef(size_t(c.n)), dgRef(size_t(c.n)),
        duRef(size_t(c.n));
    cpu::swiglu(gf.data(), uf.data(), c.n, outRef.data());
    cpu::swigluBackward(gf.data(), uf.data(), df.data(), c.n, dgRef.data(),
                        duRef.data());

    Placed<uint16_t> dG = place(gate, c.inOffset), dU = place(up),
                     dD = place(dout);
    Placed<uint16_t> dOut = poisoned<uint16_t>(c.n),
                     dDg = poisoned<uint16_t>(c.n),
                     dDu = poisoned<uint16_t>(c.n);
    ASSERT_OK(swigluForward(dG.data(), dU.data(), c.n, dOut.data(), nullptr));
    ASSERT_OK(swigluBackward(dG.data(), dU.data(), dD.data(), c.n, dDg.data(),
                             dDu.data(), nullptr));
    ASSERT_SYNCED();
    EXPECT_LT(relativeError(download(dOut, c.n), roundedToBf16(outRef)),
              kBf16Tolerance);
    EXPECT_LT(relativeError(download(dDg, c.n), roundedToBf16(dgRef)),
              kBf16Tolerance);
    EXPECT_LT(relativeError(download(dDu, c.n), roundedToBf16(duRef)),
              kBf16Tolerance);

    // In place: out over gate; dgate over gate and dup over up.
    ASSERT_OK(swigluForward(dG.data(), dU.data(), c.n, dG.data(), nullptr));
    ASSERT_SYNCED();
    EXPECT_LT(relativeError(download(dG, c.n), roundedToBf16(outRef)),
              kBf16Tolerance);
    dG = place(gate, c.inOffset);
    ASSERT_OK(swigluBackward(dG.data(), dU.data(), dD.data(), c.n, dG.data(),
                             dU.data(), nullptr));
    ASSERT_SYNCED();
    EXPECT_LT(relativeError(download(dG, c.n), roundedToBf16(dgRef)),
              kBf16Tolerance);
    EXPECT_LT(relativeError(download(dU, c.n), roundedToBf16(duRef)),
              kBf16Tolerance);
  }
}

//===----------------------------------------------------------------------===//
// Cross-entropy
//===----------------------------------------------------------------------===//

constexpr int32_t kIgnore = -100;

/// Labels in [0, vocab), a fifth of them ignored.
std::vector<int32_t> randomLabels(std::mt19937_64 &engine, int64_t rows,
                                  int64_t vocab) {
  std::uniform_int_distribution<int32_t> label(0, int32_t(vocab) - 1);
  std::uniform_int_distribution<int> fifth(0, 4);
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (int32_t &value : labels)
    value = fifth(engine) == 0 ? kIgnore : label(engine);
  return labels;
}

TEST_F(CudaTrainingKernels, CrossEntropyMatchesTheCpu) {
  struct Case {
    int64_t rows, vocab;
    int64_t outOffset; ///< 1: dlogits misaligned against logits (scalar)
    bool inPlace;
    int64_t inOffset = 0; ///< with outOffset 1: a scalar head of 3
  };
  const float dloss = 0.5f;
  // Rows of up to ~56K fp32 logits fit in an H200 block's shared memory
  // and are read once (the cached kernel); 70001 takes the two-pass one.
  for (Case c : {Case{37, 1031, 0, false}, Case{64, 1031, 0, false},
                 Case{8, 32000, 0, false}, Case{37, 1031, 1, false},
                 Case{64, 1031, 0, true}, Case{37, 1031, 1, false, 1},
                 Case{5, 70001, 0, false}, Case{5, 70001, 1, true, 1}}) {
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " vocab " +
                 std::to_string(c.vocab) + " offsets " +
                 std::to_string(c.inOffset) + "/" +
                 std::to_string(c.outOffset) + (c.inPlace ? " in place" : ""));
    const int64_t n = c.rows * c.vocab;
    std::vector<float> logits = randomFloat(n, 3.0f);
    std::vector<int32_t> labels = randomLabels(engine(), c.rows, c.vocab);
    labels[0] = int32_t(c.vocab) - 1; // at least one counted row, at the end
    float lossRef = 0.0f;
    Expected<int64_t> countRef = cpu::crossEntropy(
        logits.data(), labels.data(), c.rows, c.vocab, kIgnore, &lossRef);
    ASSERT_TRUE(countRef.isOk()) << countRef.message();
    std::vector<float> dlogitsRef(static_cast<size_t>(n));
    cpu::crossEntropyBackward(logits.data(), labels.data(), c.rows, c.vocab,
                              kIgnore, dloss, *countRef, dlogitsRef.data());
    std::vector<float> rowLossRef(size_t(c.rows), 0.0f);
    for (int64_t r = 0; r < c.rows; ++r) {
      if (labels[r] == kIgnore)
        continue;
      const float *row = logits.data() + r * c.vocab;
      double max = row[0], sum = 0.0;
      for (int64_t j = 0; j < c.vocab; ++j)
        max = std::max(max, double(row[j]));
      for (int64_t j = 0; j < c.vocab; ++j)
        sum += std::exp(double(row[j]) - max);
      rowLossRef[r] = float(max + std::log(sum) - double(row[labels[r]]));
    }

    Placed<float> dLogits = place(logits, c.inOffset);
    Placed<int32_t> dLabels = place(labels);
    Placed<float> dDlogits = poisoned<float>(n, c.outOffset);
    Placed<float> dRowLoss = poisoned<float>(c.rows), dLoss = poisoned<float>(1);
    Placed<int32_t> dStatus = poisoned<int32_t>(kCrossEntropyStatusWords);
    float *out = c.inPlace ? dLogits.data() : dDlogits.data();
    Expected<int64_t> count = crossEntropy(
        dLogits.data(), dLabels.data(), c.rows, c.vocab, kIgnore, dloss, out,
        dRowLoss.data(), dLoss.data(), dStatus.data(), nullptr);
    ASSERT_TRUE(count.isOk()) << count.message();
    ASSERT_SYNCED();
    EXPECT_EQ(*count, *countRef);
    std::vector<float> loss = download(dLoss, 1);
    EXPECT_LT(relativeError(loss, std::vector<float>{lossRef}), kFp32Tolerance)
        << loss[0] << " vs " << lossRef;
    EXPECT_LT(relativeError(download(dRowLoss, c.rows), rowLossRef),
              kFp32Tolerance);
    EXPECT_LT(relativeError(download(c.inPlace ? dLogits : dDlogits, n),
                            dlogitsRef),
              kFp32Tolerance);
  }
}

TEST_F(CudaTrainingKernels, CrossEntropyWithEveryRowIgnored) {
  const int64_t rows = 5, vocab = 1031;
  std::vector<float> logits = randomFloat(rows * vocab, 3.0f);
  std::vector<int32_t> labels(rows, kIgnore);
  Placed<float> dLogits = place(logits);
  Placed<int32_t> dLabels = place(labels);
  Placed<float> dDlogits = poisoned<float>(rows * vocab);
  Placed<float> dRowLoss = poisoned<float>(rows), dLoss = poisoned<float>(1);
  Placed<int32_t> dStatus = poisoned<int32_t>(kCrossEntropyStatusWords);
  Expected<int64_t> count = crossEntropy(
      dLogits.data(), dLabels.data(), rows, vocab, kIgnore, 1.0f,
      dDlogits.data(), dRowLoss.data(), dLoss.data(), dStatus.data(), nullptr);
  ASSERT_TRUE(count.isOk()) << count.message();
  EXPECT_EQ(*count, 0);
  EXPECT_EQ(download(dLoss, 1), std::vector<float>{0.0f});
  EXPECT_EQ(download(dDlogits, rows * vocab),
            std::vector<float>(size_t(rows * vocab), 0.0f));
  EXPECT_EQ(download(dRowLoss, rows), std::vector<float>(size_t(rows), 0.0f));
}

TEST_F(CudaTrainingKernels, CrossEntropyReportsTheFirstInvalidLabel) {
  const int64_t rows = 37, vocab = 1031;
  std::vector<float> logits = randomFloat(rows * vocab, 3.0f);
  for (int32_t bad : {int32_t(vocab), int32_t(-3)}) {
    std::vector<int32_t> labels = randomLabels(engine(), rows, vocab);
    labels[5] = bad;
    labels[20] = int32_t(vocab) + 7; // a later one: not the one reported
    Placed<float> dLogits = place(logits);
    Placed<int32_t> dLabels = place(labels);
    Placed<float> dDlogits = poisoned<float>(rows * vocab);
    Placed<float> dRowLoss = poisoned<float>(rows), dLoss = poisoned<float>(1);
    Placed<int32_t> dStatus = poisoned<int32_t>(kCrossEntropyStatusWords);
    Expected<int64_t> count = crossEntropy(
        dLogits.data(), dLabels.data(), rows, vocab, kIgnore, 1.0f,
        dDlogits.data(), dRowLoss.data(), dLoss.data(), dStatus.data(),
        nullptr);
    ASSERT_FALSE(count.isOk());
    const std::string &message = count.message();
    EXPECT_NE(message.find("label " + std::to_string(bad) + " at row 5 "),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("[0, 1031)"), std::string::npos) << message;
    ASSERT_SYNCED(); // no out-of-bounds read of the bad rows' logits
  }
}

//===----------------------------------------------------------------------===//
// AdamW, sum of squares, scale
//===----------------------------------------------------------------------===//

TEST_F(CudaTrainingKernels, AdamwMatchesTheCpuBitForBit) {
  struct Case {
    int64_t n;
    float beta1; ///< 0.3: torch's lerp takes its other branch
    float weightDecay;
    int64_t offset; ///< 1: misaligned (scalar path)
  };
  for (Case c : {Case{3 * (4096 + 3) + 1, 0.9f, 0.01f, 0},
                 Case{3 * (4096 + 3) + 1, 0.3f, 0.0f, 0},
                 Case{1000, 0.9f, 0.1f, 1}}) {
    SCOPED_TRACE("n " + std::to_string(c.n) + " beta1 " +
                 std::to_string(c.beta1) + " offset " +
                 std::to_string(c.offset));
    const float lr = 1e-3f, beta2 = 0.999f, eps = 1e-8f;
    std::vector<float> param = randomFloat(c.n, 0.05f);
    std::vector<float> m(size_t(c.n), 0.0f), v(size_t(c.n), 0.0f);
    Placed<float> dP = place(param, c.offset), dM = place(m, c.offset),
                  dV = place(v, c.offset);
    for (int64_t step = 1; step <= 3; ++step) {
      std::vector<float> grad = randomFloat(c.n, 1e-2f);
      grad[0] = 0.0f; // v stays 0 at the first step: denom is eps
      Placed<float> dG = place(grad, c.offset);
      cpu::adamw(param.data(), grad.data(), m.data(), v.data(), c.n, lr,
                 c.beta1, beta2, eps, c.weightDecay, step);
      ASSERT_OK(adamw(dP.data(), dG.data(), dM.data(), dV.data(), c.n, lr,
                      c.beta1, beta2, eps, c.weightDecay, step, nullptr));
    }
    ASSERT_SYNCED();
    std::vector<float> p = download(dP, c.n), mg = download(dM, c.n),
                       vg = download(dV, c.n);
    EXPECT_LT(relativeError(p, param), kFp32Tolerance);
    EXPECT_LT(relativeError(mg, m), kFp32Tolerance);
    EXPECT_LT(relativeError(vg, v), kFp32Tolerance);
    // Same fp32 operations in the same order, no contraction: same bits.
    EXPECT_EQ(0, std::memcmp(p.data(), param.data(), p.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(mg.data(), m.data(), m.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(vg.data(), v.data(), v.size() * sizeof(float)));
  }
}

TEST_F(CudaTrainingKernels, SumOfSquaresIsDeterministicAndMatchesTheCpu) {
  Placed<double> partials = poisoned<double>(kSumOfSquaresPartials);
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(3 * (4096 + 3) + 1),
                    int64_t((1 << 20) + 5)}) {
    SCOPED_TRACE("n " + std::to_string(n));
    std::vector<float> x = randomFloat(n, 1e-2f);
    float expected = float(cpu::sumOfSquares(x.data(), n));
    std::vector<float> results;
    for (int64_t offset : {0, 1, 0}) { // the order does not depend on it
      Placed<float> dX = place(x, offset);
      Placed<float> dOut = poisoned<float>(1);
      ASSERT_OK(sumOfSquares(dX.data(), n, partials.data(), dOut.data(),
                             nullptr));
      ASSERT_SYNCED();
      results.push_back(download(dOut, 1)[0]);
    }
    EXPECT_LT(relativeError(std::vector<float>{results[0]},
                            std::vector<float>{expected}), kFp32Tolerance)
        << results[0] << " vs " << expected;
    EXPECT_EQ(floatToBits(results[0]), floatToBits(results[1]));
    EXPECT_EQ(floatToBits(results[0]), floatToBits(results[2]));
  }
}

TEST_F(CudaTrainingKernels, ScaleByDeviceScalarMatchesTheCpu) {
  for (int64_t offset : {0, 1}) {
    const int64_t n = 3 * (4096 + 3) + 1;
    std::vector<float> x = randomFloat(n, 1.0f);
    const float factor = 0.3721f;
    Placed<float> dX = place(x, offset);
    Placed<float> dFactor = place(std::vector<float>{factor});
    ASSERT_OK(scaleByDeviceScalar(dX.data(), n, dFactor.data(), nullptr));
    ASSERT_SYNCED();
    cpu::scale(x.data(), n, factor);
    std::vector<float> got = download(dX, n);
    EXPECT_LT(relativeError(got, x), kFp32Tolerance);
    EXPECT_EQ(0, std::memcmp(got.data(), x.data(), x.size() * sizeof(float)));
  }
}

} // namespace
} // namespace qlora::cuda
