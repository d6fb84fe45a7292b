//===- CudaStepTest.cpp - Compiled cuda steps trained on the GPU ------------===//
//
// The correctness contract of the CUDA backend, on a GPU (label `gpu`;
// skipped without one):
//  * the oracle trajectory (../shared/oracle/tiny-llama, 8 steps) under
//    TrainOracleTest's contracts: each loss within 1%, step-1 adapter
//    gradients within 5% relative L2, the final adapter close to the
//    reference's;
//  * the demo model trained 20 steps on the GPU and on the cpu backend:
//    losses within 0.5%;
//  * the seed configuration (r 8, lora_alpha 32, q/k/v/o, dropout 0.05)
//    trains;
//  * a step that recomputes activations under a memory budget trains as
//    the full step;
//  * a token id outside the vocabulary stops the step with the id, and the
//    adapter is as it was.
// The steps are compiled ahead of time: where this build has qlora-compile
// the test compiles them; on a GPU host with only the runtime they come
// from QLORA_GPU_STEPS, the directory tools/gpu-steps.sh fills.
//
//===----------------------------------------------------------------------===//
#include "runtime/Json.h"
#include "runtime/TinyLlama.h"
#include "runtime/train/Trainer.h"
#include "test/runtime/TempDir.h"
#include "test/train/DemoTraining.h"
#include "test/train/OracleTraining.h"
#include "runtime/train/Manifest.h"
#include "tools/common/Process.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

namespace qlora {
namespace {

using testing::TempDir;

/// The options of each fixture step (tools/gpu-steps.sh compiles the same).
struct StepFixture {
  const char *name;
  const char *model; ///< "oracle" or "demo"
  const char *target;
  std::vector<std::string> options;
};

const std::vector<StepFixture> &fixtures() {
  static const std::vector<StepFixture> all = {
      {"oracle-cuda", "oracle", "cuda",
       {"--per_device_train_batch_size=2", "--max_seq_length=64", "--r=8",
        "--lora_alpha=16", "--target_modules=all-linear", "--max_grad_norm=0"}},
      {"demo-cuda", "demo", "cuda",
       {"--per_device_train_batch_size=4", "--max_seq_length=128", "--r=8",
        "--lora_alpha=16", "--target_modules=all-linear"}},
      {"demo-cpu", "demo", "cpu",
       {"--per_device_train_batch_size=4", "--max_seq_length=128", "--r=8",
        "--lora_alpha=16", "--target_modules=all-linear"}},
      {"seed-cuda", "demo", "cuda",
       {"--per_device_train_batch_size=4", "--max_seq_length=128", "--r=8",
        "--lora_alpha=32", "--lora_dropout=0.05",
        "--target_modules=q_proj,k_proj,v_proj,o_proj"}},
      // The seed configuration under a budget that recomputes activations,
      // LoRA branches with dropout among them (the runtime's 256 MiB
      // included).
      {"seed-cuda-remat", "demo", "cuda",
       {"--per_device_train_batch_size=4", "--max_seq_length=128", "--r=8",
        "--lora_alpha=32", "--lora_dropout=0.05",
        "--target_modules=q_proj,k_proj,v_proj,o_proj",
        "--max_memory=296MiB"}},
      // Every linear adapted, with dropout, without and with a budget that
      // also offloads an activation to host memory.
      {"dropout-cuda", "demo", "cuda",
       {"--per_device_train_batch_size=4", "--max_seq_length=128", "--r=8",
        "--lora_alpha=16", "--lora_dropout=0.05"}},
      {"dropout-cuda-offload", "demo", "cuda",
       {"--per_device_train_batch_size=4", "--max_seq_length=128", "--r=8",
        "--lora_alpha=16", "--lora_dropout=0.05",
        "--max_memory=295.9MiB"}},
  };
  return all;
}

class CudaStep : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    if (!cudaBackendAvailable())
      return;
    demoModel_ = new std::string(scratch().file("demo-model"));
    if (!writeTinyLlama(*demoModel_, 0))
      return;
    if (const char *dir = std::getenv("QLORA_GPU_STEPS")) {
      steps_ = new std::string(dir);
      return;
    }
#ifdef QLORA_COMPILE_TOOL
    steps_ = new std::string(scratch().file("steps"));
    for (const StepFixture &fixture : fixtures()) {
      std::vector<std::string> command = {
          QLORA_COMPILE_TOOL, "--model_name_or_path",
          std::string(fixture.model) == "oracle"
              ? testing::oraclePath("tiny-llama")
              : *demoModel_,
          "--output_dir", *steps_ + "/" + fixture.name, "--target",
          fixture.target, "--quiet"};
      command.insert(command.end(), fixture.options.begin(),
                     fixture.options.end());
      if (Status compiled = cli::runProcess(command); !compiled)
        compileError_ = new std::string(compiled.message());
    }
#endif
  }

