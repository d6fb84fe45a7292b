//===- ShardedCheckpointWriter.cpp - A checkpoint's safetensors, in shards --===//
#include "runtime/ShardedCheckpointWriter.h"

#include "runtime/Json.h"
#include "runtime/TensorData.h"

#include <fmt/format.h>

#include <filesystem>
#include <map>
#include <regex>

namespace qlora {
namespace fs = std::filesystem;

namespace {

constexpr const char *kSingleFile = "model.safetensors";
constexpr const char *kIndexFile = "model.safetensors.index.json";

/// Removes files of `dir` an earlier save left that this one does not
/// write: a single file, an index, or shards.
void removeStale(const std::string &dir,
                 const std::vector<std::string> &written) {
  static const std::regex shard(R"(model-\d{5}-of-\d{5}\.safetensors)");
  std::error_code error;
  for (const fs::directory_entry &entry : fs::directory_iterator(dir, error)) {
    std::string name = entry.path().filename().string();
    bool ours = name == kSingleFile || name == kIndexFile ||
                std::regex_match(name, shard);
    if (ours && std::find(written.begin(), written.end(), name) ==
                    written.end())
      fs::remove(entry.path(), error);
  }
}

} // namespace

ShardedCheckpointWriter::ShardedCheckpointWriter(int64_t maxShardBytes)
    : maxShardBytes_(maxShardBytes) {}

SafetensorsWriter &ShardedCheckpointWriter::shardFor(int64_t bytes) {
  bool full = !shards_.empty() && maxShardBytes_ > 0 &&
              shardBytes_.back() > 0 &&
              shardBytes_.back() + bytes > maxShardBytes_;
  if (shards_.empty() || full) {
    shards_.push_back(std::make_unique<SafetensorsWriter>());
    shards_.back()->setMetadata("format", "pt");
    shardBytes_.push_back(0);
  }
  shardBytes_.back() += bytes;
  return *shards_.back();
}

Expected<std::vector<std::string>>
ShardedCheckpointWriter::write(const std::string &dir) const {
  std::vector<std::string> written;
  if (shards_.size() <= 1) {
    SafetensorsWriter empty;
    empty.setMetadata("format", "pt");
    const SafetensorsWriter &only = shards_.empty() ? empty : *shards_[0];
    QLORA_RETURN_IF_ERROR(only.write(dir + "/" + kSingleFile));
    written.push_back(kSingleFile);
    removeStale(dir, written);
    return written;
  }
  const size_t count = shards_.size();
  std::map<std::string, std::string> weightMap; // sorted, as json sort_keys
  size_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    std::string name =
        fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, count);
    QLORA_RETURN_IF_ERROR(shards_[i]->write(dir + "/" + name));
    for (const std::string &tensor : shards_[i]->tensorNames())
      weightMap[tensor] = name;
    total += shards_[i]->dataBytes();
    written.push_back(name);
  }
  json::Value metadata = json::Value::object();
  metadata.set("total_size", int64_t(total));
  json::Value map = json::Value::object();
  for (const auto &[tensor, file] : weightMap)
    map.set(tensor, file);
  json::Value index = json::Value::object();
  index.set("metadata", metadata);
  index.set("weight_map", map);
  QLORA_RETURN_IF_ERROR(
      writeFileAtomically(dir + "/" + kIndexFile, json::writeIndented(index)));
  written.push_back(kIndexFile);
  removeStale(dir, written);
  return written;
}

} // namespace qlora
