//===- Adapter.cpp - PEFT LoRA adapter directories --------------------------===//
#include "runtime/train/Adapter.h"

#include "runtime/Checkpoint.h"
#include "runtime/TensorData.h"
#include "runtime/Json.h"
#include "runtime/Safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>

namespace qlora {
namespace fs = std::filesystem;

std::string canonicalAdapterName(const std::string &name) {
  std::string result = name;
  for (const char *marker : {".lora_A.default.", ".lora_B.default."}) {
    size_t at = result.find(marker);
    if (at != std::string::npos)
      result.erase(at + 7, 8); // ".lora_A" is 7 characters, "default." 8
  }
  return result;
}

namespace {

json::Value configJson(const LoraSettings &settings) {
  json::Value targets = json::Value::array();
  for (const std::string &module : settings.target_modules)
    targets.push(module);
  json::Value config = json::Value::object();
  config.set("alpha_pattern", json::Value::object());
  config.set("auto_mapping", nullptr);
  config.set("base_model_name_or_path", settings.base_model_name_or_path);
  config.set("bias", "none");
  config.set("fan_in_fan_out", false);
  config.set("inference_mode", true);
  config.set("init_lora_weights", true);
  config.set("layer_replication", nullptr);
  config.set("layers_pattern", nullptr);
  config.set("layers_to_transform", nullptr);
  config.set("lora_alpha", settings.lora_alpha == double(int64_t(settings.lora_alpha))
                               ? json::Value(int64_t(settings.lora_alpha))
                               : json::Value(settings.lora_alpha));
  config.set("lora_bias", false);
  config.set("lora_dropout", settings.lora_dropout);
  config.set("modules_to_save", nullptr);
  config.set("peft_type", "LORA");
  config.set("r", settings.r);
  config.set("rank_pattern", json::Value::object());
  config.set("revision", nullptr);
  config.set("target_modules", std::move(targets));
  config.set("task_type", "CAUSAL_LM");
  config.set("use_dora", false);
  config.set("use_rslora", settings.use_rslora);
  return config;
}

} // namespace

Status writePeftAdapter(const std::string &dir, const LoraSettings &settings,
                        const AdapterWeights &weights) {
  std::error_code error;
  fs::create_directories(dir, error);
  if (error)
    return makeError("{}: cannot create directory: {}", dir, error.message());
  SafetensorsWriter writer;
  writer.setMetadata("format", "pt");
  for (const auto &[name, tensor] : weights)
    QLORA_RETURN_IF_ERROR(writer.addView(name, DType::F32, tensor.shape,
                                         tensor.values.data(),
                                         tensor.values.size() * sizeof(float)));
  QLORA_RETURN_IF_ERROR(writer.write(dir + "/adapter_model.safetensors"));
  return writeFileAtomically(dir + "/adapter_config.json",
                             json::writeIndented(configJson(settings)));
}

Expected<AdapterWeights> readPeftAdapter(const std::string &path) {
  std::string file = path;
  if (fs::is_directory(path))
    file = path + "/adapter_model.safetensors";
  Expected<SafetensorsFile> opened = SafetensorsFile::open(file);
  if (!opened)
    return opened.error();
  AdapterWeights weights;
  for (const TensorInfo &info : opened->tensors()) {
    AdapterTensor tensor;
    tensor.shape = info.shape;
    tensor.values.resize(info.numElements());
    QLORA_RETURN_IF_ERROR(
        copyAsFloats(info, opened->data(info), tensor.values.data(), file));
    std::string name = canonicalAdapterName(info.name);
    if (!weights.emplace(name, std::move(tensor)).second)
      return makeError("{}: tensor '{}' appears twice (with and without "
                       "'.default')",
                       file, name);
  }
  return weights;
}

Expected<LoraSettings> readPeftAdapterConfig(const std::string &dir) {
  Expected<json::Value> config = readJsonFile(dir + "/adapter_config.json");
  if (!config)
    return config.error();
  LoraSettings settings;
  Expected<int64_t> r = config->getInt("r");
  Expected<double> alpha = config->getDouble("lora_alpha");
  if (!r || !alpha)
    return makeError("{}/adapter_config.json: {}", dir,
                     r ? alpha.message() : r.message());
  settings.r = *r;
  settings.lora_alpha = *alpha;
  if (Expected<double> dropout = config->getDouble("lora_dropout"))
    settings.lora_dropout = *dropout;
  if (Expected<bool> rslora = config->getBool("use_rslora"))
    settings.use_rslora = *rslora;
  if (const json::Value *targets = config->find("target_modules")) {
    if (targets->isString()) {
      settings.target_modules.push_back(targets->asString());
    } else if (targets->isArray()) {
      for (const json::Value &module : targets->asArray())
        if (module.isString())
          settings.target_modules.push_back(module.asString());
    }
  }
  return settings;
}

} // namespace qlora
