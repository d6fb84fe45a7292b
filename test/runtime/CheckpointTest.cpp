//===- CheckpointTest.cpp - Tests of checkpoint directories -----------------===//
//
// Single-file and sharded directories, written with SafetensorsWriter into a
// temporary directory, and each inconsistency between index and shards.
//
//===----------------------------------------------------------------------===//
#include "TempDir.h"
#include "runtime/Checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <stdlib.h>

using namespace qlora;

namespace {

using qlora::testing::TempDir;

void writeText(const std::string &path, const std::string &text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

#define EXPECT_CONTAINS(haystack, needle)                                      \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos)             \
      << "'" << (haystack) << "' does not contain '" << (needle) << "'"

/// Writes a shard holding `names`, each an F32 [2] tensor whose values are
/// {i, i + 0.5} for the tensor's position i in `names` plus `base`.
void writeShard(const std::string &path, const std::vector<std::string> &names,
                float base = 0.f) {
  SafetensorsWriter writer;
  for (size_t i = 0; i < names.size(); ++i) {
    float values[2] = {base + float(i), base + float(i) + 0.5f};
    Status status = writer.add(names[i], DType::F32, {2}, values, 8);
    ASSERT_TRUE(status.isOk()) << status.message();
  }
  writer.setMetadata("format", "pt");
  Status status = writer.write(path);
  ASSERT_TRUE(status.isOk()) << status.message();
}

/// The two-shard layout most tests start from.
void writeShardedCheckpoint(const TempDir &dir) {
  writeShard(dir.file("model-00001-of-00002.safetensors"),
             {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"},
             0.f);
  writeShard(dir.file("model-00002-of-00002.safetensors"),
             {"lm_head.weight", "model.norm.weight"}, 10.f);
  writeText(dir.file("model.safetensors.index.json"), R"({
  "metadata": {"total_size": 32},
  "weight_map": {
    "lm_head.weight": "model-00002-of-00002.safetensors",
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.layers.0.mlp.up_proj.weight": "model-00001-of-00002.safetensors",
    "model.norm.weight": "model-00002-of-00002.safetensors"
  }
})");
}

float firstValue(const CheckpointDir &checkpoint, const std::string &name) {
  Expected<ByteSpan> bytes = checkpoint.data(name);
  EXPECT_TRUE(bytes.isOk()) << (bytes ? "" : bytes.message());
  if (!bytes || bytes->size < 4)
    return -1.f;
  float value;
  std::memcpy(&value, bytes->data, 4);
  return value;
}

} // namespace

//===----------------------------------------------------------------------===//
// readJsonFile
//===----------------------------------------------------------------------===//

TEST(ReadJsonFile, ReadsAndNamesTheFileOnErrors) {
  TempDir dir;
  writeText(dir.file("ok.json"), R"({"a": [1, 2.5]})");
  Expected<json::Value> ok = readJsonFile(dir.file("ok.json"));
  ASSERT_TRUE(ok.isOk()) << ok.message();
  EXPECT_EQ(json::writeCompact(*ok), R"({"a":[1,2.5]})");

  Expected<json::Value> missing = readJsonFile(dir.file("missing.json"));
  ASSERT_FALSE(missing.isOk());
  EXPECT_EQ(missing.message(),
            dir.file("missing.json") + ": cannot open: No such file or "
                                       "directory");

  writeText(dir.file("bad.json"), "{\"a\": 1,}");
  Expected<json::Value> bad = readJsonFile(dir.file("bad.json"));
  ASSERT_FALSE(bad.isOk());
  EXPECT_EQ(bad.message(), dir.file("bad.json") +
                               ": expected '\"' to start an object key at "
                               "offset 8, got '}'");
}

//===----------------------------------------------------------------------===//
// Opening checkpoints
//===----------------------------------------------------------------------===//

TEST(CheckpointDir, SingleFile) {
  TempDir dir;
  writeShard(dir.file("model.safetensors"), {"b", "a"});
  Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir.path());
  ASSERT_TRUE(checkpoint.isOk()) << checkpoint.message();
  EXPECT_FALSE(checkpoint->isSharded());
  EXPECT_EQ(checkpoint->files().size(), 1u);
  EXPECT_EQ(checkpoint->tensorNames(), (std::vector<std::string>{"a", "b"}));
  const CheckpointTensor *a = checkpoint->find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->info->dtype, DType::F32);
  EXPECT_EQ(a->file->path(), dir.file("model.safetensors"));
  EXPECT_EQ(firstValue(*checkpoint, "b"), 0.f);
  EXPECT_EQ(firstValue(*checkpoint, "a"), 1.f);
}

