//===- TinyLlamaStepTest.cpp - The kernels composed into a QLoRA step -------===//
//
// The oracle's tiny Llama (2 layers, hidden 256, MLP 688, GQA 4/2 heads,
// vocab 1024) with its bitsandbytes NF4 + double-quant weights and PEFT LoRA
// r=8, alpha=16 on all seven projections, trained by hand-wired kernel calls:
// the step-1 loss and adapter gradients, and the 8-step AdamW trajectory,
// must match what the reference stack recorded on an H200. This checks the
// kernels' conventions (weight layouts, rope halves, GQA head mapping, PEFT
// scaling, label shift, AdamW) end to end, independently of code generation.
// Skipped where ../shared/oracle is missing.
//
//===----------------------------------------------------------------------===//
#include "../OracleFiles.h"
#include "KernelTestUtil.h"

#include "runtime/BnbFormat.h"
#include "runtime/Checkpoint.h"
#include "runtime/Float16.h"
#include "runtime/cpu/Kernels.h"

#include <cmath>
#include <map>
#include <memory>

namespace qlora {
namespace cpu {
namespace {

constexpr int64_t kBatch = 2, kSeq = 64, kTokens = kBatch * kSeq;
constexpr int64_t kHidden = 256, kMlp = 688, kHeads = 4, kKvHeads = 2,
                  kHeadDim = 64, kVocab = 1024, kLayers = 2, kRank = 8;
constexpr float kEps = 1e-5f, kTheta = 10000.0f, kLoraScale = 16.0f / 8.0f;
constexpr int32_t kIgnore = -100;

const char *kBase = "tiny-llama-bnb-nf4";
const char *kAdapterInit = "tiny-llama-adapter-init/adapter_model.safetensors";
const char *kAdapterStep8 = "tiny-llama-adapter-step8/adapter_model.safetensors";
const char *kGrads = "tiny-llama-grads-step1.safetensors";
const char *kBatchFile = "tiny-llama-batch.safetensors";
const char *kTrajectory = "tiny-llama-trajectory.json";

/// A bf16 or fp32 tensor as fp32 values.
std::vector<float> floatTensor(const SafetensorsFile &file, const std::string &name) {
  const TensorInfo *info = file.find(name);
  EXPECT_NE(info, nullptr) << "missing tensor " << name;
  if (!info)
    return {};
  ByteSpan bytes = file.data(*info);
  std::vector<float> values(size_t(info->numElements()));
  if (info->dtype == DType::F32) {
    std::memcpy(values.data(), bytes.data, values.size() * sizeof(float));
  } else {
    EXPECT_EQ(info->dtype, DType::BF16) << name;
    for (size_t i = 0; i < values.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, bytes.data + 2 * i, 2);
      values[i] = bf16ToFloat(h);
    }
  }
  return values;
}

std::vector<float> floatTensor(const CheckpointDir &dir, const std::string &name) {
  const CheckpointTensor *tensor = dir.find(name);
  EXPECT_NE(tensor, nullptr) << "missing tensor " << name;
  return tensor ? floatTensor(*tensor->file, name) : std::vector<float>{};
}

/// A frozen NF4 projection with its LoRA adapter, optimizer state and the
/// activations its backward needs.
struct Projection {
  std::string name; ///< e.g. "model.layers.0.self_attn.q_proj"
  int64_t N = 0, K = 0;
  NF4Weight weight;
  std::vector<float> absmax;
  NF4View view{};
  std::vector<float> A, B, dA, dB, mA, vA, mB, vB;
  std::vector<float> xa;
  const float *input = nullptr;

  std::string adapterKey(const char *ab, bool withDefault = false) const {
    return "base_model.model." + name + ".lora_" + ab +
           (withDefault ? ".default" : "") + ".weight";
  }

