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
  json::Value scaling = json::Value::object();
  scaling.set("rope_type", "llama3");
  scaling.set("rope_theta", 500000.0);
  Expected<ModelConfig> llama3 = withField("rope_parameters", scaling);
  ASSERT_FALSE(llama3);
  EXPECT_NE(llama3.message().find("rope_type 'llama3' is not supported"),
            std::string::npos);
  Expected<ModelConfig> gqa = withField("num_key_value_heads", 3);
  ASSERT_FALSE(gqa);
  EXPECT_NE(gqa.message().find("multiple of num_key_value_heads (3)"),
            std::string::npos);
}

} // namespace
} // namespace qlora
