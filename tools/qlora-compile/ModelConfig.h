//===- ModelConfig.h - The config.json facts that shape a Llama graph -------===//
//
// Reads a Hugging Face config.json for the Llama family (Llama, Mistral,
// Qwen2) and refuses, with the field named, anything that would change the
// math in ways the importer does not model: another activation, rope
// scaling, biases where Llama has none, tensor-parallel pretraining splits.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/Json.h"
#include "runtime/RopeScaling.h"

#include <cstdint>
#include <string>

namespace qlora {

struct ModelConfig {
  std::string modelType; ///< "llama", "mistral" or "qwen2"
  int64_t hiddenSize = 0;
  int64_t intermediateSize = 0;
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t numKvHeads = 0;
  int64_t headDim = 0;
  int64_t vocabSize = 0;
  int64_t maxPositionEmbeddings = 0;
  double rmsNormEps = 1e-6;
  double ropeTheta = 10000.0;
  RopeScaling ropeScaling; ///< Llama 3's rope_scaling; none by default
  bool tieWordEmbeddings = false;
  bool qkvBias = false; ///< Qwen2: q/k/v projections carry a bias
  int64_t slidingWindow = 0; ///< 0: none
  int64_t padTokenId = 0;

  /// Parses and validates; errors name `where` and the field.
  static Expected<ModelConfig> fromJson(const json::Value &config,
                                        const std::string &where);
  static Expected<ModelConfig> read(const std::string &checkpointDir);
};

} // namespace qlora
