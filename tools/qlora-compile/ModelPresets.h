//===- ModelPresets.h - Model shapes to compile without weights --------------===//
//
// `qlora-compile --config NAME|PATH` compiles a step from a bare config: a
// preset's config.json facts (the published configs of Llama-2 7B, 13B and
// 70B, Llama-3 8B, and the oracle's tiny Llama), or a config.json file, with
// no checkpoint. Benchmarks run such steps on random weights.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "ModelConfig.h"

#include <string>
#include <vector>

namespace qlora {

/// The preset names.
std::vector<std::string> modelPresetNames();

/// The config of preset `name`, or of the config.json at `path` (a file,
/// or a directory holding one).
Expected<ModelConfig> readModelConfig(const std::string &nameOrPath);

} // namespace qlora
