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
#include <optional>
#include <string>
#include <vector>

namespace qlora {

/// The manifest format this runtime reads and the compiler writes.
constexpr const char *kManifestFormat = "qlora-step-3";

enum class BufferRole {
  Input,     ///< written by the host before each call (ids, labels, lr)
  Output,    ///< read by the host after a call (loss)
  Frozen,    ///< a base-model tensor, loaded once (converted to `dtype`)
  NF4,       ///< a frozen NF4 weight: its codes and block constants
  Trainable, ///< an adapter tensor (fp32 master weights)
  State,     ///< optimizer and gradient-accumulation state, zero at start
  Workspace, ///< device scratch the host hands to a library (cuBLAS)
};

/// Names of buffer parts (the memory plan's #qlora.part), shared by the
/// compiler that lays them out and the host that fills them.
namespace part {
/// The tensor itself (every dense buffer; an adapter's fp32 master copy).
constexpr const char *kData = "data";
/// The bf16 copy of an adapter that cuda products read, refreshed by AdamW.
constexpr const char *kCompute = "compute";
/// NF4: two 4-bit codes per byte, the first element in the high nibble.
constexpr const char *kCodes = "codes";
/// NF4: fp32 block maxima (without double quantization, and on the cpu).
constexpr const char *kAbsmax = "absmax";
/// NF4 with double quantization: 8-bit codes of the block maxima, their
/// fp32 second-level scales, and the fp32 mean subtracted before coding.
constexpr const char *kAbsmaxCodes = "absmax_codes";
constexpr const char *kAbsmaxScales = "absmax_scales";
constexpr const char *kAbsmaxOffset = "absmax_offset";
} // namespace part

/// Names of the slots the host and the compiled step both know by name
/// (beside the parameters and their optimizer state).
namespace slot {
constexpr const char *kInputIds = "input_ids";
constexpr const char *kLabels = "labels";
/// 1 / gradient_accumulation_steps: the seed of the backward.
constexpr const char *kGradScale = "grad_scale";
/// The per-micro-batch seed of LoRA dropout masks.
constexpr const char *kDropoutSeed = "dropout_seed";
constexpr const char *kLearningRate = "learning_rate";
constexpr const char *kStep = "step";
/// The value @train_step returns.
constexpr const char *kLoss = "loss";
/// The sum of the squares of the accumulated gradients, which
/// @apply_gradients writes before it updates the adapters.
constexpr const char *kGradNormSquares = "grad_norm_squares";
/// cuda: data errors of the step (runtime/step/StepStatus.h).
constexpr const char *kStatus = "status";
/// cuda: the workspace the host hands to cuBLAS.
constexpr const char *kBlasWorkspace = "cublas_workspace";
} // namespace slot

/// Parses a role name (bufferRoleName's inverse).
std::optional<BufferRole> parseBufferRole(const std::string &name);

const char *bufferRoleName(BufferRole role);

/// One physical part of a buffer (the memory plan's #qlora.part).
struct BufferPart {
  std::string name;
  DType dtype = DType::F32;
  int64_t elements = 0;
  uint64_t offset = 0; ///< byte offset in the arena
  uint64_t bytes() const { return uint64_t(elements) * dtypeSize(dtype); }
};

struct BufferInfo {
  std::string name;
  BufferRole role = BufferRole::Input;
  /// The logical element type: the tensor's, or an NF4 weight's original
  /// dtype.
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<BufferPart> parts;
  // NF4 only.
  int64_t blockSize = 0;
  bool doubleQuant = true;   ///< quantize on load with double quant
  int64_t dqBlockSize = 256; ///< block maxima per second-level scale
  int64_t numElements() const;
  /// The part called `name`, or null.
  const BufferPart *part(const std::string &name) const;
  /// The part called `name`, or an error naming the buffer.
  Expected<const BufferPart *> getPart(const std::string &name) const;
};

/// The kernel the compiler chose for one op of an entry point.
struct KernelChoice {
  std::string entry;   ///< "train_step" or "apply_gradients"
  std::string op;      ///< "qlora.lora_linear"
  std::string kernel;  ///< "nf4LoraLinear"
  std::string variant; ///< "dequant_gemm", or empty
};

struct StepManifest {
  std::string target;                     ///< "cpu" or "cuda"
  std::vector<std::string> architectures; ///< cuda: sm_90a, sm_80
  uint32_t abiVersion = 0;                ///< runtime/step/StepAbi.h
  std::string library;                    ///< file name of the step library
  uint64_t arenaBytes = 0;
  /// Host memory for activations offloaded between forward and backward
  /// (qlora-rematerialize), and the number of copies there and back.
  uint64_t hostArenaBytes = 0;
  uint64_t transfers = 0;
  int64_t batchSize = 0, seqLen = 0;
  json::Value model;   ///< model facts: vocab_size, max_position_embeddings…
  StepOptions options; ///< what the step was compiled with (StepOptions.def)
  std::map<std::string, std::string> entryPoints; ///< role -> symbol
  std::vector<BufferInfo> buffers;
  std::vector<KernelChoice> kernels;

  const BufferInfo *find(const std::string &name) const;
  Expected<const BufferInfo *> get(const std::string &name) const;

  json::Value toJson() const;
  /// Parses and validates: buffers inside the arena, sizes consistent.
  static Expected<StepManifest> fromJson(const json::Value &value,
                                         const std::string &where);
  static Expected<StepManifest> read(const std::string &path);
};

} // namespace qlora
