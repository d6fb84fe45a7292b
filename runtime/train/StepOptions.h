//===- StepOptions.h - The options a compiled step is built with ------------===//
//
// qlora::StepOptions holds every option declared in StepOptions.def, with its
// default, under its Hugging Face name. qlora-compile reads them from its
// command line and records them in the manifest; qlora-train passes them on
// to qlora-compile and checks a given step against them.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/ByteSize.h"
#include "runtime/Error.h"
#include "runtime/Json.h"

#include <cstdint>
#include <string>
#include <vector>

namespace qlora {

/// The C++ types of StepOptions.def's kinds.
using StepOptionInt = int64_t;
using StepOptionDouble = double;
using StepOptionBool = bool;
using StepOptionList = std::string; ///< comma-separated names
using StepOptionSize = ByteSize;

/// The defaults of StepOptions.def as constants, for the pass options of
/// passes/Passes.td (whose defaults are C++ expressions).
namespace step_option_defaults {
using Int = int64_t;
using Double = double;
using Bool = bool;
using List = const char *;
using Size = ByteSize;
#define QLORA_STEP_OPTION(Field, Kind, Default, HfName, PipelineName, Help)    \
  inline constexpr Kind Field = Default;
#include "runtime/train/StepOptions.def"
} // namespace step_option_defaults

struct StepOptions {
#define QLORA_STEP_OPTION(Field, Kind, Default, HfName, PipelineName, Help)    \
  StepOption##Kind Field = step_option_defaults::Field;
#include "runtime/train/StepOptions.def"

  /// The command-line arguments that give these options to qlora-compile
  /// (`--name value` pairs, every option spelled out).
  std::vector<std::string> arguments() const;
  /// An object keyed by the Hugging Face names (the manifest's "options").
  json::Value toJson() const;
  /// Reads toJson()'s form; a missing key keeps its default, a key of the
  /// wrong kind is an error.
  static Expected<StepOptions> fromJson(const json::Value &value);
  /// The names of a List option.
  static std::vector<std::string> names(const std::string &list);
};

} // namespace qlora
