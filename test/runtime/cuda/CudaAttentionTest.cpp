//===- CudaAttentionTest.cpp - Flash attention on the GPU against the CPU ---===//
//
// Label `gpu`: the kernel tests skip without a CUDA device. Each case draws
// fresh random bf16 inputs (the seed is printed when it fails) and compares
// runtime/cuda's attentionForward and attentionBackward with cpu::attention
// and cpu::attentionBackward computed in fp32 from the same bf16 values.
// Outputs and the scratch are poisoned with NaN (0xff bytes) first, so an
// unwritten element fails. bf16 outputs: the CPU result rounded to bf16, and
// a relative L2 error below 1e-2; lse (fp32): below 1e-4. The backward gets
// the CPU forward's out (rounded to bf16, as the GPU would store it) and lse,
// and the CPU backward the same rounded out, so that each direction is
// checked on its own. seq 37 and 300 leave partial query and key blocks.
//
//===----------------------------------------------------------------------===//
#include "GpuTestUtil.h"
#include "runtime/Float16.h"
#include "runtime/cpu/Kernels.h"
#include "runtime/cuda/AttentionKernels.h"
#include "runtime/cuda/CudnnAttention.h"
#include "runtime/cuda/DeviceBuffer.h"
#include "runtime/cuda/NF4Kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace qlora::cuda {
namespace {

using testing::relativeError;
using testing::take;
using testing::toBf16;
using testing::toFloat;

template <typename T> DeviceBuffer<T> upload(const std::vector<T> &values) {
  return take(DeviceBuffer<T>::upload(values));
}

/// `count` elements of NaN (0xff bytes).
template <typename T> DeviceBuffer<T> poisoned(size_t count) {
  DeviceBuffer<T> buffer = take(DeviceBuffer<T>::allocate(count));
  if (buffer.data()) {
    EXPECT_TRUE(buffer.poison().isOk());
  }
  return buffer;
}

template <typename T> std::vector<T> download(const DeviceBuffer<T> &buffer) {
  Expected<std::vector<T>> values = buffer.download();
  if (!values) {
    ADD_FAILURE() << values.error().message();
    return std::vector<T>(buffer.size());
  }
  return values.take();
}

/// A bf16 result against the CPU's fp32 one rounded to bf16.
double bf16Error(const std::vector<uint16_t> &got,
                 const std::vector<float> &ref) {
  return relativeError(toFloat(got), toFloat(toBf16(ref)));
}

constexpr double kBf16Tolerance = 1e-2;
constexpr double kLseTolerance = 1e-4;

using CudaAttention = testing::SeededGpuTest;

struct Case {
  int64_t batch, seq, heads, kvHeads, headDim;
};

std::string describe(const Case &c) {
  return "batch " + std::to_string(c.batch) + " seq " + std::to_string(c.seq) +
         " heads " + std::to_string(c.heads) + " kvHeads " +
         std::to_string(c.kvHeads) + " headDim " + std::to_string(c.headDim);
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (int64_t headDim : {64, 128})
    for (int64_t seq : {37, 128, 300})
      for (auto [heads, kvHeads] : {std::pair<int64_t, int64_t>{4, 2},
                                    std::pair<int64_t, int64_t>{8, 8}})
        all.push_back(Case{2, seq, heads, kvHeads, headDim});
  all.push_back(Case{1, 300, 8, 2, 128});
  return all;
}

/// Runs each case's forward and backward through one implementation.
struct Implementation {
  /// Enqueues the forward; false (nothing enqueued) where it declines.
  std::function<bool(const Case &, float, const uint16_t *, const uint16_t *,
                     const uint16_t *, uint16_t *, float *)>
      forward;
  /// Enqueues the backward with the group's query heads split `splits`
  /// ways (0: its own choice); false where it declines.
  std::function<bool(const Case &, float, const uint16_t *, const uint16_t *,
                     const uint16_t *, const uint16_t *, const float *,
                     const uint16_t *, void *, uint16_t *, uint16_t *,
                     uint16_t *, int64_t)>
      backward;
  /// Whether the backward takes a split count.
  bool splits = false;
};

class CudaAttentionCases : public CudaAttention {
protected:
  void expectMatchesTheCpu(const Implementation &impl) {
    for (const Case &c : cases()) {
      SCOPED_TRACE(describe(c));
      const float scale = 1.0f / std::sqrt(float(c.headDim));
      const int64_t qSize = c.batch * c.seq * c.heads * c.headDim;
      const int64_t kvSize = c.batch * c.seq * c.kvHeads * c.headDim;
      const int64_t lseSize = c.batch * c.heads * c.seq;
      std::vector<uint16_t> q = randomBf16(qSize), k = randomBf16(kvSize),
                            v = randomBf16(kvSize), dout = randomBf16(qSize);
      std::vector<float> qf = toFloat(q), kf = toFloat(k), vf = toFloat(v),
                         doutf = toFloat(dout);

      // CPU reference.
      std::vector<float> outRef(static_cast<size_t>(qSize)),
          lseRef(static_cast<size_t>(lseSize));
      cpu::attention(qf.data(), kf.data(), vf.data(), c.batch, c.seq, c.heads,
                     c.kvHeads, c.headDim, scale, outRef.data(),
                     lseRef.data());
      std::vector<uint16_t> outBf16 = toBf16(outRef);
      std::vector<float> outRounded = toFloat(outBf16);
      std::vector<float> dqRef(static_cast<size_t>(qSize)),
          dkRef(static_cast<size_t>(kvSize)),
          dvRef(static_cast<size_t>(kvSize));
      cpu::attentionBackward(qf.data(), kf.data(), vf.data(),
                             outRounded.data(), lseRef.data(), doutf.data(),
                             c.batch, c.seq, c.heads, c.kvHeads, c.headDim,
                             scale, dqRef.data(), dkRef.data(), dvRef.data());

      // Forward.
      DeviceBuffer<uint16_t> dQ = upload(q), dK = upload(k), dV = upload(v),
                             dDout = upload(dout);
      DeviceBuffer<uint16_t> dOut =
          poisoned<uint16_t>(static_cast<size_t>(qSize));
      DeviceBuffer<float> dLse = poisoned<float>(static_cast<size_t>(lseSize));
      ASSERT_TRUE(impl.forward(c, scale, dQ.data(), dK.data(), dV.data(),
                               dOut.data(), dLse.data()))
          << "the forward declined the shape";
      ASSERT_SYNCED();
      EXPECT_LT(bf16Error(download(dOut), outRef), kBf16Tolerance) << "out";
      EXPECT_LT(relativeError(download(dLse), lseRef), kLseTolerance)
          << "lse";

      // Backward, from the CPU's out and lse, with the group's query heads
      // on one CTA and split every way the group allows.
      DeviceBuffer<uint16_t> dOutRef = upload(outBf16);
      DeviceBuffer<float> dLseRef = upload(lseRef);
      const int64_t group = c.heads / c.kvHeads;
      for (int64_t splits = 1; splits <= (impl.splits ? group : 1); ++splits) {
        if (group % splits != 0)
          continue;
        SCOPED_TRACE("splits " + std::to_string(splits));
        const size_t scratchBytes = attentionBackwardScratchBytes(
            c.batch, c.seq, c.heads, c.kvHeads, c.headDim, splits);
        DeviceBuffer<float> scratch = poisoned<float>(
            (scratchBytes + sizeof(float) - 1) / sizeof(float));
        DeviceBuffer<uint16_t> dDq =
            poisoned<uint16_t>(static_cast<size_t>(qSize));
        DeviceBuffer<uint16_t> dDk =
            poisoned<uint16_t>(static_cast<size_t>(kvSize));
        DeviceBuffer<uint16_t> dDv =
            poisoned<uint16_t>(static_cast<size_t>(kvSize));
        ASSERT_TRUE(impl.backward(c, scale, dQ.data(), dK.data(), dV.data(),
                                  dOutRef.data(), dLseRef.data(),
                                  dDout.data(), scratch.data(), dDq.data(),
                                  dDk.data(), dDv.data(), splits))
            << "the backward declined the shape";
        ASSERT_SYNCED();
        EXPECT_LT(bf16Error(download(dDq), dqRef), kBf16Tolerance) << "dq";
        EXPECT_LT(bf16Error(download(dDk), dkRef), kBf16Tolerance) << "dk";
        EXPECT_LT(bf16Error(download(dDv), dvRef), kBf16Tolerance) << "dv";
      }
    }
  }
};

TEST_F(CudaAttentionCases, MatchesTheCpu) {
  Implementation builtin;
  builtin.splits = true;
  builtin.forward = [](const Case &c, float scale, const uint16_t *q,
                       const uint16_t *k, const uint16_t *v, uint16_t *out,
                       float *lse) {
    EXPECT_OK(attentionForward(q, k, v, c.batch, c.seq, c.heads, c.kvHeads,
                               c.headDim, scale, out, lse, nullptr));
    return true;
  };
  builtin.backward = [](const Case &c, float scale, const uint16_t *q,
                        const uint16_t *k, const uint16_t *v,
                        const uint16_t *out, const float *lse,
                        const uint16_t *dout, void *scratch, uint16_t *dq,
                        uint16_t *dk, uint16_t *dv, int64_t splits) {
    EXPECT_OK(attentionBackward(q, k, v, out, lse, dout, c.batch, c.seq,
                                c.heads, c.kvHeads, c.headDim, scale, scratch,
                                dq, dk, dv, nullptr, splits));
    return true;
  };
  expectMatchesTheCpu(builtin);
}

/// cuDNN's fused attention, where this host has it (QLORA_ATTENTION=cudnn
/// turns its absence into a failure): the same shapes, the same contract.
TEST_F(CudaAttentionCases, CudnnMatchesTheCpu) {
  const AttentionShape probe{1, 64, 2, 2, 64, 0.125f};
  const std::string serving = attentionImplementation(probe);
  Expected<AttentionChoice> choice = attentionChoice();
  ASSERT_TRUE(choice.isOk()) << choice.message();
  if (serving.rfind("cuDNN", 0) != 0) {
    ASSERT_NE(*choice, AttentionChoice::Cudnn) << serving;
    GTEST_SKIP() << serving;
  }
  std::cout << "attention: " << serving << "\n";
  Implementation cudnn;
  cudnn.forward = [](const Case &c, float scale, const uint16_t *q,
                     const uint16_t *k, const uint16_t *v, uint16_t *out,
                     float *lse) {
    bool ran = false;
    EXPECT_OK(cudnnAttentionForward(
        q, k, v, {c.batch, c.seq, c.heads, c.kvHeads, c.headDim, scale}, out,
        lse, nullptr, &ran));
    return ran;
  };
  cudnn.backward = [](const Case &c, float scale, const uint16_t *q,
                      const uint16_t *k, const uint16_t *v, const uint16_t *out,
                      const float *lse, const uint16_t *dout, void *scratch,
                      uint16_t *dq, uint16_t *dk, uint16_t *dv, int64_t) {
    bool ran = false;
    EXPECT_OK(cudnnAttentionBackward(
        q, k, v, out, lse, dout,
        {c.batch, c.seq, c.heads, c.kvHeads, c.headDim, scale},
        static_cast<float *>(scratch), dq, dk, dv, nullptr, &ran));
    return ran;
  };
  expectMatchesTheCpu(cudnn);
}

/// dk and dv come from registers in a fixed order (and the split partials
/// are added in a fixed order): two runs agree bit for bit (dq, summed with
/// atomics, need not). This shape splits its group of 4 four ways.
TEST_F(CudaAttention, KeyAndValueGradientsAreDeterministic) {
  const Case c{1, 200, 8, 2, 64};
  const float scale = 0.125f;
  const int64_t qSize = c.batch * c.seq * c.heads * c.headDim;
  const int64_t kvSize = c.batch * c.seq * c.kvHeads * c.headDim;
  std::vector<uint16_t> q = randomBf16(qSize), k = randomBf16(kvSize),
                        v = randomBf16(kvSize), dout = randomBf16(qSize);
  DeviceBuffer<uint16_t> dQ = upload(q), dK = upload(k), dV = upload(v),
                         dDout = upload(dout);
  DeviceBuffer<uint16_t> dOut = poisoned<uint16_t>(static_cast<size_t>(qSize));
  DeviceBuffer<float> dLse =
      poisoned<float>(size_t(c.batch * c.heads * c.seq));
  ASSERT_OK(attentionForward(dQ.data(), dK.data(), dV.data(), c.batch, c.seq,
                             c.heads, c.kvHeads, c.headDim, scale, dOut.data(),
                             dLse.data(), nullptr));
  const size_t scratchBytes = attentionBackwardScratchBytes(
      c.batch, c.seq, c.heads, c.kvHeads, c.headDim);
  DeviceBuffer<float> scratch = poisoned<float>(scratchBytes / sizeof(float));
  std::vector<uint16_t> first[2];
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<uint16_t> dDq = poisoned<uint16_t>(static_cast<size_t>(qSize));
    DeviceBuffer<uint16_t> dDk = poisoned<uint16_t>(static_cast<size_t>(kvSize));
    DeviceBuffer<uint16_t> dDv = poisoned<uint16_t>(static_cast<size_t>(kvSize));
    ASSERT_OK(attentionBackward(
        dQ.data(), dK.data(), dV.data(), dOut.data(), dLse.data(),
        dDout.data(), c.batch, c.seq, c.heads, c.kvHeads, c.headDim, scale,
        scratch.data(), dDq.data(), dDk.data(), dDv.data(), nullptr));
    ASSERT_SYNCED();
    std::vector<uint16_t> dk = download(dDk), dv = download(dDv);
    if (run == 0) {
      first[0] = dk;
      first[1] = dv;
    } else {
      EXPECT_TRUE(dk == first[0]) << "dk differs between runs";
      EXPECT_TRUE(dv == first[1]) << "dv differs between runs";
    }
  }
}

