//===- Checkpoint.h - Hugging Face checkpoint directories -------------------===//
//
// A checkpoint directory holds either one `model.safetensors` or shards listed
// by `model.safetensors.index.json` ({"metadata": {...}, "weight_map":
// {tensor: shard}}). CheckpointDir opens each shard once, cross-checks the
// index against the shards, and then looks tensors up by name whichever
// layout the directory uses.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/Json.h"
#include "runtime/Safetensors.h"

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qlora {

/// Reads and parses a JSON file (config.json, an index, adapter_config.json).
/// Errors name the file: "<path>: cannot open: ..." or "<path>: <parse
/// error>".
Expected<json::Value> readJsonFile(const std::string &path);

/// Where a tensor of a checkpoint lives.
struct CheckpointTensor {
  const SafetensorsFile *file = nullptr;
  const TensorInfo *info = nullptr;
};

/// A checkpoint directory, single-file or sharded.
class CheckpointDir {
public:
  /// Opens `dir`. `weightsName` is the single-file name; the index is
  /// `weightsName + ".index.json"`. Like transformers, a single file wins
  /// over an index when both exist. A sharded directory must be consistent:
  /// every tensor of the index present in its shard, no tensor in two
  /// shards, no shard tensor missing from the index.
  static Expected<CheckpointDir>
  open(const std::string &dir,
       const std::string &weightsName = "model.safetensors");

  const std::string &dir() const { return dir_; }
  /// True when opened through an index file.
  bool isSharded() const { return sharded_; }
  /// The index's "metadata" object (e.g. total_size); null when single-file
  /// or absent.
  const json::Value &indexMetadata() const { return indexMetadata_; }
  /// The opened files: one, or one per shard in file-name order.
  std::vector<const SafetensorsFile *> files() const;

  /// All tensor names, sorted.
  std::vector<std::string> tensorNames() const;
  size_t numTensors() const { return tensors_.size(); }
  /// Null when there is no such tensor.
  const CheckpointTensor *find(std::string_view name) const;
  /// Like find, with an error "tensor 'x' not found in checkpoint <dir>".
  Expected<CheckpointTensor> get(std::string_view name) const;
  /// The tensor's bytes inside its shard's mapping.
  Expected<ByteSpan> data(std::string_view name) const;

private:
  CheckpointDir() = default;
  Status openSingle(const std::string &path);
  Status openSharded(const std::string &indexPath);

  std::string dir_;
  bool sharded_ = false;
  json::Value indexMetadata_;
  // unique_ptr keeps each file at a stable address for CheckpointTensor.
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  // std::map: sorted names, and nodes that stay put when the dir is moved.
  std::map<std::string, CheckpointTensor, std::less<>> tensors_;
};

} // namespace qlora