  /// y (=) = nf4(x) + scale * (x A^T) B^T, saving x and xa.
  void forward(const float *x, float *y) {
    input = x;
    nf4Linear(x, view, kTokens, y);
    loraForward(x, A.data(), B.data(), kTokens, N, K, kRank, kLoraScale,
                xa.data(), y);
  }
  /// dx = (accumulate ? dx : 0) + the input gradient; dA, dB accumulate.
  void backward(const float *dy, float *dx, bool accumulate) {
    nf4LinearBackwardInput(dy, view, kTokens, accumulate ? 1.0f : 0.0f, dx);
    loraBackward(input, A.data(), B.data(), xa.data(), dy, kTokens, N, K, kRank,
                 kLoraScale, dA.data(), dB.data(), dx);
  }
};

struct Layer {
  std::vector<float> inputNorm, postNorm;
  Projection q, k, v, o, gate, up, down;
  // Saved activations.
  std::vector<float> hIn, xn, qRot, kRot, vOut, attnOut, lse, hMid, xn2, gateOut,
      upOut, act;
};

class TinyLlama {
public:
  Status load() {
    Expected<CheckpointDir> base = CheckpointDir::open(qlora::testing::oraclePath(kBase));
    if (!base)
      return base.error();
    Expected<SafetensorsFile> adapter =
        SafetensorsFile::open(qlora::testing::oraclePath(kAdapterInit));
    if (!adapter)
      return adapter.error();
    embed_ = floatTensor(*base, "model.embed_tokens.weight");
    finalNorm_ = floatTensor(*base, "model.norm.weight");
    lmHead_ = floatTensor(*base, "lm_head.weight");
    layers_.resize(kLayers);
    for (int64_t l = 0; l < kLayers; ++l) {
      Layer &layer = layers_[size_t(l)];
      std::string prefix = "model.layers." + std::to_string(l) + ".";
      layer.inputNorm = floatTensor(*base, prefix + "input_layernorm.weight");
      layer.postNorm = floatTensor(*base, prefix + "post_attention_layernorm.weight");
      struct {
        Projection *projection;
        const char *name;
        int64_t N, K;
      } projections[] = {
          {&layer.q, "self_attn.q_proj", kHeads * kHeadDim, kHidden},
          {&layer.k, "self_attn.k_proj", kKvHeads * kHeadDim, kHidden},
          {&layer.v, "self_attn.v_proj", kKvHeads * kHeadDim, kHidden},
          {&layer.o, "self_attn.o_proj", kHidden, kHeads * kHeadDim},
          {&layer.gate, "mlp.gate_proj", kMlp, kHidden},
          {&layer.up, "mlp.up_proj", kMlp, kHidden},
          {&layer.down, "mlp.down_proj", kHidden, kMlp},
      };
      for (auto &entry : projections) {
        Projection &p = *entry.projection;
        p.name = prefix + entry.name;
        p.N = entry.N;
        p.K = entry.K;
        Expected<NF4Weight> weight = bnb::readWeight(*base, p.name + ".weight");
        if (!weight)
          return weight.error();
        p.weight = weight.take();
        if (p.weight.shape != std::vector<int64_t>{p.N, p.K})
          return makeError("{}: unexpected shape", p.name);
        p.absmax = p.weight.blockAbsmax();
        p.view = NF4View{p.weight.packed.data(), p.absmax.data(), p.N, p.K,
                         p.weight.blockSize};
        p.A = floatTensor(*adapter, p.adapterKey("A"));
        p.B = floatTensor(*adapter, p.adapterKey("B"));
        if (int64_t(p.A.size()) != kRank * p.K || int64_t(p.B.size()) != p.N * kRank)
          return makeError("{}: unexpected adapter shapes", p.name);
        p.dA.assign(p.A.size(), 0.0f);
        p.dB.assign(p.B.size(), 0.0f);
        p.mA.assign(p.A.size(), 0.0f);
        p.vA.assign(p.A.size(), 0.0f);
        p.mB.assign(p.B.size(), 0.0f);
        p.vB.assign(p.B.size(), 0.0f);
        p.xa.assign(size_t(kTokens * kRank), 0.0f);
        projections_.push_back(&p);
      }
    }
    return Status::ok();
  }

