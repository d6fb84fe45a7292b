//===- ModelConfig.cpp - The config.json facts that shape a Llama graph -----===//
#include "ModelConfig.h"

#include "runtime/Checkpoint.h"

#include <cmath>

namespace qlora {
namespace {

/// Reads an optional field; `fallback` when absent or null.
template <typename T>
Expected<T> optionalField(const json::Value &config, const char *key,
                          T fallback) {
  const json::Value *value = config.find(key);
  if (!value || value->isNull())
    return fallback;
  if constexpr (std::is_same_v<T, bool>) {
    if (!value->isBool())
      return makeError("'{}' must be a boolean", key);
    return value->asBool();
  } else if constexpr (std::is_same_v<T, int64_t>) {
    if (!value->isInt())
      return makeError("'{}' must be an integer", key);
    return value->asInt();
  } else if constexpr (std::is_same_v<T, double>) {
    if (!value->isNumber())
      return makeError("'{}' must be a number", key);
    return value->asDouble();
  } else {
    if (!value->isString())
      return makeError("'{}' must be a string", key);
    return value->asString();
  }
}

} // namespace

Expected<ModelConfig> ModelConfig::fromJson(const json::Value &config,
                                            const std::string &where) {
  auto fail = [&](const std::string &message) {
    return makeError("{}: {}", where, message);
  };
  if (!config.isObject())
    return fail("expects a JSON object");
  ModelConfig model;
  Expected<std::string> type = config.getString("model_type");
  if (!type)
    return fail(type.message());
  model.modelType = *type;
  if (model.modelType != "llama" && model.modelType != "mistral" &&
      model.modelType != "qwen2")
    return fail("model_type '" + model.modelType +
                "' is not supported; expected llama, mistral or qwen2");

  struct Required {
    const char *key;
    int64_t *field;
  } required[] = {{"hidden_size", &model.hiddenSize},
                  {"intermediate_size", &model.intermediateSize},
                  {"num_hidden_layers", &model.numLayers},
                  {"num_attention_heads", &model.numHeads},
                  {"vocab_size", &model.vocabSize}};
  for (const Required &field : required) {
    Expected<int64_t> value = config.getInt(field.key);
    if (!value)
      return fail(value.message());
    if (*value <= 0)
      return fail(fmt::format("'{}' must be positive, got {}", field.key,
                              *value));
    *field.field = *value;
  }

  Expected<int64_t> kvHeads =
      optionalField<int64_t>(config, "num_key_value_heads", model.numHeads);
  Expected<int64_t> headDim = optionalField<int64_t>(
      config, "head_dim", model.hiddenSize / model.numHeads);
  Expected<int64_t> maxPositions =
      optionalField<int64_t>(config, "max_position_embeddings", 2048);
  Expected<double> eps = optionalField<double>(config, "rms_norm_eps", 1e-6);
  Expected<bool> tied =
      optionalField<bool>(config, "tie_word_embeddings", false);
  Expected<std::string> act =
      optionalField<std::string>(config, "hidden_act", "silu");
  Expected<bool> attentionBias =
      optionalField<bool>(config, "attention_bias", false);
  Expected<bool> mlpBias = optionalField<bool>(config, "mlp_bias", false);
  Expected<int64_t> tp = optionalField<int64_t>(config, "pretraining_tp", 1);
  Expected<int64_t> pad = optionalField<int64_t>(config, "pad_token_id", 0);
  for (const Status &status :
       {kvHeads.status(), headDim.status(), maxPositions.status(),
        eps.status(), tied.status(), act.status(), attentionBias.status(),
        mlpBias.status(), tp.status(), pad.status()})
    if (!status)
      return fail(status.message());
  model.numKvHeads = *kvHeads;
  model.headDim = *headDim;
  model.maxPositionEmbeddings = *maxPositions;
  model.rmsNormEps = *eps;
  model.tieWordEmbeddings = *tied;
  model.padTokenId = *pad;
  if (model.numKvHeads <= 0 || model.numHeads % model.numKvHeads != 0)
    return fail(fmt::format("num_attention_heads ({}) must be a multiple of "
                            "num_key_value_heads ({})",
                            model.numHeads, model.numKvHeads));
  if (model.headDim <= 0 || model.headDim % 2 != 0)
    return fail(fmt::format("head_dim must be positive and even, got {}",
                            model.headDim));
  if (*act != "silu")
    return fail("hidden_act '" + *act + "' is not supported; expected silu");
  if (*attentionBias)
    return fail("attention_bias=true is not supported");
  if (*mlpBias)
    return fail("mlp_bias=true is not supported");
  if (*tp != 1)
    return fail(fmt::format("pretraining_tp={} is not supported; expected 1",
                            *tp));
  model.qkvBias = model.modelType == "qwen2";
  if (model.qkvBias)
    return fail("qwen2's q/k/v biases are not supported yet");

  // The rope base and scaling: transformers 5 nests them in
  // rope_parameters, older configs keep rope_theta at the top level and the
  // scaling in rope_scaling, which transformers prefers when both are there.
  const json::Value *parameters = config.find("rope_parameters");
  const json::Value *legacy = config.find("rope_scaling");
  const json::Value *rope = legacy && legacy->isObject() ? legacy : parameters;
  const json::Value *theta = config.find("rope_theta");
  for (const json::Value *source : {legacy, parameters})
    if (source && source->isObject())
      if (const json::Value *nested = source->find("rope_theta"))
        theta = nested;
  if (rope && rope->isObject()) {
    const json::Value *ropeType = rope->find("rope_type");
    if (!ropeType)
      ropeType = rope->find("type");
    std::string kind = !ropeType ? "default"
                       : ropeType->isString() ? ropeType->asString()
                                              : std::string("?");
    if (kind == "llama3") {
      auto number = [&](const char *key) -> Expected<double> {
        const json::Value *value = rope->find(key);
        if (!value || !value->isNumber())
          return makeError("rope_type 'llama3' needs a number '{}'", key);
        return value->asDouble();
      };
      Expected<double> factor = number("factor");
      Expected<double> low = number("low_freq_factor");
      Expected<double> high = number("high_freq_factor");
      Expected<double> original = number("original_max_position_embeddings");
      for (const Expected<double> *field : {&factor, &low, &high, &original})
        if (!*field)
          return fail(field->message());
      if (!(*factor > 0) || !(*low > 0) || !(*high > *low) ||
          !(*original >= 1) || *original != std::floor(*original))
        return fail(fmt::format(
            "rope_type 'llama3' expects factor > 0, 0 < low_freq_factor < "
            "high_freq_factor and a positive integer "
            "original_max_position_embeddings, got {}, {}, {} and {}",
            *factor, *low, *high, *original));
      model.ropeScaling.factor = float(*factor);
      model.ropeScaling.lowFreqFactor = float(*low);
      model.ropeScaling.highFreqFactor = float(*high);
      model.ropeScaling.originalMaxPositionEmbeddings = int64_t(*original);
    } else if (kind != "default") {
      return fail("rope_type '" + kind +
                  "' is not supported; expected default or llama3");
    }
  }
  if (theta) {
    if (!theta->isNumber() || theta->asDouble() <= 0)
      return fail("rope_theta must be a positive number");
    model.ropeTheta = theta->asDouble();
  }
  if (const json::Value *window = config.find("sliding_window");
      window && !window->isNull()) {
    if (!window->isInt())
      return fail("sliding_window must be an integer or null");
    model.slidingWindow = window->asInt();
  }
  return model;
}

Expected<ModelConfig> ModelConfig::read(const std::string &checkpointDir) {
  std::string path = checkpointDir + "/config.json";
  Expected<json::Value> config = readJsonFile(path);
  if (!config)
    return config.error();
  return fromJson(*config, path);
}

} // namespace qlora
