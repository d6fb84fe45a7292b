//===- Manifest.h - What a compiled training step needs from its host -------===//
//
// qlora-compile writes manifest.json beside the compiled step library. It is
// the contract between the generated code and the host: the arena size, the
// entry points, and for every buffer its name, role, dtype, shape and arena
// offset. The host (qlora-train) fills inputs, parameters and state by name,
// calls the entry points, and reads outputs back. Launch metadata is data.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/Json.h"
#include "runtime/Safetensors.h"
#include "runtime/train/StepOptions.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace qlora {

/// The manifest format this runtime reads and the compiler writes.
constexpr const char *kManifestFormat = "qlora-step-2";

enum class BufferRole {
  Input,     ///< written by the host before each call (ids, labels, lr)
  Output,    ///< read by the host after a call (loss)
  Frozen,    ///< a base-model tensor, loaded once (converted to `dtype`)
  NF4,       ///< a frozen NF4 weight: packed codes + fp32 block absmax
  Trainable, ///< an adapter tensor (fp32 master weights)
  State,     ///< optimizer and gradient-accumulation state, zero at start
};

const char *bufferRoleName(BufferRole role);

struct BufferInfo {
  std::string name;
  BufferRole role = BufferRole::Input;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t offset = 0; ///< byte offset in the arena (packed codes for NF4)
  uint64_t bytes = 0;
  // NF4 only.
  int64_t blockSize = 0;
  uint64_t absmaxOffset = 0; ///< fp32 block maxima
  bool doubleQuant = true;   ///< quantize on load with double quant
  int64_t numElements() const;
};

struct StepManifest {
  std::string backend;       ///< "cpu" (later "cuda")
  std::string library;       ///< file name of the step library
  uint64_t arenaBytes = 0;
  int64_t batchSize = 0, seqLen = 0;
  json::Value model;   ///< model facts: vocab_size, max_position_embeddings…
  StepOptions options; ///< what the step was compiled with (StepOptions.def)
  std::map<std::string, std::string> entryPoints; ///< role -> symbol
  std::vector<BufferInfo> buffers;

  const BufferInfo *find(const std::string &name) const;
  Expected<const BufferInfo *> get(const std::string &name) const;

  json::Value toJson() const;
  /// Parses and validates: buffers inside the arena, sizes consistent.
  static Expected<StepManifest> fromJson(const json::Value &value,
                                         const std::string &where);
  static Expected<StepManifest> read(const std::string &path);
};

} // namespace qlora