  const std::vector<Projection *> &projections() const { return projections_; }

  /// Forward and backward of one step; returns the loss, leaves the adapter
  /// gradients in the projections (zeroed first).
  Expected<float> lossAndGradients(const std::vector<int32_t> &ids) {
    for (Projection *p : projections_) {
      fill(p->dA.data(), int64_t(p->dA.size()), 0.0f);
      fill(p->dB.data(), int64_t(p->dB.size()), 0.0f);
    }
    const int64_t M = kTokens, H = kHidden;
    std::vector<float> h(size_t(M * H));
    QLORA_RETURN_IF_ERROR(embedding(embed_.data(), ids.data(), M, H, kVocab, h.data()));
    for (Layer &layer : layers_) {
      layer.hIn = h;
      layer.xn.resize(size_t(M * H));
      rmsNorm(h.data(), layer.inputNorm.data(), M, H, kEps, layer.xn.data());
      std::vector<float> q(size_t(M * kHeads * kHeadDim)),
          k(size_t(M * kKvHeads * kHeadDim));
      layer.vOut.resize(k.size());
      layer.q.forward(layer.xn.data(), q.data());
      layer.k.forward(layer.xn.data(), k.data());
      layer.v.forward(layer.xn.data(), layer.vOut.data());
      layer.qRot.resize(q.size());
      layer.kRot.resize(k.size());
      rope(q.data(), kBatch, kSeq, kHeads, kHeadDim, kTheta, layer.qRot.data());
      rope(k.data(), kBatch, kSeq, kKvHeads, kHeadDim, kTheta, layer.kRot.data());
      layer.attnOut.resize(q.size());
      layer.lse.resize(size_t(kBatch * kHeads * kSeq));
      attention(layer.qRot.data(), layer.kRot.data(), layer.vOut.data(), kBatch,
                kSeq, kHeads, kKvHeads, kHeadDim, 1.0f / std::sqrt(float(kHeadDim)),
                layer.attnOut.data(), layer.lse.data());
      std::vector<float> o(size_t(M * H));
      layer.o.forward(layer.attnOut.data(), o.data());
      add(h.data(), o.data(), M * H, h.data());
      layer.hMid = h;
      layer.xn2.resize(size_t(M * H));
      rmsNorm(h.data(), layer.postNorm.data(), M, H, kEps, layer.xn2.data());
      layer.gateOut.resize(size_t(M * kMlp));
      layer.upOut.resize(size_t(M * kMlp));
      layer.act.resize(size_t(M * kMlp));
      layer.gate.forward(layer.xn2.data(), layer.gateOut.data());
      layer.up.forward(layer.xn2.data(), layer.upOut.data());
      swiglu(layer.gateOut.data(), layer.upOut.data(), M * kMlp, layer.act.data());
      std::vector<float> down(size_t(M * H));
      layer.down.forward(layer.act.data(), down.data());
      add(h.data(), down.data(), M * H, h.data());
    }
    std::vector<float> normed(size_t(M * H)), logits(size_t(M * kVocab));
    rmsNorm(h.data(), finalNorm_.data(), M, H, kEps, normed.data());
    linear(normed.data(), lmHead_.data(), M, kVocab, H, logits.data());

    // transformers' ForCausalLMLoss: position t predicts token t + 1.
    std::vector<int32_t> labels(size_t(M), kIgnore);
    for (int64_t b = 0; b < kBatch; ++b)
      for (int64_t t = 0; t + 1 < kSeq; ++t)
        labels[size_t(b * kSeq + t)] = ids[size_t(b * kSeq + t + 1)];
    float loss = 0.0f;
    Expected<int64_t> count =
        crossEntropy(logits.data(), labels.data(), M, kVocab, kIgnore, &loss);
    if (!count)
      return count.error();

    // Backward.
    std::vector<float> dlogits(logits.size()), dnormed(normed.size()),
        dh(size_t(M * H)), tmp(size_t(M * H));
    crossEntropyBackward(logits.data(), labels.data(), M, kVocab, kIgnore, 1.0f,
                         *count, dlogits.data());
    linearBackwardInput(dlogits.data(), lmHead_.data(), M, kVocab, H, 0.0f,
                        dnormed.data());
    rmsNormBackward(h.data(), finalNorm_.data(), dnormed.data(), M, H, kEps,
                    dh.data());
    for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
      Layer &layer = *it;
      // MLP: h = hMid + down(swiglu(gate(xn2), up(xn2))).
      std::vector<float> dact(size_t(M * kMlp)), dgate(dact.size()), dup(dact.size()),
          dxn2(size_t(M * H));
      layer.down.backward(dh.data(), dact.data(), false);
      swigluBackward(layer.gateOut.data(), layer.upOut.data(), dact.data(),
                     M * kMlp, dgate.data(), dup.data());
      layer.gate.backward(dgate.data(), dxn2.data(), false);
      layer.up.backward(dup.data(), dxn2.data(), true);
      rmsNormBackward(layer.hMid.data(), layer.postNorm.data(), dxn2.data(), M,
                      H, kEps, tmp.data());
      accumulate(dh.data(), tmp.data(), M * H);
      // Attention: hMid = hIn + o(attention(rope(q(xn)), rope(k(xn)), v(xn))).
      std::vector<float> dattn(layer.attnOut.size()), dqRot(dattn.size()),
          dkRot(layer.kRot.size()), dv(layer.vOut.size()), dq(dattn.size()),
          dk(dkRot.size()), dxn(size_t(M * H));
      layer.o.backward(dh.data(), dattn.data(), false);
      attentionBackward(layer.qRot.data(), layer.kRot.data(), layer.vOut.data(),
                        layer.attnOut.data(), layer.lse.data(), dattn.data(),
                        kBatch, kSeq, kHeads, kKvHeads, kHeadDim,
                        1.0f / std::sqrt(float(kHeadDim)), dqRot.data(),
                        dkRot.data(), dv.data());
      ropeBackward(dqRot.data(), kBatch, kSeq, kHeads, kHeadDim, kTheta, dq.data());
      ropeBackward(dkRot.data(), kBatch, kSeq, kKvHeads, kHeadDim, kTheta, dk.data());
      layer.q.backward(dq.data(), dxn.data(), false);
      layer.k.backward(dk.data(), dxn.data(), true);
      layer.v.backward(dv.data(), dxn.data(), true);
      rmsNormBackward(layer.hIn.data(), layer.inputNorm.data(), dxn.data(), M,
                      H, kEps, tmp.data());
      accumulate(dh.data(), tmp.data(), M * H);
    }
    return loss;
  }

