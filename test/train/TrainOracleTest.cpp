//===- TrainOracleTest.cpp - The compiled step against the reference stack --===//
//
// The acceptance test of the end-to-end slice: the oracle's tiny Llama, its
// initial adapter and batch, compiled by qlora-compile and run by the
// Trainer, must reproduce what bitsandbytes + PEFT + transformers computed:
//   * every step's loss within 1% relative of tiny-llama-trajectory.json;
//   * the step-1 adapter gradients within 5% relative L2 per tensor;
//   * the adapter after 8 steps close to tiny-llama-adapter-step8.
// A twin run with a wrong LoRA scale must miss the trajectory: the checks
// are sharp enough to catch wrong math.
//
//===----------------------------------------------------------------------===//
#include "../runtime/TempDir.h"
#include "test/train/OracleTraining.h"
#include "runtime/Checkpoint.h"
#include "runtime/train/Trainer.h"
#include "tools/common/Process.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

namespace qlora {
namespace {

using testing::TempDir;

/// Compiles the reference configuration into `dir`.
Status compileStep(const std::string &dir, const std::string &loraAlpha) {
  return cli::runProcess(
      {QLORA_COMPILE_TOOL, "--model_name_or_path",
       testing::oraclePath("tiny-llama"), "--output_dir", dir,
       "--per_device_train_batch_size", "2", "--max_seq_length", "64", "--r",
       "8", "--lora_alpha", loraAlpha, "--lora_dropout", "0",
       "--target_modules", "all-linear", "--max_grad_norm", "0", "--target",
       "cpu", "--quiet"});
}

Expected<std::unique_ptr<Trainer>>
referenceTrainer(const std::string &step, int64_t accumulation = 1) {
  return testing::oracleTrainer(step, accumulation);
}

std::vector<double> referenceLosses() { return testing::referenceLosses(); }

TEST(TrainOracle, MatchesTheReferenceTrajectoryGradientsAndAdapter) {
  QLORA_REQUIRE_ORACLE("tiny-llama-trajectory.json");
  TempDir dir;
  ASSERT_TRUE(compileStep(dir.file("step"), "16"));
  Expected<std::unique_ptr<Trainer>> trainer =
      referenceTrainer(dir.file("step"));
  ASSERT_TRUE(trainer) << trainer.message();

  int checked = 0;
  auto compareGradients = [&](const Trainer &t) {
    checked = testing::expectReferenceGradients(t);
  };

  std::vector<double> expected = referenceLosses();
  ASSERT_EQ(expected.size(), 8u);
  for (size_t step = 0; step < expected.size(); ++step) {
    Expected<StepRecord> record =
        step == 0 ? (*trainer)->step(compareGradients) : (*trainer)->step();
    ASSERT_TRUE(record) << record.message();
    EXPECT_NEAR(record->loss, expected[step], 0.01 * expected[step])
        << "step " << step + 1;
  }
  EXPECT_EQ(checked, 28);

  // PEFT records the adapted module names, never "all-linear".
  EXPECT_EQ((*trainer)->loraSettings().target_modules,
            (std::vector<std::string>{"down_proj", "gate_proj", "k_proj",
                                      "o_proj", "q_proj", "up_proj",
                                      "v_proj"}));
  Expected<AdapterWeights> adapter = (*trainer)->adapter();
  ASSERT_TRUE(adapter) << adapter.message();
  testing::expectReferenceAdapter(*adapter);
}

TEST(TrainOracle, AWrongLoraScaleMissesTheTrajectory) {
  QLORA_REQUIRE_ORACLE("tiny-llama-trajectory.json");
  TempDir dir;
  ASSERT_TRUE(compileStep(dir.file("step"), "32")); // scale 4 instead of 2
  Expected<std::unique_ptr<Trainer>> trainer =
      referenceTrainer(dir.file("step"));
  ASSERT_TRUE(trainer) << trainer.message();
  std::vector<double> expected = referenceLosses();
  int outside = 0;
  for (double loss : expected) {
    Expected<StepRecord> record = (*trainer)->step();
    ASSERT_TRUE(record) << record.message();
    outside += std::fabs(record->loss - loss) > 0.01 * loss;
  }
  EXPECT_GT(outside, 0) << "the trajectory check cannot tell a wrong scale";
}

TEST(TrainOracle, AccumulatingTheSameBatchTwiceChangesNothing) {
  // Two micro-batches of the one oracle batch, each seeded with 1/2, give
  // the gradients of one batch: the trajectory must not move.
  QLORA_REQUIRE_ORACLE("tiny-llama-trajectory.json");
  TempDir dir;
  ASSERT_TRUE(compileStep(dir.file("step"), "16"));
  Expected<std::unique_ptr<Trainer>> trainer =
      referenceTrainer(dir.file("step"), /*accumulation=*/2);
  ASSERT_TRUE(trainer) << trainer.message();
  std::vector<double> expected = referenceLosses();
  for (size_t step = 0; step < 3; ++step) {
    Expected<StepRecord> record = (*trainer)->step();
    ASSERT_TRUE(record) << record.message();
    EXPECT_NEAR(record->loss, expected[step], 0.01 * expected[step]);
  }
}

TEST(TrainOracle, ABaseModelOfAnotherShapeIsRefusedAtLoad) {
  QLORA_REQUIRE_ORACLE("tiny-llama");
  TempDir dir;
  ASSERT_TRUE(compileStep(dir.file("step"), "16"));
  // A copy of the oracle model whose k_proj is narrower than compiled for.
  Expected<CheckpointDir> source =
      CheckpointDir::open(testing::oraclePath("tiny-llama"));
  ASSERT_TRUE(source);
  SafetensorsWriter writer;
  std::vector<uint16_t> narrow(64 * 256);
  for (const std::string &name : source->tensorNames()) {
    CheckpointTensor tensor = *source->get(name);
    ByteSpan bytes = tensor.file->data(*tensor.info);
    if (name == "model.layers.0.self_attn.k_proj.weight")
      ASSERT_TRUE(writer.add(name, DType::BF16, {64, 256}, narrow.data(),
                             narrow.size() * 2));
    else
      ASSERT_TRUE(writer.add(name, tensor.info->dtype, tensor.info->shape,
                             bytes.data, bytes.size));
  }
  std::filesystem::create_directories(dir.file("model"));
  ASSERT_TRUE(writer.write(dir.file("model/model.safetensors")));
  TrainingArguments args;
  args.model_name_or_path = dir.file("model");
  args.per_device_train_batch_size = 2;
  args.max_grad_norm = 0.0;
  Expected<TokenDataset> data = TokenDataset::open(
      testing::oraclePath("tiny-llama-batch.safetensors"), 64, 1024);
  ASSERT_TRUE(data);
  Expected<std::unique_ptr<Trainer>> trainer =
      Trainer::create(dir.file("step"), args, data.take());
  ASSERT_FALSE(trainer);
  EXPECT_NE(trainer.message().find("'model.layers.0.self_attn.k_proj.weight' "
                                   "has shape [64, 256] but the step was "
                                   "compiled for [128, 256]"),
            std::string::npos)
      << trainer.message();
}

} // namespace
} // namespace qlora