TEST(CheckpointDir, ShardedRoundTrip) {
  TempDir dir;
  writeShardedCheckpoint(dir);
  Expected<CheckpointDir> opened = CheckpointDir::open(dir.path() + "/");
  ASSERT_TRUE(opened.isOk()) << opened.message();
  // Moving the directory keeps every lookup valid.
  CheckpointDir checkpoint = opened.take();
  EXPECT_TRUE(checkpoint.isSharded());
  EXPECT_EQ(checkpoint.files().size(), 2u);
  EXPECT_EQ(checkpoint.numTensors(), 4u);
  EXPECT_EQ(checkpoint.tensorNames(),
            (std::vector<std::string>{"lm_head.weight",
                                      "model.embed_tokens.weight",
                                      "model.layers.0.mlp.up_proj.weight",
                                      "model.norm.weight"}));
  EXPECT_EQ(*checkpoint.indexMetadata().getInt("total_size"), 32);

  Expected<CheckpointTensor> lmHead = checkpoint.get("lm_head.weight");
  ASSERT_TRUE(lmHead.isOk()) << lmHead.message();
  EXPECT_CONTAINS(lmHead->file->path(), "model-00002-of-00002.safetensors");
  EXPECT_EQ(lmHead->info->shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(firstValue(checkpoint, "lm_head.weight"), 10.f);
  EXPECT_EQ(firstValue(checkpoint, "model.norm.weight"), 11.f);
  EXPECT_EQ(firstValue(checkpoint, "model.embed_tokens.weight"), 0.f);
  EXPECT_EQ(firstValue(checkpoint, "model.layers.0.mlp.up_proj.weight"), 1.f);
}

TEST(CheckpointDir, SingleFileWinsOverIndex) {
  TempDir dir;
  writeShardedCheckpoint(dir);
  writeShard(dir.file("model.safetensors"), {"only"});
  Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir.path());
  ASSERT_TRUE(checkpoint.isOk()) << checkpoint.message();
  EXPECT_FALSE(checkpoint->isSharded());
  EXPECT_EQ(checkpoint->tensorNames(), (std::vector<std::string>{"only"}));
}

TEST(CheckpointDir, OtherWeightsName) {
  TempDir dir;
  writeShard(dir.file("adapter_model.safetensors"), {"lora_A"});
  Expected<CheckpointDir> checkpoint =
      CheckpointDir::open(dir.path(), "adapter_model.safetensors");
  ASSERT_TRUE(checkpoint.isOk()) << checkpoint.message();
  EXPECT_NE(checkpoint->find("lora_A"), nullptr);
}

TEST(CheckpointDir, OracleCheckpoints) {
  for (const char *name : {"tiny-llama", "tiny-llama-bnb-nf4"}) {
    std::string path = std::string(QLORA_ORACLE_DIR) + "/" + name;
    if (!std::filesystem::exists(path))
      GTEST_SKIP() << "oracle missing: " << path;
    Expected<CheckpointDir> checkpoint = CheckpointDir::open(path);
    ASSERT_TRUE(checkpoint.isOk()) << checkpoint.message();
    EXPECT_NE(checkpoint->find("model.layers.1.self_attn.v_proj.weight"),
              nullptr)
        << name;
    EXPECT_TRUE(checkpoint->get("lm_head.weight").isOk()) << name;
  }
}

//===----------------------------------------------------------------------===//
// Errors
//===----------------------------------------------------------------------===//

TEST(CheckpointErrors, MissingDirectoryOrWeights) {
  TempDir dir;
  Expected<CheckpointDir> noDir = CheckpointDir::open(dir.file("absent"));
  ASSERT_FALSE(noDir.isOk());
  EXPECT_EQ(noDir.message(), dir.file("absent") +
                                 ": cannot open checkpoint directory: No such "
                                 "file or directory");
  Expected<CheckpointDir> empty = CheckpointDir::open(dir.path());
  ASSERT_FALSE(empty.isOk());
  EXPECT_EQ(empty.message(),
            dir.path() + ": no model.safetensors or "
                         "model.safetensors.index.json in the checkpoint "
                         "directory");
}

TEST(CheckpointErrors, MissingTensorLookup) {
  TempDir dir;
  writeShardedCheckpoint(dir);
  Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir.path());
  ASSERT_TRUE(checkpoint.isOk()) << checkpoint.message();
  EXPECT_EQ(checkpoint->find("model.layers.9.weight"), nullptr);
  Expected<CheckpointTensor> tensor = checkpoint->get("model.layers.9.weight");
  ASSERT_FALSE(tensor.isOk());
  EXPECT_EQ(tensor.message(), "tensor 'model.layers.9.weight' not found in "
                              "checkpoint " +
                                  dir.path());
  Expected<ByteSpan> bytes = checkpoint->data("model.layers.9.weight");
  ASSERT_FALSE(bytes.isOk());
  EXPECT_EQ(bytes.message(), tensor.message());
}

