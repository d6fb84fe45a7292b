//===- Trainer.h - Runs a compiled training step ----------------------------===//
//
// The host side of training: one arena holding every buffer of the compiled
// step, filled from the base checkpoint (bf16 weights quantized to NF4 on
// load, or a bitsandbytes 4-bit checkpoint read as is), the adapter (PEFT's
// initialization or an initial adapter), and the data; then steps of
// gradient accumulation and one optimizer update each, with the learning
// rate schedule on the host.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/train/Adapter.h"
#include "runtime/train/Data.h"
#include "runtime/train/Schedule.h"
#include "runtime/train/StepLibrary.h"
#include "runtime/train/StepOptions.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace qlora {

/// The TrainingArguments fields the trainer uses, named as there.
struct TrainingArguments {
  std::string model_name_or_path;
  std::string data;
  std::string init_adapter;
  std::string output_dir;
  std::string logging_file;
  double learning_rate = 5e-5;
  int64_t max_steps = 10;
  int64_t per_device_train_batch_size = 2;
  int64_t gradient_accumulation_steps = 1;
  double max_grad_norm = step_option_defaults::max_grad_norm;
  double weight_decay = step_option_defaults::weight_decay;
  double adam_beta1 = step_option_defaults::adam_beta1;
  double adam_beta2 = step_option_defaults::adam_beta2;
  double adam_epsilon = step_option_defaults::adam_epsilon;
  std::string lr_scheduler_type = "linear";
  int64_t warmup_steps = 0;
  uint64_t seed = 42;
};

/// One optimizer step, as logged.
struct StepRecord {
  int64_t step = 0;
  double loss = 0.0;
  double learningRate = 0.0;
  double gradNorm = 0.0;
  double tokensPerSecond = 0.0;
  double seconds = 0.0;
};

class Trainer {
public:
  /// Loads the compiled step in `stepDir`, allocates the arena and fills it.
  /// `data` is the training data (already opened for the step's sequence
  /// length).
  static Expected<std::unique_ptr<Trainer>>
  create(const std::string &stepDir, const TrainingArguments &args,
         TokenDataset data);
  ~Trainer();

  /// Called between gradient accumulation and the optimizer update, when the
  /// "grad:<param>" buffers hold this step's gradients.
  using GradientObserver = std::function<void(const Trainer &)>;

  /// Gradient accumulation over micro-batches, then one optimizer update.
  /// A non-finite loss or gradient is an error and leaves the adapter as it
  /// was before this step.
  Expected<StepRecord> step(const GradientObserver &observer = nullptr);

  /// The current adapter, by PEFT name.
  AdapterWeights adapter() const;
  /// Reads a buffer of the arena as floats (tests and gradient checks).
  Expected<std::vector<float>> readFloats(const std::string &name) const;
  /// The LoraConfig recorded by the compiled step.
  LoraSettings loraSettings() const;
  const StepManifest &manifest() const { return library_.manifest(); }
  int64_t stepsTaken() const { return stepsTaken_; }

private:
  Trainer(StepLibrary library, TrainingArguments args, TokenDataset data);
  Status loadBaseModel();
  Status initializeAdapter();
  Status checkOptimizerSettings() const;
  float *floats(const BufferInfo &buffer) const;
  void writeInput(const std::string &name, const std::vector<int32_t> &values);
  void writeScalar(const std::string &name, float value);

  StepLibrary library_;
  TrainingArguments args_;
  TokenDataset data_;
  LearningRateSchedule schedule_;
  uint8_t *arena_ = nullptr;
  int64_t stepsTaken_ = 0;
};

} // namespace qlora
