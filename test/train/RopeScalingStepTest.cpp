//===- RopeScalingStepTest.cpp - Llama 3's rope scaling in a compiled step --===//
//
// The built-in tiny Llama with Llama 3's rope_scaling in its config.json
// (an original context of 32 tokens, so that the demo's 128-token rows
// reach the scaled frequencies) compiles to a step whose RoPE carries the
// scaling, and trains: its losses are finite, fall, and differ from the
// same weights' without the scaling from the first step on.
//
//===----------------------------------------------------------------------===//
#include "runtime/Checkpoint.h"
#include "runtime/Json.h"
#include "test/runtime/TempDir.h"
#include "test/train/DemoTraining.h"
#include "tools/common/Process.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

namespace qlora {
namespace {

using testing::TempDir;

Status compile(const std::string &model, const std::string &dir) {
  return cli::runProcess({QLORA_COMPILE_TOOL, "--model_name_or_path", model,
                          "--output_dir", dir,
                          "--per_device_train_batch_size", "4",
                          "--max_seq_length", "128", "--r", "8",
                          "--lora_alpha", "16", "--target", "cpu",
                          "--quiet"});
}

std::string readText(const std::string &path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST(RopeScalingStep, Llama3ScalingReachesTheStepAndTrains) {
  TempDir dir;
  const std::string plain = dir.file("plain"), scaled = dir.file("scaled");
  ASSERT_TRUE(writeTinyLlama(plain));
  ASSERT_TRUE(writeTinyLlama(scaled));
  Expected<json::Value> config = readJsonFile(scaled + "/config.json");
  ASSERT_TRUE(config) << config.message();
  json::Value scaling = json::Value::object();
  scaling.set("rope_type", "llama3");
  scaling.set("factor", 8.0);
  scaling.set("low_freq_factor", 1.0);
  scaling.set("high_freq_factor", 4.0);
  scaling.set("original_max_position_embeddings", 32);
  config->set("rope_scaling", scaling);
  {
    std::ofstream out(scaled + "/config.json");
    out << json::writeCompact(*config);
  }
  ASSERT_TRUE(compile(plain, dir.file("plain-step")));
  ASSERT_TRUE(compile(scaled, dir.file("scaled-step")));
  EXPECT_EQ(readText(dir.file("plain-step") + "/train_step.mlir")
                .find("rope_llama3"),
            std::string::npos);
  EXPECT_NE(readText(dir.file("scaled-step") + "/train_step.mlir")
                .find("#qlora.rope_llama3<factor = 8.0, low_freq_factor = "
                      "1.0, high_freq_factor = 4.0, "
                      "original_max_position_embeddings = 32>"),
            std::string::npos);

  Expected<std::vector<double>> a =
      testing::demoLosses(dir.file("plain-step"), plain);
  Expected<std::vector<double>> b =
      testing::demoLosses(dir.file("scaled-step"), scaled);
  ASSERT_TRUE(a) << a.message();
  ASSERT_TRUE(b) << b.message();
  for (double loss : *b)
    ASSERT_TRUE(std::isfinite(loss));
  EXPECT_NE(a->front(), b->front());
  EXPECT_LT(b->back(), b->front());
}

} // namespace
} // namespace qlora
