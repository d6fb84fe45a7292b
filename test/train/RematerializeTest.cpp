//===- RematerializeTest.cpp - Steps compiled under a memory budget ---------===//
//
// qlora-compile --max_memory recomputes activations in the backward and
// offloads what is still kept to host memory. Neither may change what is
// computed: on the cpu backend, the same step compiled with and without a
// budget trains to the same losses and adapter, bit for bit, since the
// recomputed ops rerun the same kernels on the same inputs, with the same
// dropout masks, and the offloaded tensors come back unchanged.
//
//===----------------------------------------------------------------------===//
#include "runtime/train/Manifest.h"
#include "test/runtime/TempDir.h"
#include "test/train/DemoTraining.h"
#include "test/train/OracleTraining.h"
#include "tools/common/Process.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace qlora {
namespace {

using testing::TempDir;

/// Compiles a cpu step of `model` into `dir` for batch x seq tokens with
/// LoRA dropout 0.1, plus `extra` flags.
Status compile(const std::string &model, const std::string &dir,
               int64_t batch, int64_t seq,
               std::vector<std::string> extra = {}) {
  // The oracle's trainer does not clip; the demo's does.
  std::string clip = model == testing::oraclePath("tiny-llama") ? "0" : "1";
  std::vector<std::string> command = {
      QLORA_COMPILE_TOOL, "--model_name_or_path", model, "--output_dir", dir,
      "--per_device_train_batch_size", std::to_string(batch),
      "--max_seq_length", std::to_string(seq), "--r", "8", "--lora_alpha",
      "16", "--lora_dropout", "0.1", "--target_modules", "all-linear",
      "--max_grad_norm", clip, "--target", "cpu", "--quiet"};
  command.insert(command.end(), extra.begin(), extra.end());
  return cli::runProcess(command);
}

Expected<StepManifest> manifestOf(const std::string &dir) {
  return StepManifest::read(dir + "/manifest.json");
}

/// Lines of the step's IR that hold an op of `name` marked `marker`.
int countMarked(const std::string &dir, const std::string &name,
                const std::string &marker) {
  std::ifstream ir(dir + "/train_step.mlir");
  int count = 0;
  for (std::string line; std::getline(ir, line);)
    count += line.find(name) != std::string::npos &&
             line.find(marker) != std::string::npos;
  return count;
}

/// Trains both steps in lockstep; expects identical losses and adapters.
void expectSameTraining(Expected<std::unique_ptr<Trainer>> a,
                        Expected<std::unique_ptr<Trainer>> b, int steps) {
  ASSERT_TRUE(a) << a.message();
  ASSERT_TRUE(b) << b.message();
  for (int step = 0; step < steps; ++step) {
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

TEST(Rematerialize, RecomputedBranchesWithDropoutTrainBitIdentically) {
  QLORA_REQUIRE_ORACLE("tiny-llama");
  TempDir dir;
  std::string model = testing::oraclePath("tiny-llama");
  ASSERT_TRUE(compile(model, dir.file("full"), 2, 64));
  Expected<StepManifest> full = manifestOf(dir.file("full"));
  ASSERT_TRUE(full) << full.message();
  // Tight enough that LoRA branches with dropout are recomputed too, and
  // nothing offloaded.
  uint64_t budget = full->arenaBytes * 77 / 100;
  ASSERT_TRUE(compile(model, dir.file("capped"), 2, 64,
                      {"--max_memory", std::to_string(budget),
                       "--offload_activations=false"}));
  Expected<StepManifest> capped = manifestOf(dir.file("capped"));
  ASSERT_TRUE(capped) << capped.message();
  EXPECT_LE(capped->arenaBytes, budget);
  EXPECT_EQ(capped->hostArenaBytes, 0u);
  EXPECT_GT(countMarked(dir.file("capped"), "qlora.lora_linear",
                        "qlora.recomputed"),
            0);
  expectSameTraining(testing::oracleTrainer(dir.file("full")),
                     testing::oracleTrainer(dir.file("capped")), 4);
}

TEST(Rematerialize, OffloadedActivationsTrainBitIdentically) {
  // The demo model at 4 x 128 tokens, under the smallest budget (to 1%) any
  // plan fits: recomputation alone stops short of it, so the plan offloads.
  TempDir dir;
  ASSERT_TRUE(writeTinyLlama(dir.file("model"), 0));
  ASSERT_TRUE(compile(dir.file("model"), dir.file("full"), 4, 128));
  Expected<StepManifest> full = manifestOf(dir.file("full"));
  ASSERT_TRUE(full) << full.message();
  uint64_t fits = full->arenaBytes, refused = full->arenaBytes / 4;
  while (fits - refused > full->arenaBytes / 100) {
    uint64_t mid = (fits + refused) / 2;
    std::filesystem::remove_all(dir.file("probe"));
    (compile(dir.file("model"), dir.file("probe"), 4, 128,
             {"--max_memory", std::to_string(mid)})
         ? fits
         : refused) = mid;
  }
  uint64_t budget = fits;
  ASSERT_TRUE(compile(dir.file("model"), dir.file("capped"), 4, 128,
                      {"--max_memory", std::to_string(budget)}));
  Expected<StepManifest> capped = manifestOf(dir.file("capped"));
  ASSERT_TRUE(capped) << capped.message();
  EXPECT_LE(capped->arenaBytes, budget);
  EXPECT_GT(capped->hostArenaBytes, 0u);
  EXPECT_GT(capped->transfers, 0u);
  EXPECT_GT(countMarked(dir.file("capped"), "qlora.reload ", "offload:"), 0);
  expectSameTraining(
      testing::demoTrainer(dir.file("full"), dir.file("model")),
      testing::demoTrainer(dir.file("capped"), dir.file("model")), 20);
}

TEST(Rematerialize, ABudgetBelowTheWeightsIsRefused) {
  QLORA_REQUIRE_ORACLE("tiny-llama");
  TempDir dir;
  // The message's numbers: test/Passes/rematerialize-errors.mlir.
  EXPECT_FALSE(compile(testing::oraclePath("tiny-llama"), dir.file("step"), 2,
                       64, {"--max_memory", "1MiB"}));
  EXPECT_FALSE(std::filesystem::exists(dir.file("step/step.so")));
}

} // namespace
} // namespace qlora
