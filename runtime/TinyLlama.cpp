//===- TinyLlama.cpp - The built-in demo model ------------------------------===//
#include "runtime/TinyLlama.h"

#include "runtime/Float16.h"
#include "runtime/Json.h"
#include "runtime/Safetensors.h"
#include "runtime/TensorData.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

namespace qlora {
namespace {

constexpr int64_t kHidden = 256;
constexpr int64_t kIntermediate = 688;
constexpr int64_t kLayers = 2;
constexpr int64_t kHeads = 4;
constexpr int64_t kKvHeads = 2;
constexpr int64_t kHeadDim = 64;
constexpr int64_t kVocab = 1024;

/// splitmix64: a tiny, well-mixed generator; reproducible everywhere.
class Random {
public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// Uniform in (0, 1].
  double uniform() { return double((next() >> 11) + 1) * 0x1.0p-53; }
  /// Standard normal by Box-Muller.
  double normal() {
    double radius = std::sqrt(-2.0 * std::log(uniform()));
    return radius * std::cos(6.283185307179586 * uniform());
  }

private:
  uint64_t state_;
};

std::vector<uint16_t> normalBf16(Random &random, int64_t count, double std) {
  std::vector<uint16_t> values(count);
  for (uint16_t &value : values)
    value = floatToBf16(float(random.normal() * std));
  return values;
}

json::Value configJson() {
  json::Value rope = json::Value::object();
  rope.set("rope_theta", 10000.0);
  rope.set("rope_type", "default");
  json::Value config = json::Value::object();
  config.set("architectures", json::Array{"LlamaForCausalLM"});
  config.set("attention_bias", false);
  config.set("attention_dropout", 0.0);
  config.set("bos_token_id", 1);
  config.set("dtype", "bfloat16");
  config.set("eos_token_id", 2);
  config.set("head_dim", kHeadDim);
  config.set("hidden_act", "silu");
  config.set("hidden_size", kHidden);
  config.set("initializer_range", 0.02);
  config.set("intermediate_size", kIntermediate);
  config.set("max_position_embeddings", 512);
  config.set("mlp_bias", false);
  config.set("model_type", "llama");
  config.set("num_attention_heads", kHeads);
  config.set("num_hidden_layers", kLayers);
  config.set("num_key_value_heads", kKvHeads);
  config.set("pad_token_id", nullptr);
  config.set("pretraining_tp", 1);
  config.set("rms_norm_eps", 1e-05);
  config.set("rope_parameters", std::move(rope));
  config.set("tie_word_embeddings", false);
  config.set("use_cache", true);
  config.set("vocab_size", kVocab);
  return config;
}

} // namespace

Status writeTinyLlama(const std::string &dir, uint64_t seed) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error)
    return makeError("{}: cannot create directory: {}", dir, error.message());
  Random random(seed);
  SafetensorsWriter writer;
  writer.setMetadata("format", "pt");
  auto addNormal = [&](const std::string &name, int64_t rows,
                       int64_t cols) -> Status {
    std::vector<uint16_t> values = normalBf16(random, rows * cols, 0.02);
    return writer.add(name, DType::BF16, {rows, cols}, values.data(),
                      values.size() * 2);
  };
  std::vector<uint16_t> ones(kHidden, floatToBf16(1.0f));
  auto addNorm = [&](const std::string &name) {
    return writer.add(name, DType::BF16, {kHidden}, ones.data(),
                      ones.size() * 2);
  };

  QLORA_RETURN_IF_ERROR(addNormal("model.embed_tokens.weight", kVocab, kHidden));
  for (int64_t layer = 0; layer < kLayers; ++layer) {
    std::string prefix = "model.layers." + std::to_string(layer) + ".";
    QLORA_RETURN_IF_ERROR(addNorm(prefix + "input_layernorm.weight"));
    QLORA_RETURN_IF_ERROR(addNorm(prefix + "post_attention_layernorm.weight"));
    QLORA_RETURN_IF_ERROR(addNormal(prefix + "self_attn.q_proj.weight",
                                    kHeads * kHeadDim, kHidden));
    QLORA_RETURN_IF_ERROR(addNormal(prefix + "self_attn.k_proj.weight",
                                    kKvHeads * kHeadDim, kHidden));
    QLORA_RETURN_IF_ERROR(addNormal(prefix + "self_attn.v_proj.weight",
                                    kKvHeads * kHeadDim, kHidden));
    QLORA_RETURN_IF_ERROR(addNormal(prefix + "self_attn.o_proj.weight",
                                    kHidden, kHeads * kHeadDim));
    QLORA_RETURN_IF_ERROR(
        addNormal(prefix + "mlp.gate_proj.weight", kIntermediate, kHidden));
    QLORA_RETURN_IF_ERROR(
        addNormal(prefix + "mlp.up_proj.weight", kIntermediate, kHidden));
    QLORA_RETURN_IF_ERROR(
        addNormal(prefix + "mlp.down_proj.weight", kHidden, kIntermediate));
  }
  QLORA_RETURN_IF_ERROR(addNorm("model.norm.weight"));
  QLORA_RETURN_IF_ERROR(addNormal("lm_head.weight", kVocab, kHidden));

  QLORA_RETURN_IF_ERROR(writer.write(dir + "/model.safetensors"));
  QLORA_RETURN_IF_ERROR(
      writeFileAtomically(dir + "/config.json", json::writeIndented(configJson())));
  json::Value generation = json::Value::object();
  generation.set("bos_token_id", 1);
  generation.set("eos_token_id", 2);
  return writeFileAtomically(dir + "/generation_config.json",
                   json::writeIndented(generation));
}

} // namespace qlora
