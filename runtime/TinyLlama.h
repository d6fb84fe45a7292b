//===- TinyLlama.h - The built-in demo model --------------------------------===//
//
// A small Llama checkpoint generated from a seed, so that the tools have a
// default job on a machine with no model downloaded: 2 decoder layers, hidden
// 256, MLP 688 (not a multiple of 64, so quantization blocks cross rows),
// 4 attention heads over 2 KV heads (GQA), vocab 1024, bf16, untied lm_head.
// The same shapes as the reference stack's oracle model.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <string>

namespace qlora {

/// Writes config.json, generation_config.json and model.safetensors of the
/// built-in model into `dir` (created if missing). Linear weights and
/// embeddings are N(0, 0.02) from `seed`; norms are ones.
Status writeTinyLlama(const std::string &dir, uint64_t seed = 0);

} // namespace qlora