/// Argument errors come back before any launch, so this runs without a GPU.
TEST(CudaAttentionArguments, RejectsUnsupportedShapes) {
  alignas(16) static uint16_t tensor[16];
  alignas(16) static float scratch[16];
  uint16_t *p = tensor;
  Status status = attentionForward(p, p, p, 1, 8, 4, 2, 96, 0.1f, p, scratch,
                                   nullptr);
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("expects headDim 64 or 128, got 96"),
            std::string::npos)
      << status.message();

  status = attentionBackward(p, p, p, p, scratch, p, 1, 8, 4, 2, 32, 0.1f,
                             scratch, p, p, p, nullptr);
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("expects headDim 64 or 128, got 32"),
            std::string::npos)
      << status.message();

  status = attentionForward(p, p, p, 1, 8, 6, 4, 64, 0.1f, p, scratch,
                            nullptr);
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("multiple of kvHeads"), std::string::npos)
      << status.message();

  status = attentionForward(p + 1, p, p, 1, 8, 4, 2, 64, 0.1f, p, scratch,
                            nullptr);
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("16-byte aligned"), std::string::npos)
      << status.message();

  status = attentionBackward(p, p, p, p, scratch, p, 1, 8, 8, 2, 64, 0.1f,
                             scratch, p, p, p, nullptr, /*splits=*/3);
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find(
                "splits must divide the 4 query heads of a kv head, got 3"),
            std::string::npos)
      << status.message();
}