TEST(CheckpointErrors, MissingShard) {
  TempDir dir;
  writeShardedCheckpoint(dir);
  std::filesystem::remove(dir.file("model-00002-of-00002.safetensors"));
  Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir.path());
  ASSERT_FALSE(checkpoint.isOk());
  EXPECT_EQ(checkpoint.message(),
            dir.file("model.safetensors.index.json") +
                ": shard 'model-00002-of-00002.safetensors' (holding tensor "
                "'lm_head.weight'): " +
                dir.file("model-00002-of-00002.safetensors") +
                ": cannot open: No such file or directory");
}

TEST(CheckpointErrors, TensorMissingFromItsShard) {
  TempDir dir;
  writeShardedCheckpoint(dir);
  writeShard(dir.file("model-00002-of-00002.safetensors"), {"lm_head.weight"});
  Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir.path());
  ASSERT_FALSE(checkpoint.isOk());
  EXPECT_EQ(checkpoint.message(),
            dir.file("model.safetensors.index.json") +
                ": tensor 'model.norm.weight' is mapped to shard "
                "'model-00002-of-00002.safetensors', which does not contain "
                "it");
}

TEST(CheckpointErrors, TensorInTheWrongShard) {
  TempDir dir;
  writeShardedCheckpoint(dir);
  writeShard(dir.file("model-00001-of-00002.safetensors"),
             {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight",
              "model.norm.weight"});
  writeShard(dir.file("model-00002-of-00002.safetensors"), {"lm_head.weight"});
  Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir.path());
  ASSERT_FALSE(checkpoint.isOk());
  EXPECT_CONTAINS(checkpoint.message(),
                  "tensor 'model.norm.weight' is mapped to shard "
                  "'model-00002-of-00002.safetensors', which does not contain "
                  "it (it is in " +
                      dir.file("model-00001-of-00002.safetensors") + ")");
}

TEST(CheckpointErrors, TensorInTwoShards) {
  TempDir dir;
  writeShardedCheckpoint(dir);
  writeShard(dir.file("model-00002-of-00002.safetensors"),
             {"lm_head.weight", "model.norm.weight",
              "model.embed_tokens.weight"});
  Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir.path());
  ASSERT_FALSE(checkpoint.isOk());
  EXPECT_EQ(checkpoint.message(),
            dir.file("model.safetensors.index.json") +
                ": tensor 'model.embed_tokens.weight' appears in two shards, " +
                dir.file("model-00001-of-00002.safetensors") + " and " +
                dir.file("model-00002-of-00002.safetensors"));
}

TEST(CheckpointErrors, ShardTensorMissingFromTheIndex) {
  TempDir dir;
  writeShardedCheckpoint(dir);
  writeShard(dir.file("model-00002-of-00002.safetensors"),
             {"lm_head.weight", "model.norm.weight", "extra.weight"});
  Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir.path());
  ASSERT_FALSE(checkpoint.isOk());
  EXPECT_EQ(checkpoint.message(),
            dir.file("model.safetensors.index.json") + ": shard " +
                dir.file("model-00002-of-00002.safetensors") +
                " holds tensor 'extra.weight', which the index does not list");
}

TEST(CheckpointErrors, CorruptShard) {
  TempDir dir;
  writeShardedCheckpoint(dir);
  writeText(dir.file("model-00001-of-00002.safetensors"), "garbage");
  Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir.path());
  ASSERT_FALSE(checkpoint.isOk());
  EXPECT_CONTAINS(checkpoint.message(),
                  "shard 'model-00001-of-00002.safetensors'");
  EXPECT_CONTAINS(checkpoint.message(), "too short");
}

TEST(CheckpointErrors, MalformedIndex) {
  TempDir dir;
  std::string index = dir.file("model.safetensors.index.json");
  auto openWith = [&](const std::string &text) {
    writeText(index, text);
    Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir.path());
    EXPECT_FALSE(checkpoint.isOk()) << text;
    return checkpoint.isOk() ? std::string() : checkpoint.message();
  };
  EXPECT_EQ(openWith("{\"weight_map\": {"),
            index + ": expected '\"' to start an object key at offset 16, got "
                    "end of input");
  EXPECT_EQ(openWith("[]"), index + ": expected a JSON object, got array");
  EXPECT_EQ(openWith(R"({"metadata": {}})"), index + ": missing 'weight_map'");
  EXPECT_EQ(openWith(R"({"weight_map": []})"),
            index + ": 'weight_map' must be an object, got array");
  EXPECT_EQ(openWith(R"({"metadata": 1, "weight_map": {}})"),
            index + ": 'metadata' must be an object, got integer");
  EXPECT_EQ(openWith(R"({"weight_map": {"w": 3}})"),
            index + ": weight_map entry for tensor 'w' must be a shard file "
                    "name, got integer");
  EXPECT_EQ(openWith(R"({"weight_map": {"w": "../outside.safetensors"}})"),
            index + ": tensor 'w' is mapped to shard '../outside.safetensors', "
                    "which is not a file name inside the checkpoint "
                    "directory");
  EXPECT_CONTAINS(openWith(R"({"weight_map": {"w": "/etc/passwd"}})"),
                  "not a file name inside the checkpoint directory");
}
