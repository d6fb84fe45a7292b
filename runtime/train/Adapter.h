//===- Adapter.h - PEFT LoRA adapter directories ----------------------------===//
//
// What PEFT's save_pretrained writes and from_pretrained reads:
// adapter_config.json (LoraConfig's fields) and adapter_model.safetensors
// with fp32 tensors named base_model.model.<module>.lora_{A,B}.weight.
// Readers also accept the ".default" adapter name that a model's state dict
// carries (…lora_A.default.weight).
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace qlora {

/// LoraConfig's fields, named as there.
struct LoraSettings {
  int64_t r = 8;
  double lora_alpha = 8.0;
  double lora_dropout = 0.0;
  std::vector<std::string> target_modules;
  bool use_rslora = false;
  std::string base_model_name_or_path;
};

/// One fp32 adapter tensor.
struct AdapterTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

/// Tensors by PEFT name (without ".default").
using AdapterWeights = std::map<std::string, AdapterTensor>;

/// Drops the ".default" adapter name: "x.lora_A.default.weight" ->
/// "x.lora_A.weight".
std::string canonicalAdapterName(const std::string &name);

/// Writes `dir`/adapter_config.json and `dir`/adapter_model.safetensors,
/// each atomically (a temporary file renamed into place), so that a failure
/// leaves any earlier adapter in `dir` intact.
Status writePeftAdapter(const std::string &dir, const LoraSettings &settings,
                        const AdapterWeights &weights);

/// Reads the tensors of an adapter directory (or of a .safetensors file).
Expected<AdapterWeights> readPeftAdapter(const std::string &path);

/// Reads adapter_config.json of an adapter directory.
Expected<LoraSettings> readPeftAdapterConfig(const std::string &dir);

} // namespace qlora
