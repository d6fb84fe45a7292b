//===- Trainer.h - Runs a compiled training step ----------------------------===//
//
// The host side of training: one arena holding every buffer of the compiled
// step, on the cpu or on the GPU (StepBackend.h), filled from the base
// checkpoint (bf16 weights quantized to NF4 on load, or a bitsandbytes 4-bit
// checkpoint read as is) in the storage the step's target chose for each
// part, the adapter (PEFT's initialization or an initial adapter), and the
// data; then steps of gradient accumulation and one optimizer update each,
// with the learning rate schedule on the host. A step waits for the device
// once, to read its losses, gradient norm and status.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/train/Adapter.h"
#include "runtime/train/Data.h"
#include "runtime/train/Schedule.h"
#include "runtime/BnbFormat.h"
#include "runtime/train/StepBackend.h"
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
  /// "cuda", "cpu", or empty: the compiled step's target.
  std::string device;
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

  /// Called between gradient accumulation and the optimizer update, when the
  /// "grad:<param>" buffers hold this step's gradients.
  using GradientObserver = std::function<void(const Trainer &)>;

  /// Gradient accumulation over micro-batches, then one optimizer update.
  /// A non-finite loss or gradient is an error and leaves the adapter as it
  /// was before this step.
  Expected<StepRecord> step(const GradientObserver &observer = nullptr);

  /// The current adapter, by PEFT name.
  Expected<AdapterWeights> adapter() const;
  /// Reads a buffer of the arena as floats (tests and gradient checks).
  Expected<std::vector<float>> readFloats(const std::string &name) const;
  /// "cpu" or "cuda", and the device for the log.
  std::string device() const { return backend_->device(); }
  std::string deviceDescription() const { return backend_->description(); }
  /// The LoraConfig recorded by the compiled step.
  LoraSettings loraSettings() const;
  const StepManifest &manifest() const { return library_->manifest(); }
  int64_t stepsTaken() const { return stepsTaken_; }

private:
  Trainer(std::unique_ptr<StepLibrary> library, TrainingArguments args,
          TokenDataset data);
  Status loadBaseModel();
  Status loadNF4(const BufferInfo &buffer, const NF4Weight &weight);
  Status initializeAdapter();
  Status checkOptimizerSettings() const;
  /// Writes fp32 values into a part, converted to its dtype.
  Status writeFloats(const BufferPart &part, const float *values, int64_t n);
  Status writeInput(const std::string &name, const std::vector<int32_t> &values);
  Status writeScalar(const std::string &name, float value);
  /// The arena range of the adapters and the optimizer's state, which a
  /// failed step puts back.
  std::pair<uint64_t, uint64_t> trainingStateRange() const;
  /// The error a step's status words report, naming the offending value.
  Status checkStatus(const std::vector<uint8_t> &words,
                     const std::vector<TokenBatch> &batches) const;

  std::unique_ptr<StepLibrary> library_;
  std::unique_ptr<StepBackend> backend_;
  TrainingArguments args_;
  TokenDataset data_;
  LearningRateSchedule schedule_;
  int64_t stepsTaken_ = 0;
};

} // namespace qlora