/// QLORA_ATTENTION is read on every call: `builtin` leaves the call to the
/// built-in kernels without touching cuDNN or the GPU, and a value that is
/// none of auto, cudnn and builtin is an error naming it.
TEST(CudaAttentionChoice, BuiltinDeclinesAndAnUnknownValueIsRefused) {
  const char *saved = std::getenv("QLORA_ATTENTION");
  std::string previous = saved ? saved : "";
  alignas(16) static uint16_t tensor[16];
  alignas(16) static float lse[16];
  const AttentionShape shape{1, 8, 2, 2, 64, 0.125f};

  setenv("QLORA_ATTENTION", "builtin", 1);
  bool ran = true;
  Status status = cudnnAttentionForward(tensor, tensor, tensor, shape, tensor,
                                        lse, nullptr, &ran);
  EXPECT_TRUE(status.isOk()) << status.message();
  EXPECT_FALSE(ran);
  EXPECT_EQ(attentionImplementation(shape),
            "built-in kernels (QLORA_ATTENTION=builtin)");

  setenv("QLORA_ATTENTION", "fast", 1);
  status = cudnnAttentionBackward(tensor, tensor, tensor, tensor, lse, tensor,
                                  shape, lse, tensor, tensor, tensor, nullptr,
                                  &ran);
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find(
                "QLORA_ATTENTION is 'fast'; expected auto, cudnn or builtin"),
            std::string::npos)
      << status.message();

  if (saved)
    setenv("QLORA_ATTENTION", previous.c_str(), 1);
  else
    unsetenv("QLORA_ATTENTION");
}

/// The default split keeps the dk / dv kernel near 1024 CTAs.
TEST(CudaAttentionArguments, SplitsGqaGroupsOnlyWhenCtasAreFew) {
  // 32 key blocks x 8 kv heads = 256 CTAs: a group of 4 splits 4 ways.
  EXPECT_EQ(attentionBackwardSplits(1, 2048, 32, 8), 4);
  // 4 x 256 = 1024 CTAs already: no split.
  EXPECT_EQ(attentionBackwardSplits(4, 2048, 32, 8), 1);
  // 2 x 256 = 512: only 2 of the 4 fit under 1024.
  EXPECT_EQ(attentionBackwardSplits(2, 2048, 32, 8), 2);
  // MHA never splits.
  EXPECT_EQ(attentionBackwardSplits(1, 64, 32, 32), 1);
  // The scratch grows by each split's fp32 dk and dv.
  EXPECT_EQ(attentionBackwardScratchBytes(1, 100, 8, 2, 64, 2) -
                attentionBackwardScratchBytes(1, 100, 8, 2, 64, 1),
            2 * 2 * 100 * 2 * 64 * sizeof(float));
}

} // namespace
} // namespace qlora::cuda
