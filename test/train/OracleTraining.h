//===- OracleTraining.h - The oracle trajectory's contracts, for any step ---===//
//
// What TrainOracleTest (the cpu step) and CudaStepTest (the cuda step) both
// check against ../shared/oracle: the trainer of the reference run (its
// initial adapter, batch and optimizer settings), the reference losses, the
// step-1 gradients within 5% relative L2 per tensor, and the adapter after 8
// steps close to the reference's.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Checkpoint.h"
#include "runtime/train/Trainer.h"
#include "test/runtime/OracleFiles.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace qlora::testing {

inline double relativeL2(const std::vector<float> &ours,
                         const std::vector<float> &theirs) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < ours.size(); ++i) {
    diff += (double(ours[i]) - theirs[i]) * (double(ours[i]) - theirs[i]);
    norm += double(theirs[i]) * theirs[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

/// The reference run's trainer for the compiled step in `step`: lr 1e-3
/// constant, no clipping, the oracle's initial adapter and batch.
inline Expected<std::unique_ptr<Trainer>>
oracleTrainer(const std::string &step, int64_t accumulation = 1) {
  TrainingArguments args;
  args.gradient_accumulation_steps = accumulation;
  args.model_name_or_path = oraclePath("tiny-llama");
  args.init_adapter = oraclePath("tiny-llama-adapter-init");
  args.learning_rate = 1e-3;
  args.lr_scheduler_type = "constant";
  args.max_steps = 8;
  args.per_device_train_batch_size = 2;
  args.max_grad_norm = 0.0;
  Expected<TokenDataset> data =
      TokenDataset::open(oraclePath("tiny-llama-batch.safetensors"), 64, 1024);
  if (!data)
    return data.error();
  return Trainer::create(step, args, data.take());
}

/// The loss before each of the reference's 8 updates.
inline std::vector<double> referenceLosses() {
  Expected<json::Value> trajectory =
      readJsonFile(oraclePath("tiny-llama-trajectory.json"));
  std::vector<double> losses;
  if (trajectory)
    if (const json::Value *list = trajectory->find("losses"))
      for (const json::Value &loss : list->asArray())
        losses.push_back(loss.asDouble());
  return losses;
}

/// Checks the accumulated gradients in `trainer` against the reference's
/// step-1 gradients; returns how many tensors it compared.
inline int expectReferenceGradients(const Trainer &trainer) {
  Expected<AdapterWeights> grads =
      readPeftAdapter(oraclePath("tiny-llama-grads-step1.safetensors"));
  EXPECT_TRUE(grads) << grads.message();
  if (!grads)
    return 0;
  int checked = 0;
  for (const auto &[name, expected] : *grads) {
    Expected<std::vector<float>> ours = trainer.readFloats("grad:" + name);
    EXPECT_TRUE(ours) << ours.message();
    if (!ours)
      continue;
    EXPECT_LT(relativeL2(*ours, expected.values), 0.05) << name;
    ++checked;
  }
  return checked;
}

/// Checks an adapter after 8 steps against the reference's: close in
/// absolute terms, and the 8-step update itself agrees (the difference is
/// small next to how far the adapter moved).
inline void expectReferenceAdapter(const AdapterWeights &ours) {
  Expected<AdapterWeights> initial =
      readPeftAdapter(oraclePath("tiny-llama-adapter-init"));
  Expected<AdapterWeights> final =
      readPeftAdapter(oraclePath("tiny-llama-adapter-step8"));
  ASSERT_TRUE(initial && final);
  ASSERT_EQ(ours.size(), final->size());
  for (const auto &[name, reference] : *final) {
    const std::vector<float> &mine = ours.at(name).values;
    const std::vector<float> &start = initial->at(name).values;
    double moved = 0.0, off = 0.0;
    for (size_t i = 0; i < mine.size(); ++i) {
      moved += (double(reference.values[i]) - start[i]) *
               (double(reference.values[i]) - start[i]);
      off += (double(mine[i]) - reference.values[i]) *
             (double(mine[i]) - reference.values[i]);
    }
    EXPECT_LT(relativeL2(mine, reference.values), 0.01) << name;
    EXPECT_LT(std::sqrt(off / moved), 0.1) << name;
  }
}

} // namespace qlora::testing
