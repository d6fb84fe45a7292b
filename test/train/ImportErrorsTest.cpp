//===- ImportErrorsTest.cpp - Bad checkpoints get errors that name the cause ===//
#include "../runtime/TempDir.h"
#include "LlamaImporter.h"
#include "ModelConfig.h"
#include "dialects/QLoRADialect.h"
#include "runtime/Checkpoint.h"
#include "runtime/Safetensors.h"
#include "runtime/TinyLlama.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace qlora {
namespace {

using testing::TempDir;

/// Rewrites dir/model.safetensors through `edit`, which may drop or replace
/// tensors.
void rewriteCheckpoint(
    const std::string &dir,
    const std::function<bool(const TensorInfo &, SafetensorsWriter &)> &edit) {
  std::string path = dir + "/model.safetensors";
  SafetensorsWriter writer;
  {
    Expected<SafetensorsFile> file = SafetensorsFile::open(path);
    ASSERT_TRUE(file) << file.message();
    for (const TensorInfo &info : file->tensors()) {
      if (edit(info, writer))
        continue;
      ByteSpan bytes = file->data(info);
      ASSERT_TRUE(writer.add(info.name, info.dtype, info.shape, bytes.data,
                             bytes.size));
    }
  }
  ASSERT_TRUE(writer.write(path));
}

std::string importError(const std::string &dir, int64_t seq = 64) {
  Expected<ModelConfig> config = ModelConfig::read(dir);
  if (!config)
    return config.message();
  Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir);
  if (!checkpoint)
    return checkpoint.message();
  mlir::MLIRContext context;
  context.loadDialect<mlir::qlora::QLoRADialect, mlir::func::FuncDialect>();
  auto module = mlir::qlora::importLlama(context, *config, *checkpoint,
                                         mlir::qlora::ImportOptions{2, seq});
  return module ? std::string() : module.message();
}

TEST(ImportErrors, TheBuiltInModelImports) {
  TempDir dir;
  ASSERT_TRUE(writeTinyLlama(dir.path()));
  EXPECT_EQ(importError(dir.path()), "");
}

TEST(ImportErrors, MissingTensor) {
  TempDir dir;
  ASSERT_TRUE(writeTinyLlama(dir.path()));
  rewriteCheckpoint(dir.path(), [](const TensorInfo &info, SafetensorsWriter &) {
    return info.name == "model.layers.1.mlp.up_proj.weight";
  });
  std::string error = importError(dir.path());
  EXPECT_NE(error.find("'model.layers.1.mlp.up_proj.weight' not found"),
            std::string::npos)
      << error;
}

TEST(ImportErrors, WrongShape) {
  TempDir dir;
  ASSERT_TRUE(writeTinyLlama(dir.path()));
  rewriteCheckpoint(dir.path(), [](const TensorInfo &info,
                                   SafetensorsWriter &writer) {
    if (info.name != "model.layers.0.self_attn.k_proj.weight")
      return false;
    std::vector<uint16_t> values(64 * 256);
    EXPECT_TRUE(writer.add(info.name, DType::BF16, {64, 256}, values.data(),
                           values.size() * 2));
    return true;
  });
  std::string error = importError(dir.path());
  EXPECT_NE(error.find("'model.layers.0.self_attn.k_proj.weight' has shape "
                       "[64, 256], but config.json implies [128, 256]"),
            std::string::npos)
      << error;
}

TEST(ImportErrors, SequenceLongerThanTheModelAllows) {
  TempDir dir;
  ASSERT_TRUE(writeTinyLlama(dir.path()));
  std::string error = importError(dir.path(), 1000);
  EXPECT_NE(error.find("1000 tokens is longer than the model allows "
                       "(max_position_embeddings = 512)"),
            std::string::npos)
      << error;
}

