//===- CommandLine.h - Flags for the runtime-side tools ---------------------===//
//
// qlora-quantize, qlora-bench and qlora-train build on a bare GPU host without
// LLVM, so they cannot use llvm::cl. This is a small GNU-style parser:
// `--name value`, `--name=value`, boolean `--flag` / `--flag=false`,
// positional arguments, and a generated --help. Flag names follow the
// ecosystem (BitsAndBytesConfig, LoraConfig, TrainingArguments fields).
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/ByteSize.h"
#include "runtime/Error.h"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace qlora::cli {

/// The version every tool reports.
constexpr const char *kVersion = "0.1.0";

class CommandLine {
public:
  CommandLine(std::string program, std::string usage, std::string summary)
      : program_(std::move(program)), usage_(std::move(usage)),
        summary_(std::move(summary)) {}

  /// A flag taking a value; `metavar` names it in --help.
  void option(std::string name, std::string metavar, std::string help,
              std::string *value);
  /// An integer flag.
  void option(std::string name, std::string metavar, std::string help,
              int64_t *value);
  /// A floating-point flag; shown in --help with Python's formatting.
  void option(std::string name, std::string metavar, std::string help,
              double *value);
  /// A byte-size flag: 6.1GiB, 48GB, or bytes (runtime/ByteSize.h).
  void option(std::string name, std::string metavar, std::string help,
              ByteSize *value);
  /// A boolean flag: `--name`, `--name=true|false|1|0`.
  void flag(std::string name, std::string help, bool *value);

  /// Parses argv. Positional arguments are appended to `positional()`.
  /// Returns an error for unknown flags or bad values; notes -h/--help and
  /// --version for parseOrExit.
  Status parse(int argc, char **argv);

  /// parse(), plus what every tool does alike: an error, --help or
  /// --version is printed and the returned exit code ends the program;
  /// nullopt means go on.
  std::optional<int> parseOrExit(int argc, char **argv);

  const std::vector<std::string> &positional() const { return positional_; }
  std::string helpText() const;

private:
  struct Option {
    std::string name, metavar, help, defaultText;
    bool isFlag = false;
    std::function<Status(const std::string &)> set;
  };
  const Option *find(const std::string &name) const;

  std::string program_, usage_, summary_;
  std::vector<Option> options_;
  std::vector<std::string> positional_;
  bool help_ = false, version_ = false;
};

/// Parses "true/false/1/0/yes/no".
Expected<bool> parseBool(const std::string &text);

/// Joins names with ", " (for help texts and errors).
std::string joinList(const std::vector<std::string> &names);

/// Splits "a,b,c" (or another separator) into its non-empty parts.
std::vector<std::string> splitList(const std::string &text,
                                   char separator = ',');

} // namespace qlora::cli
