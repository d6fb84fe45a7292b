//===- StepOptionFlags.h - StepOptions as command-line flags ----------------===//
//
// qlora-compile and qlora-train take the options of StepOptions.def under
// their Hugging Face names; both register them here, so the two tools agree
// on every name, help text and default.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/train/StepOptions.h"
#include "tools/common/CommandLine.h"

namespace qlora::cli {

/// Registers one flag per StepOptions field, writing into `options`.
void addStepOptionFlags(CommandLine &commandLine, StepOptions &options);

} // namespace qlora::cli