  void SetUp() override {
    if (!cudaBackendAvailable())
      GTEST_SKIP() << "no CUDA device";
    ASSERT_TRUE(steps_) << "no compiled steps: set QLORA_GPU_STEPS to the "
                           "directory tools/gpu-steps.sh filled";
    ASSERT_FALSE(compileError_) << *compileError_;
  }

  static TempDir &scratch() {
    static TempDir dir;
    return dir;
  }
  static std::string step(const char *name) { return *steps_ + "/" + name; }

  static std::string *steps_, *demoModel_, *compileError_;
};
std::string *CudaStep::steps_ = nullptr;
std::string *CudaStep::demoModel_ = nullptr;
std::string *CudaStep::compileError_ = nullptr;

TEST_F(CudaStep, MatchesTheOracleTrajectoryGradientsAndAdapter) {
  QLORA_REQUIRE_ORACLE("tiny-llama-trajectory.json");
  Expected<std::unique_ptr<Trainer>> trainer =
      testing::oracleTrainer(step("oracle-cuda"));
  ASSERT_TRUE(trainer) << trainer.message();
  EXPECT_EQ((*trainer)->device(), "cuda");
  int checked = 0;
  auto compareGradients = [&](const Trainer &t) {
    checked = testing::expectReferenceGradients(t);
  };
  std::vector<double> losses = testing::referenceLosses();
  ASSERT_EQ(losses.size(), 8u);
  for (size_t i = 0; i < losses.size(); ++i) {
    Expected<StepRecord> record =
        i == 0 ? (*trainer)->step(compareGradients) : (*trainer)->step();
    ASSERT_TRUE(record) << record.message();
    EXPECT_NEAR(record->loss, losses[i], 0.01 * losses[i]) << "step " << i + 1;
    std::printf("step %zu: loss %.4f (reference %.4f), grad_norm %.4f\n", i + 1,
                record->loss, losses[i], record->gradNorm);
  }
  EXPECT_EQ(checked, 28);
  Expected<AdapterWeights> ours = (*trainer)->adapter();
  ASSERT_TRUE(ours) << ours.message();
  testing::expectReferenceAdapter(*ours);
}


TEST_F(CudaStep, MatchesTheCpuBackendOnTheDemoModel) {
  Expected<std::vector<double>> gpu = testing::demoLosses(step("demo-cuda"), *demoModel_);
  ASSERT_TRUE(gpu) << gpu.message();
  Expected<std::vector<double>> cpu = testing::demoLosses(step("demo-cpu"), *demoModel_);
  ASSERT_TRUE(cpu) << cpu.message();
  for (size_t i = 0; i < gpu->size(); ++i) {
    EXPECT_NEAR((*gpu)[i], (*cpu)[i], 0.005 * (*cpu)[i]) << "step " << i + 1;
    std::printf("step %zu: cuda %.4f, cpu %.4f\n", i + 1, (*gpu)[i], (*cpu)[i]);
  }
  EXPECT_LT(gpu->back(), gpu->front()) << "the demo does not learn on the GPU";
}

TEST_F(CudaStep, TheSeedConfigurationTrainsWithDropout) {
  Expected<std::vector<double>> losses =
      testing::demoLosses(step("seed-cuda"), *demoModel_);
  ASSERT_TRUE(losses) << losses.message();
  for (double loss : *losses)
    EXPECT_TRUE(std::isfinite(loss));
  EXPECT_LT(losses->back(), losses->front() - 0.5)
      << "first " << losses->front() << ", last " << losses->back();
}

