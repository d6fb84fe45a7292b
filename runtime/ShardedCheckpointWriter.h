//===- ShardedCheckpointWriter.h - A checkpoint's safetensors, in shards ----===//
//
// How transformers' save_pretrained lays out a checkpoint's tensors: one
// `model.safetensors`, or, when they exceed `max_shard_size`, shards named
// `model-00001-of-00003.safetensors` filled in order (a unit larger than
// the limit gets a shard of its own) and `model.safetensors.index.json`
// with the total size and each tensor's shard. A unit is what must stay in
// one file: a tensor, or an NF4 weight with its quantization state.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/Safetensors.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qlora {

class ShardedCheckpointWriter {
public:
  /// maxShardBytes 0: everything in one file.
  explicit ShardedCheckpointWriter(int64_t maxShardBytes);

  /// The shard the next unit of `bytes` goes to; add its tensors there
  /// before asking for the next unit's.
  SafetensorsWriter &shardFor(int64_t bytes);

  /// Writes the files into `dir` (each atomically) and removes what an
  /// earlier save of the other layout left there; returns the file names
  /// written, the index last when there is one.
  Expected<std::vector<std::string>> write(const std::string &dir) const;

private:
  int64_t maxShardBytes_;
  std::vector<std::unique_ptr<SafetensorsWriter>> shards_;
  std::vector<int64_t> shardBytes_;
};

} // namespace qlora
