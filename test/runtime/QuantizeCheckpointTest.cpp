//===- QuantizeCheckpointTest.cpp - qlora-quantize against bitsandbytes -----===//
//
// The acceptance test of the quantizer: run on the oracle's tiny Llama, it
// must reproduce every tensor of the checkpoint that transformers +
// bitsandbytes saved, byte for byte, and a config.json with the same content.
//
//===----------------------------------------------------------------------===//
#include "OracleFiles.h"
#include "TempDir.h"
#include "runtime/BnbFormat.h"
#include "runtime/Checkpoint.h"
#include "runtime/QuantizeCheckpoint.h"
#include "runtime/TinyLlama.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

namespace qlora {
namespace {

using testing::TempDir;

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

TEST(QuantizeCheckpoint, ReproducesTheBitsandbytesCheckpoint) {
  QLORA_REQUIRE_ORACLE("tiny-llama");
  TempDir out;
  QuantizeOptions options;
  Expected<QuantizeReport> report = quantizeCheckpoint(
      testing::oraclePath("tiny-llama"), out.path(), options, nullptr);
  ASSERT_TRUE(report) << report.message();
  EXPECT_EQ(report->quantizedTensors, 14);
  EXPECT_EQ(report->copiedTensors, 7); // embeddings, lm_head, 5 norms

  Expected<CheckpointDir> ours = CheckpointDir::open(out.path());
  ASSERT_TRUE(ours) << ours.message();
  Expected<CheckpointDir> theirs =
      CheckpointDir::open(testing::oraclePath("tiny-llama-bnb-nf4"));
  ASSERT_TRUE(theirs) << theirs.message();
  ASSERT_EQ(ours->tensorNames(), theirs->tensorNames());
  for (const std::string &name : theirs->tensorNames()) {
    CheckpointTensor a = *ours->get(name);
    CheckpointTensor b = *theirs->get(name);
    EXPECT_EQ(a.info->dtype, b.info->dtype) << name;
    EXPECT_EQ(a.info->shape, b.info->shape) << name;
    ByteSpan x = a.file->data(*a.info), y = b.file->data(*b.info);
    ASSERT_EQ(x.size, y.size) << name;
    EXPECT_EQ(0, std::memcmp(x.data, y.data, x.size)) << name;
  }
  // Same tensors in the same layout: the files are identical too.
  EXPECT_EQ(readFile(out.file("model.safetensors")),
            readFile(testing::oraclePath("tiny-llama-bnb-nf4/model.safetensors")));

  Expected<json::Value> config = readJsonFile(out.file("config.json"));
  Expected<json::Value> expected =
      readJsonFile(testing::oraclePath("tiny-llama-bnb-nf4/config.json"));
  ASSERT_TRUE(config && expected);
  EXPECT_EQ(*config, *expected);
  EXPECT_EQ(readFile(out.file("generation_config.json")),
            readFile(testing::oraclePath("tiny-llama/generation_config.json")));
}

TEST(QuantizeCheckpoint, ReadsTheBitsandbytesCheckpointBackLosslessly) {
  QLORA_REQUIRE_ORACLE("tiny-llama-bnb-nf4");
  Expected<CheckpointDir> checkpoint =
      CheckpointDir::open(testing::oraclePath("tiny-llama-bnb-nf4"));
  ASSERT_TRUE(checkpoint) << checkpoint.message();
  int weights = 0;
  for (const std::string &name : checkpoint->tensorNames()) {
    if (!bnb::isQuantizedWeight(*checkpoint, name))
      continue;
    ++weights;
    Expected<NF4Weight> weight = bnb::readWeight(*checkpoint, name);
    ASSERT_TRUE(weight) << weight.message();
    EXPECT_TRUE(weight->nested.has_value());
    // Writing it again gives back the very same tensors.
    SafetensorsWriter writer;
    ASSERT_TRUE(bnb::addWeightTensors(writer, name, *weight));
    TempDir dir;
    ASSERT_TRUE(writer.write(dir.file("model.safetensors")));
    Expected<CheckpointDir> again = CheckpointDir::open(dir.path());
    ASSERT_TRUE(again) << again.message();
    for (const std::string &part : again->tensorNames()) {
      ByteSpan x = *again->data(part), y = *checkpoint->data(part);
      ASSERT_EQ(x.size, y.size) << part;
      EXPECT_EQ(0, std::memcmp(x.data, y.data, x.size)) << part;
    }
  }
  EXPECT_EQ(weights, 14);
}

TEST(QuantizeCheckpoint, RoundTripWithoutDoubleQuant) {
  TempDir dir;
  ASSERT_TRUE(writeTinyLlama(dir.file("in"), 7));
  QuantizeOptions options;
  options.config.bnb_4bit_use_double_quant = false;
  Expected<QuantizeReport> report =
      quantizeCheckpoint(dir.file("in"), dir.file("out"), options, nullptr);
  ASSERT_TRUE(report) << report.message();
  Expected<CheckpointDir> out = CheckpointDir::open(dir.file("out"));
  ASSERT_TRUE(out);
  Expected<NF4Weight> weight =
      bnb::readWeight(*out, "model.layers.1.mlp.down_proj.weight");
  ASSERT_TRUE(weight) << weight.message();
  EXPECT_FALSE(weight->nested.has_value());
  EXPECT_EQ(weight->shape, (std::vector<int64_t>{256, 688}));
  EXPECT_EQ(out->get("model.layers.1.mlp.down_proj.weight.absmax")->info->dtype,
            DType::F32);
  for (const QuantizedTensorReport &tensor : report->tensors)
    if (tensor.quantized)
      EXPECT_LT(tensor.maxRelativeError, 0.16) << tensor.name;
}

TEST(QuantizeCheckpoint, RefusesToOverwriteAndToRequantize) {
  TempDir dir;
  ASSERT_TRUE(writeTinyLlama(dir.file("in")));
  QuantizeOptions options;
  ASSERT_TRUE(quantizeCheckpoint(dir.file("in"), dir.file("out"), options,
                                 nullptr));
  Expected<QuantizeReport> again =
      quantizeCheckpoint(dir.file("in"), dir.file("out"), options, nullptr);
  ASSERT_FALSE(again);
  EXPECT_NE(again.message().find("--overwrite"), std::string::npos);

  Expected<QuantizeReport> twice =
      quantizeCheckpoint(dir.file("out"), dir.file("out2"), options, nullptr);
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.message().find("already has a quantization_config"),
            std::string::npos);
}

/// --max_shard_size splits the output as save_pretrained does: shards in
/// order with an index that names every tensor's file and the total size,
/// read back (and verified) through the index; saving again in the other
/// layout removes what the first save left.
TEST(QuantizeCheckpoint, ShardsWithAnIndexAndSwitchesLayoutsCleanly) {
  TempDir dir;
  ASSERT_TRUE(writeTinyLlama(dir.file("in")));
  QuantizeOptions options;
  options.maxShardBytes = 300 * 1000;
  Expected<QuantizeReport> sharded =
      quantizeCheckpoint(dir.file("in"), dir.file("out"), options, nullptr);
  ASSERT_TRUE(sharded) << sharded.message();
  ASSERT_GT(sharded->files.size(), 2u);
  EXPECT_EQ(sharded->files.back(), "model.safetensors.index.json");
  const size_t shards = sharded->files.size() - 1;
  EXPECT_EQ(sharded->files.front(),
            "model-00001-of-0000" + std::to_string(shards) + ".safetensors");
  EXPECT_FALSE(std::ifstream(dir.file("out") + "/model.safetensors"));

  Expected<CheckpointDir> read = CheckpointDir::open(dir.file("out"));
  ASSERT_TRUE(read) << read.message();
  EXPECT_EQ(read->files().size(), shards);
  Expected<json::Value> index =
      readJsonFile(dir.file("out") + "/model.safetensors.index.json");
  ASSERT_TRUE(index);
  const json::Value *map = index->find("weight_map");
  ASSERT_TRUE(map && map->isObject());
  size_t total = 0;
  for (const SafetensorsFile *file : read->files())
    for (const TensorInfo &tensor : file->tensors()) {
      const json::Value *shard = map->find(tensor.name);
      ASSERT_TRUE(shard && shard->isString()) << tensor.name;
      EXPECT_EQ(dir.file("out") + "/" + shard->asString(), file->path());
      total += tensor.numBytes();
    }
  EXPECT_EQ(index->find("metadata")->find("total_size")->asInt(),
            int64_t(total));
  // No shard but one holding a single unit exceeds the limit.
  for (const SafetensorsFile *file : read->files())
    if (file->tensors().size() > 1)
      EXPECT_LE(int64_t(file->dataSize()), options.maxShardBytes)
          << file->path();

  options.overwrite = true;
  options.maxShardBytes = 0;
  Expected<QuantizeReport> single =
      quantizeCheckpoint(dir.file("in"), dir.file("out"), options, nullptr);
  ASSERT_TRUE(single) << single.message();
  EXPECT_EQ(single->files, std::vector<std::string>{"model.safetensors"});
  EXPECT_FALSE(
      std::ifstream(dir.file("out") + "/model.safetensors.index.json"));
  EXPECT_FALSE(std::ifstream(dir.file("out") + "/" + sharded->files.front()));
  Expected<CheckpointDir> reread = CheckpointDir::open(dir.file("out"));
  ASSERT_TRUE(reread) << reread.message();
  EXPECT_EQ(reread->tensorNames(), read->tensorNames());
}

TEST(QuantizeCheckpoint, ReportsMissingInput) {
  TempDir dir;
  QuantizeOptions options;
  Expected<QuantizeReport> report = quantizeCheckpoint(
      dir.file("does-not-exist"), dir.file("out"), options, nullptr);
  ASSERT_FALSE(report);
  EXPECT_NE(report.message().find("config.json"), std::string::npos)
      << report.message();
}

TEST(QuantizeCheckpoint, RejectsUnsupportedOptions) {
  TempDir dir;
  ASSERT_TRUE(writeTinyLlama(dir.file("in")));
  QuantizeOptions options;
  options.config.bnb_4bit_quant_type = "fp4";
  Expected<QuantizeReport> report =
      quantizeCheckpoint(dir.file("in"), dir.file("out"), options, nullptr);
  ASSERT_FALSE(report);
  EXPECT_NE(report.message().find("fp4"), std::string::npos);
  options.config.bnb_4bit_quant_type = "nf4";
  options.blockSize = 48;
  report = quantizeCheckpoint(dir.file("in"), dir.file("out"), options, nullptr);
  ASSERT_FALSE(report);
  EXPECT_NE(report.message().find("got 48"), std::string::npos);
}

TEST(BnbFormat, ShouldQuantizeFollowsTransformers) {
  bnb::QuantizationConfig config;
  EXPECT_TRUE(bnb::shouldQuantize("model.layers.0.self_attn.q_proj.weight",
                                  {256, 256}, config));
  EXPECT_FALSE(bnb::shouldQuantize("model.layers.0.self_attn.q_proj.bias",
                                   {256}, config));
  EXPECT_FALSE(bnb::shouldQuantize("model.layers.0.input_layernorm.weight",
                                   {256}, config));
  EXPECT_FALSE(bnb::shouldQuantize("lm_head.weight", {1024, 256}, config));
  EXPECT_FALSE(
      bnb::shouldQuantize("model.embed_tokens.weight", {1024, 256}, config));
  config.llm_int8_skip_modules = {"mlp"};
  EXPECT_FALSE(bnb::shouldQuantize("model.layers.0.mlp.up_proj.weight",
                                   {688, 256}, config));
  EXPECT_TRUE(bnb::shouldQuantize("model.layers.0.self_attn.o_proj.weight",
                                  {256, 256}, config));
}

TEST(BnbFormat, RefusesNonFiniteWeights) {
  std::vector<float> values(256, 0.25f);
  values[200] = std::nanf("");
  Expected<NF4Weight> weight =
      quantizeWeight(values.data(), ElementType::F32, {4, 64}, 64, true);
  ASSERT_FALSE(weight);
  EXPECT_NE(weight.message().find("block 3 (elements 192..255) holds a NaN"),
            std::string::npos)
      << weight.message();
  values[200] = 1.0f;
  values[5] = -INFINITY;
  weight = quantizeWeight(values.data(), ElementType::F32, {4, 64}, 64, true);
  ASSERT_FALSE(weight);
  EXPECT_NE(weight.message().find("block 0"), std::string::npos);
}

TEST(BnbFormat, RejectsACorruptQuantState) {
  Expected<NF4Weight> weight = [] {
    std::vector<float> values(128, 0.5f);
    return quantizeWeight(values.data(), ElementType::F32, {2, 64}, 64, true);
  }();
  ASSERT_TRUE(weight);
  TempDir dir;
  SafetensorsWriter writer;
  ASSERT_TRUE(bnb::addWeightTensors(writer, "w", *weight));
  // Replace the quant state with one whose shape does not fit the codes.
  SafetensorsWriter bad;
  Expected<SafetensorsFile> good = [&]() -> Expected<SafetensorsFile> {
    QLORA_RETURN_IF_ERROR(writer.write(dir.file("good.safetensors")));
    return SafetensorsFile::open(dir.file("good.safetensors"));
  }();
  ASSERT_TRUE(good) << good.message();
  std::string lying = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
                      "\"float32\", \"shape\": [4, 64], \"nested_blocksize\": "
                      "256, \"nested_dtype\": \"float32\", \"nested_offset\": "
                      "0.5}";
  for (const TensorInfo &info : good->tensors()) {
    ByteSpan bytes = good->data(info);
    if (info.name == std::string("w") + bnb::kQuantStateSuffix)
      ASSERT_TRUE(bad.add(info.name, DType::U8, {int64_t(lying.size())},
                          lying.data(), lying.size()));
    else
      ASSERT_TRUE(bad.add(info.name, info.dtype, info.shape, bytes.data,
                          bytes.size));
  }
  ASSERT_TRUE(bad.write(dir.file("model.safetensors")));
  Expected<CheckpointDir> checkpoint = CheckpointDir::open(dir.path());
  ASSERT_TRUE(checkpoint) << checkpoint.message();
  Expected<NF4Weight> read = bnb::readWeight(*checkpoint, "w");
  ASSERT_FALSE(read);
  EXPECT_NE(read.message().find("expects 128 elements, got 64"),
            std::string::npos)
      << read.message();
}

} // namespace
} // namespace qlora