TEST(ImportErrors, UnsupportedArchitectureAndMath) {
  TempDir dir;
  ASSERT_TRUE(writeTinyLlama(dir.path()));
  Expected<json::Value> config = readJsonFile(dir.file("config.json"));
  ASSERT_TRUE(config);
  auto withField = [&](const char *key, json::Value value) {
    json::Value changed = *config;
    changed.set(key, std::move(value));
    return ModelConfig::fromJson(changed, "config.json");
  };
  Expected<ModelConfig> gpt2 = withField("model_type", "gpt2");
  ASSERT_FALSE(gpt2);
  EXPECT_NE(gpt2.message().find("model_type 'gpt2' is not supported"),
            std::string::npos);
  Expected<ModelConfig> gelu = withField("hidden_act", "gelu");
  ASSERT_FALSE(gelu);
  EXPECT_NE(gelu.message().find("hidden_act 'gelu'"), std::string::npos);
  json::Value yarn = json::Value::object();
  yarn.set("rope_type", "yarn");
  Expected<ModelConfig> yarned = withField("rope_parameters", yarn);
  ASSERT_FALSE(yarned);
  EXPECT_NE(yarned.message().find("rope_type 'yarn' is not supported"),
            std::string::npos);
  // Llama 3's scaling needs every one of its fields.
  json::Value partial = json::Value::object();
  partial.set("rope_type", "llama3");
  partial.set("factor", 8.0);
  Expected<ModelConfig> missing = withField("rope_parameters", partial);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.message().find("needs a number 'low_freq_factor'"),
            std::string::npos)
      << missing.message();
  json::Value inverted = partial;
  inverted.set("low_freq_factor", 4.0);
  inverted.set("high_freq_factor", 1.0);
  inverted.set("original_max_position_embeddings", 8192);
  Expected<ModelConfig> bad = withField("rope_parameters", inverted);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.message().find("0 < low_freq_factor < high_freq_factor"),
            std::string::npos)
      << bad.message();
  Expected<ModelConfig> gqa = withField("num_key_value_heads", 3);
  ASSERT_FALSE(gqa);
  EXPECT_NE(gqa.message().find("multiple of num_key_value_heads (3)"),
            std::string::npos);
}

TEST(ImportErrors, Llama3RopeScalingIsReadWithTransformersPrecedence) {
  TempDir dir;
  ASSERT_TRUE(writeTinyLlama(dir.path()));
  Expected<json::Value> config = readJsonFile(dir.file("config.json"));
  ASSERT_TRUE(config);
  json::Value llama3 = json::Value::object();
  llama3.set("rope_type", "llama3");
  llama3.set("factor", 8.0);
  llama3.set("low_freq_factor", 1.0);
  llama3.set("high_freq_factor", 4.0);
  llama3.set("original_max_position_embeddings", 8192);
  llama3.set("rope_theta", 500000.0);
  json::Value withParameters = *config;
  withParameters.set("rope_parameters", llama3);
  Expected<ModelConfig> read = ModelConfig::fromJson(withParameters, "c");
  ASSERT_TRUE(read) << read.message();
  EXPECT_TRUE(read->ropeScaling.enabled());
  EXPECT_EQ(read->ropeScaling.factor, 8.0f);
  EXPECT_EQ(read->ropeScaling.lowFreqFactor, 1.0f);
  EXPECT_EQ(read->ropeScaling.highFreqFactor, 4.0f);
  EXPECT_EQ(read->ropeScaling.originalMaxPositionEmbeddings, 8192);
  EXPECT_EQ(read->ropeTheta, 500000.0);
  // An older config's rope_scaling wins over rope_parameters beside it.
  json::Value plain = json::Value::object();
  plain.set("rope_type", "default");
  json::Value both = *config;
  both.set("rope_parameters", plain);
  both.set("rope_scaling", llama3);
  Expected<ModelConfig> preferred = ModelConfig::fromJson(both, "c");
  ASSERT_TRUE(preferred) << preferred.message();
  EXPECT_TRUE(preferred->ropeScaling.enabled());
}

} // namespace
} // namespace qlora
