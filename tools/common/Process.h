//===- Process.h - Running a sibling tool -----------------------------------===//
//
// qlora-train compiles a step on the fly by running qlora-compile, which is
// installed beside it. No shell is involved: arguments pass through as is.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <string>
#include <vector>

namespace qlora::cli {

/// The directory holding the running executable.
std::string executableDirectory();

/// Runs `argv` (argv[0] a path) and waits; stdout and stderr are inherited.
/// Fails when it cannot start or exits non-zero.
Status runProcess(const std::vector<std::string> &argv);

} // namespace qlora::cli