  /// torch AdamW as in the trajectory: lr 1e-3, betas (0.9, 0.999), eps 1e-8,
  /// no weight decay.
  void optimizerStep(int64_t step) {
    for (Projection *p : projections_) {
      adamw(p->A.data(), p->dA.data(), p->mA.data(), p->vA.data(),
            int64_t(p->A.size()), 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, step);
      adamw(p->B.data(), p->dB.data(), p->mB.data(), p->vB.data(),
            int64_t(p->B.size()), 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, step);
    }
  }

private:
  std::vector<float> embed_, finalNorm_, lmHead_;
  std::vector<Layer> layers_;
  std::vector<Projection *> projections_;
};

class TinyLlamaStepTest : public ::testing::Test {
protected:
  void SetUp() override {
    for (const char *file : {kBase, kAdapterInit, kAdapterStep8, kGrads,
                             kBatchFile, kTrajectory})
      QLORA_REQUIRE_ORACLE(file);
    Status loaded = model_.load();
    ASSERT_TRUE(loaded) << loaded.message();
    Expected<SafetensorsFile> batch =
        SafetensorsFile::open(qlora::testing::oraclePath(kBatchFile));
    ASSERT_TRUE(batch) << batch.message();
    for (int64_t id : qlora::testing::tensorValues<int64_t>(*batch, "input_ids"))
      ids_.push_back(int32_t(id));
    ASSERT_EQ(int64_t(ids_.size()), kTokens);
    Expected<json::Value> trajectory =
        readJsonFile(qlora::testing::oraclePath(kTrajectory));
    ASSERT_TRUE(trajectory) << trajectory.message();
    const json::Value *losses = trajectory->find("losses");
    ASSERT_NE(losses, nullptr);
    for (const json::Value &loss : losses->asArray())
      referenceLosses_.push_back(loss.asDouble());
    ASSERT_EQ(referenceLosses_.size(), 8u);
  }

