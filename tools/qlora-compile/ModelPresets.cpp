//===- ModelPresets.cpp - Model shapes to compile without weights ------------===//
#include "ModelPresets.h"

#include "runtime/Checkpoint.h"

#include <sys/stat.h>

namespace qlora {
namespace {

struct Preset {
  const char *name;
  const char *config; ///< the config.json fields that shape the graph
};

// The published configs' shapes (hidden, MLP, layers, heads, KV heads,
// vocabulary, positions, eps, rope base).
constexpr Preset kPresets[] = {
    {"llama2-7b", R"({"model_type": "llama", "hidden_size": 4096,
      "intermediate_size": 11008, "num_hidden_layers": 32,
      "num_attention_heads": 32, "num_key_value_heads": 32,
      "vocab_size": 32000, "max_position_embeddings": 4096,
      "rms_norm_eps": 1e-05, "rope_theta": 10000.0})"},
    {"llama2-13b", R"({"model_type": "llama", "hidden_size": 5120,
      "intermediate_size": 13824, "num_hidden_layers": 40,
      "num_attention_heads": 40, "num_key_value_heads": 40,
      "vocab_size": 32000, "max_position_embeddings": 4096,
      "rms_norm_eps": 1e-05, "rope_theta": 10000.0})"},
    {"llama3-8b", R"({"model_type": "llama", "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 32,
      "num_attention_heads": 32, "num_key_value_heads": 8,
      "vocab_size": 128256, "max_position_embeddings": 8192,
      "rms_norm_eps": 1e-05, "rope_theta": 500000.0})"},
    {"llama2-70b", R"({"model_type": "llama", "hidden_size": 8192,
      "intermediate_size": 28672, "num_hidden_layers": 80,
      "num_attention_heads": 64, "num_key_value_heads": 8,
      "vocab_size": 32000, "max_position_embeddings": 4096,
      "rms_norm_eps": 1e-05, "rope_theta": 10000.0})"},
    {"tiny-llama", R"({"model_type": "llama", "hidden_size": 256,
      "intermediate_size": 688, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
      "vocab_size": 1024, "max_position_embeddings": 512,
      "rms_norm_eps": 1e-05, "rope_theta": 10000.0})"},
};

bool isDirectory(const std::string &path) {
  struct stat info;
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

} // namespace

std::vector<std::string> modelPresetNames() {
  std::vector<std::string> names;
  for (const Preset &preset : kPresets)
    names.push_back(preset.name);
  return names;
}

Expected<ModelConfig> readModelConfig(const std::string &nameOrPath) {
  for (const Preset &preset : kPresets)
    if (nameOrPath == preset.name) {
      Expected<json::Value> config = json::parse(preset.config);
      if (!config)
        return config.error();
      return ModelConfig::fromJson(*config, "preset " + nameOrPath);
    }
  if (isDirectory(nameOrPath))
    return ModelConfig::read(nameOrPath);
  Expected<json::Value> config = readJsonFile(nameOrPath);
  if (!config) {
    std::string names;
    for (const std::string &name : modelPresetNames())
      names += (names.empty() ? "" : ", ") + name;
    return makeError("--config {}: not a preset ({}) nor a readable "
                     "config.json: {}",
                     nameOrPath, names, config.message());
  }
  return ModelConfig::fromJson(*config, nameOrPath);
}

} // namespace qlora