/// Trains the demo on `full` and on `capped` (the same step compiled under
/// a budget); the trajectories must agree beyond the kernels' own
/// run-to-run rounding. Prints how many losses are bit-identical.
void expectSameTrajectory(const std::string &full, const std::string &capped,
                          const std::string &model) {
  Expected<StepManifest> a = StepManifest::read(full + "/manifest.json");
  Expected<StepManifest> b = StepManifest::read(capped + "/manifest.json");
  ASSERT_TRUE(a && b);
  EXPECT_LT(b->arenaBytes, a->arenaBytes);
  Expected<std::vector<double>> la = testing::demoLosses(full, model);
  Expected<std::vector<double>> lb = testing::demoLosses(capped, model);
  ASSERT_TRUE(la) << la.message();
  ASSERT_TRUE(lb) << lb.message();
  int identical = 0;
  for (size_t i = 0; i < la->size(); ++i) {
    EXPECT_NEAR((*lb)[i], (*la)[i], 1e-4 * (*la)[i]) << "step " << i + 1;
    identical += (*la)[i] == (*lb)[i];
  }
  std::printf("%s: %d of %zu losses bit-identical; last %.6f (full) and "
              "%.6f\n",
              capped.c_str(), identical, la->size(), la->back(), lb->back());
}

TEST_F(CudaStep, RecomputingUnderABudgetTrainsAsTheFullStep) {
  // Recomputation reruns the forward's kernels on the same inputs with the
  // same dropout masks.
  expectSameTrajectory(step("seed-cuda"), step("seed-cuda-remat"),
                       *demoModel_);
}

TEST_F(CudaStep, OffloadingToHostMemoryTrainsAsTheFullStep) {
  // The offloaded activation crosses to pinned host memory on the copy
  // stream and back; the CUDA graph orders the copies with the events.
  Expected<StepManifest> offloading =
      StepManifest::read(step("dropout-cuda-offload") + "/manifest.json");
  ASSERT_TRUE(offloading);
  EXPECT_GT(offloading->hostArenaBytes, 0u);
  expectSameTrajectory(step("dropout-cuda"), step("dropout-cuda-offload"),
                       *demoModel_);
}

TEST_F(CudaStep, ATokenOutsideTheVocabularyStopsTheStepAndKeepsTheAdapter) {
  // One row of the demo's shape whose third id is past the vocabulary.
  std::string data = scratch().file("bad.jsonl");
  {
    std::string ids = "[1, 2, 5000";
    for (int i = 3; i < 128; ++i)
      ids += ", 7";
    std::FILE *file = std::fopen(data.c_str(), "w");
    ASSERT_TRUE(file);
    std::fprintf(file, "{\"input_ids\": %s]}\n", ids.c_str());
    std::fclose(file);
  }
  TrainingArguments args;
  args.model_name_or_path = *demoModel_;
  args.per_device_train_batch_size = 4;
  args.max_steps = 2;
  // The dataset refuses the id itself; feed it past that check to see the
  // device's: a dataset of the vocabulary of a larger model.
  Expected<TokenDataset> tokens = TokenDataset::open(data, 128, 100000);
  ASSERT_TRUE(tokens) << tokens.message();
  Expected<std::unique_ptr<Trainer>> trainer =
      Trainer::create(step("demo-cuda"), args, tokens.take());
  ASSERT_TRUE(trainer) << trainer.message();
  Expected<AdapterWeights> before = (*trainer)->adapter();
  ASSERT_TRUE(before);
  Expected<StepRecord> record = (*trainer)->step();
  ASSERT_FALSE(record);
  EXPECT_NE(record.message().find("token id 5000 at row 0, position 2"),
            std::string::npos)
      << record.message();
  Expected<AdapterWeights> after = (*trainer)->adapter();
  ASSERT_TRUE(after);
  for (const auto &[name, tensor] : *before)
    EXPECT_EQ(tensor.values, after->at(name).values) << name;
}

} // namespace
} // namespace qlora
