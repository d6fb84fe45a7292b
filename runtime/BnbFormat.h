//===- BnbFormat.h - bitsandbytes' serialized 4-bit weights -----------------===//
//
// transformers + bitsandbytes save a 4-bit Linear weight `W` of a checkpoint
// as a group of tensors next to each other:
//   W                                   U8 [ceil(n/2), 1]  packed NF4 codes
//   W.absmax                            U8 [blocks] (double quant) or F32
//   W.quant_map                         F32 [16]            the NF4 table
//   W.nested_absmax                     F32 [blocks/256]    (double quant)
//   W.nested_quant_map                  F32 [256]           (double quant)
//   W.quant_state.bitsandbytes__nf4     U8  JSON: quant_type, blocksize,
//                                       dtype, shape, nested_* fields
// This file converts between that form and the runtime's NF4Weight, and
// holds the BitsAndBytesConfig that goes into config.json.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Checkpoint.h"
#include "runtime/DoubleQuant.h"
#include "runtime/Error.h"
#include "runtime/Json.h"
#include "runtime/NF4.h"
#include "runtime/Safetensors.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qlora {

/// A frozen weight in NF4, with plain or double-quantized block constants.
/// Buffers are laid out byte for byte as bitsandbytes lays them out.
struct NF4Weight {
  std::vector<int64_t> shape;            ///< logical shape, e.g. [out, in]
  ElementType dtype = ElementType::BF16; ///< the dtype it was quantized from
  int64_t blockSize = 64;
  std::vector<uint8_t> packed;              ///< two codes per byte
  std::vector<float> absmax;                ///< when not double-quantized
  std::optional<dq::DoubleQuantized> nested; ///< when double-quantized

  int64_t numElements() const;
  int64_t numBlocks() const { return nf4::numBlocks(numElements(), blockSize); }
  /// The fp32 block maxima that dequantization uses, either way.
  std::vector<float> blockAbsmax() const;
  /// Bytes of the packed codes and constants (what the GPU holds).
  int64_t storageBytes() const;
};

/// Quantizes `shape`-shaped data of `dtype` as bitsandbytes' quantize_4bit
/// with quant_type="nf4" (and compress_statistics=doubleQuant).
Expected<NF4Weight> quantizeWeight(const void *data, ElementType dtype,
                                   std::vector<int64_t> shape,
                                   int64_t blockSize, bool doubleQuant);

/// dequantize_4bit: writes numElements() values of `outType` to `output`.
void dequantizeWeight(const NF4Weight &weight, ElementType outType,
                      void *output);

namespace bnb {

/// The suffix of the tensor that holds the JSON quant state.
constexpr const char *kQuantStateSuffix = ".quant_state.bitsandbytes__nf4";

/// The JSON blob, exactly as bitsandbytes' QuantState.as_dict(packed=True)
/// packs it (Python json.dumps of the non-tensor fields).
std::string quantStateJson(const NF4Weight &weight);

/// Adds the tensors of `weight` under `name` (e.g. "...q_proj.weight").
Status addWeightTensors(SafetensorsWriter &writer, const std::string &name,
                        const NF4Weight &weight);

/// Whether the checkpoint holds `name` in bitsandbytes' 4-bit form.
bool isQuantizedWeight(const CheckpointDir &checkpoint,
                       const std::string &name);

/// Reads `name` back from a bitsandbytes 4-bit checkpoint, validating the
/// quant state against the tensors (shapes, sizes, maps).
Expected<NF4Weight> readWeight(const CheckpointDir &checkpoint,
                               const std::string &name);

/// Fields of transformers' BitsAndBytesConfig that 4-bit loading uses,
/// named as there.
struct QuantizationConfig {
  std::string bnb_4bit_quant_type = "nf4";
  bool bnb_4bit_use_double_quant = true;
  ElementType bnb_4bit_compute_dtype = ElementType::BF16;
  std::vector<std::string> llm_int8_skip_modules; ///< empty: null
};

/// The "quantization_config" object that transformers writes into
/// config.json for a 4-bit checkpoint.
json::Value quantizationConfigJson(const QuantizationConfig &config);

/// Whether transformers would replace the module owning `tensorName` with a
/// 4-bit Linear: a 2-D ".weight" inside the decoder layers, not an
/// embedding, norm or lm_head, and not under a skipped module.
bool shouldQuantize(const std::string &tensorName,
                    const std::vector<int64_t> &shape,
                    const QuantizationConfig &config);

} // namespace bnb
} // namespace qlora