  TinyLlama model_;
  std::vector<int32_t> ids_;
  std::vector<double> referenceLosses_;
};

TEST_F(TinyLlamaStepTest, StepOneLossAndAdapterGradientsMatchTheReferenceStack) {
  Expected<float> loss = model_.lossAndGradients(ids_);
  ASSERT_TRUE(loss) << loss.message();
  // Measured 7.5e-7 relative.
  EXPECT_NEAR(*loss, referenceLosses_[0], 1e-4 * referenceLosses_[0]);

  Expected<SafetensorsFile> grads = SafetensorsFile::open(qlora::testing::oraclePath(kGrads));
  ASSERT_TRUE(grads) << grads.message();
  for (const Projection *p : model_.projections())
    for (bool isA : {true, false}) {
      std::string key = p->adapterKey(isA ? "A" : "B", /*withDefault=*/true);
      std::vector<float> expected = floatTensor(*grads, key);
      const std::vector<float> &got = isA ? p->dA : p->dB;
      ASSERT_EQ(expected.size(), got.size()) << key;
      // Measured 0.2-0.55%. That is the noise floor: the bf16 roundings of
      // the NF4 projections amplify summation-order differences, and merely
      // changing this GEMM's fp32 blocking moves these gradients by 0.33%.
      EXPECT_LT(testing::relativeError(got, testing::toDouble(expected)), 1e-2)
          << key;
    }
}

TEST_F(TinyLlamaStepTest, EightAdamWStepsFollowTheReferenceTrajectory) {
  std::vector<std::vector<float>> initial;
  for (const Projection *p : model_.projections()) {
    initial.push_back(p->A);
    initial.push_back(p->B);
  }
  for (int64_t step = 1; step <= 8; ++step) {
    Expected<float> loss = model_.lossAndGradients(ids_);
    ASSERT_TRUE(loss) << loss.message();
    // The contract is 1%; the kernels stay within 2e-5 here.
    EXPECT_NEAR(*loss, referenceLosses_[size_t(step - 1)],
                1e-3 * referenceLosses_[size_t(step - 1)])
        << "step " << step;
    model_.optimizerStep(step);
  }
  // What 8 steps moved each adapter tensor, against the reference's move.
  // Adam turns the bf16-level noise of near-zero gradients into whole
  // lr-sized steps, so the moves agree to 0.5-2% (measured), not better.
  Expected<SafetensorsFile> adapter =
      SafetensorsFile::open(qlora::testing::oraclePath(kAdapterStep8));
  ASSERT_TRUE(adapter) << adapter.message();
  size_t index = 0;
  for (const Projection *p : model_.projections())
    for (bool isA : {true, false}) {
      std::string key = p->adapterKey(isA ? "A" : "B");
      std::vector<float> expected = floatTensor(*adapter, key);
      const std::vector<float> &got = isA ? p->A : p->B;
      const std::vector<float> &start = initial[index++];
      ASSERT_EQ(expected.size(), got.size()) << key;
      std::vector<float> move(got.size());
      std::vector<double> expectedMove(got.size());
      for (size_t i = 0; i < got.size(); ++i) {
        move[i] = got[i] - start[i];
        expectedMove[i] = double(expected[i]) - double(start[i]);
      }
      EXPECT_LT(testing::relativeError(move, expectedMove), 5e-2) << key;
    }
}

} // namespace
} // namespace cpu
} // namespace qlora
