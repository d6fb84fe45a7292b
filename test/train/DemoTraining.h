//===- DemoTraining.h - The demo's training, for tests ---------*- C++ -*-===//
//
// The demo configuration (tools/setup.sh demo): the built-in tiny Llama
// trained on the built-in text, whose losses tests compare across steps
// compiled differently.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/TinyLlama.h"
#include "runtime/train/Data.h"
#include "runtime/train/Trainer.h"

#include <memory>
#include <string>
#include <vector>

namespace qlora::testing {

/// The demo trainer for the compiled step in `step` on the model in `model`
/// (writeTinyLlama's): lr 3e-3 cosine, 2 warmup steps, 20 steps of 4 x 128.
inline Expected<std::unique_ptr<Trainer>>
demoTrainer(const std::string &step, const std::string &model) {
  TrainingArguments args;
  args.model_name_or_path = model;
  args.learning_rate = 3e-3;
  args.lr_scheduler_type = "cosine";
  args.warmup_steps = 2;
  args.max_steps = 20;
  args.per_device_train_batch_size = 4;
  Expected<TokenDataset> data = TokenDataset::fromText(
      builtinTrainingText(), "the built-in text", 128, 1024);
  if (!data)
    return data.error();
  return Trainer::create(step, args, data.take());
}

/// The losses of the demo's 20 steps.
inline Expected<std::vector<double>> demoLosses(const std::string &step,
                                                const std::string &model) {
  Expected<std::unique_ptr<Trainer>> trainer = demoTrainer(step, model);
  if (!trainer)
    return trainer.error();
  std::vector<double> losses;
  for (int i = 0; i < 20; ++i) {
    Expected<StepRecord> record = (*trainer)->step();
    if (!record)
      return record.error();
    losses.push_back(record->loss);
  }
  return losses;
}

} // namespace qlora::testing
