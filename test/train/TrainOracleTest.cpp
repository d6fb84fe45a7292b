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
#include "runtime/train/Manifest.h"
#include "runtime/train/Trainer.h"
#include "tools/common/Process.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace qlora {
namespace {

using testing::TempDir;

/// Compiles the reference configuration into `dir`, with `extra` flags.
Status compileStep(const std::string &dir, const std::string &loraAlpha,
                   const std::string &loraDropout = "0",
                   std::vector<std::string> extra = {}) {
  std::vector<std::string> command = {
      QLORA_COMPILE_TOOL, "--model_name_or_path",
      testing::oraclePath("tiny-llama"), "--output_dir", dir,
      "--per_device_train_batch_size", "2", "--max_seq_length", "64", "--r",
      "8", "--lora_alpha", loraAlpha, "--lora_dropout", loraDropout,
      "--target_modules", "all-linear", "--max_grad_norm", "0", "--target",
      "cpu", "--quiet"};
  command.insert(command.end(), extra.begin(), extra.end());
  return cli::runProcess(command);
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

TEST(TrainOracle, RecomputingUnderAMemoryBudgetTrainsBitIdentically) {
  // The same step, compiled without a cap and under --max_memory that forces
  // recomputation (with dropout, whose masks the recomputed branches must
  // redraw alike): a smaller plan, and the same losses and adapter, bit for
  // bit, since recomputation reruns the same kernels on the same inputs.
  QLORA_REQUIRE_ORACLE("tiny-llama-trajectory.json");
  TempDir dir;
  ASSERT_TRUE(compileStep(dir.file("full"), "16", "0.1"));
  Expected<StepManifest> full = StepManifest::read(dir.file("full/manifest.json"));
  ASSERT_TRUE(full) << full.message();
  // Tight enough that LoRA branches with dropout are recomputed too.
  uint64_t budget = full->arenaBytes * 77 / 100;
  ASSERT_TRUE(compileStep(dir.file("capped"), "16", "0.1",
                          {"--max_memory", std::to_string(budget)}));
  Expected<StepManifest> capped = StepManifest::read(dir.file("capped/manifest.json"));
  ASSERT_TRUE(capped) << capped.message();
  EXPECT_LE(capped->arenaBytes, budget);
  std::ifstream ir(dir.file("capped/train_step.mlir"));
  int recomputedBranches = 0;
  for (std::string line; std::getline(ir, line);)
    recomputedBranches += line.find("qlora.lora_linear") != std::string::npos &&
                          line.find("qlora.recomputed") != std::string::npos;
  EXPECT_GT(recomputedBranches, 0);

  Expected<std::unique_ptr<Trainer>> a = referenceTrainer(dir.file("full"));
  Expected<std::unique_ptr<Trainer>> b = referenceTrainer(dir.file("capped"));
  ASSERT_TRUE(a) << a.message();
  ASSERT_TRUE(b) << b.message();
  for (int step = 0; step < 4; ++step) {
    Expected<StepRecord> ra = (*a)->step();
    Expected<StepRecord> rb = (*b)->step();
    ASSERT_TRUE(ra) << ra.message();
    ASSERT_TRUE(rb) << rb.message();
    EXPECT_EQ(ra->loss, rb->loss) << "step " << step + 1;
  }
  Expected<AdapterWeights> wa = (*a)->adapter();
  Expected<AdapterWeights> wb = (*b)->adapter();
  ASSERT_TRUE(wa && wb);
  ASSERT_EQ(wa->size(), wb->size());
  for (const auto &[name, tensor] : *wa) {
    ASSERT_TRUE(wb->count(name)) << name;
    EXPECT_EQ(tensor.values, wb->at(name).values) << name;
  }
}

TEST(TrainOracle, ABudgetBelowTheWeightsIsRefusedWithTheNumbers) {
  QLORA_REQUIRE_ORACLE("tiny-llama");
  TempDir dir;
  Status refused = compileStep(dir.file("step"), "16", "0",
                               {"--max_memory", "1MiB"});
  ASSERT_FALSE(refused); // the message: test/Passes/rematerialize-errors.mlir
  EXPECT_FALSE(std::filesystem::exists(dir.file("step/step.so")));
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
