//===- CommandLine.cpp - Flags for the runtime-side tools -------------------===//
#include "tools/common/CommandLine.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace qlora::cli {

Expected<bool> parseBool(const std::string &text) {
  if (text == "true" || text == "1" || text == "yes" || text == "True")
    return true;
  if (text == "false" || text == "0" || text == "no" || text == "False")
    return false;
  return makeError("expects true or false, got '{}'", text);
}

std::vector<std::string> splitList(const std::string &text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(separator, start);
    if (comma == std::string::npos)
      comma = text.size();
    if (comma > start)
      parts.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return parts;
}

void CommandLine::option(std::string name, std::string metavar,
                         std::string help, std::string *value) {
  Option option{std::move(name), std::move(metavar), std::move(help), *value,
                false, nullptr};
  option.set = [value](const std::string &text) {
    *value = text;
    return Status::ok();
  };
  options_.push_back(std::move(option));
}

void CommandLine::option(std::string name, std::string metavar,
                         std::string help, int64_t *value) {
  Option option{std::move(name), std::move(metavar), std::move(help),
                std::to_string(*value), false, nullptr};
  std::string flagName = option.name;
  option.set = [value, flagName](const std::string &text) -> Status {
    char *end = nullptr;
    errno = 0;
    long long parsed = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno == ERANGE)
      return makeError("--{} expects an integer, got '{}'", flagName, text);
    *value = parsed;
    return Status::ok();
  };
  options_.push_back(std::move(option));
}

void CommandLine::option(std::string name, std::string metavar,
                         std::string help, ByteSize *value) {
  Option option{std::move(name), std::move(metavar), std::move(help),
                value->bytes ? formatByteSize(value->bytes) : "0", false,
                nullptr};
  std::string flagName = option.name;
  option.set = [value, flagName](const std::string &text) -> Status {
    Expected<ByteSize> parsed = parseByteSize(text);
    if (!parsed)
      return makeError("--{}: {}", flagName, parsed.message());
    *value = *parsed;
    return Status::ok();
  };
  options_.push_back(std::move(option));
}

void CommandLine::option(std::string name, std::string metavar,
                         std::string help, double *value) {
  Option option{std::move(name), std::move(metavar), std::move(help),
                fmt::format("{}", *value), false, nullptr};
  std::string flagName = option.name;
  option.set = [value, flagName](const std::string &text) -> Status {
    char *end = nullptr;
    errno = 0;
    double parsed = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || errno == ERANGE)
      return makeError("--{} expects a number, got '{}'", flagName, text);
    *value = parsed;
    return Status::ok();
  };
  options_.push_back(std::move(option));
}

void CommandLine::flag(std::string name, std::string help, bool *value) {
  Option option{std::move(name), "", std::move(help),
                *value ? "true" : "false", true, nullptr};
  std::string flagName = option.name;
  option.set = [value, flagName](const std::string &text) -> Status {
    Expected<bool> parsed = parseBool(text);
    if (!parsed)
      return makeError("--{} {}", flagName, parsed.message());
    *value = *parsed;
    return Status::ok();
  };
  options_.push_back(std::move(option));
}

const CommandLine::Option *CommandLine::find(const std::string &name) const {
  for (const Option &option : options_)
    if (option.name == name)
      return &option;
  return nullptr;
}

Status CommandLine::parse(int argc, char **argv) {
  bool onlyPositional = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (onlyPositional || arg.size() < 2 || arg[0] != '-') {
      positional_.push_back(arg);
      continue;
    }
    if (arg == "--") {
      onlyPositional = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      help_ = true;
      continue;
    }
    if (arg == "--version") {
      version_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0)
      return makeError("unknown option '{}' (try --help)", arg);
    std::string name = arg.substr(2);
    std::string value;
    bool hasValue = false;
    if (size_t equals = name.find('='); equals != std::string::npos) {
      value = name.substr(equals + 1);
      name = name.substr(0, equals);
      hasValue = true;
    }
    // Accept dashes for underscores: --bnb-4bit-quant-type.
    for (char &c : name)
      if (c == '-')
        c = '_';
    const Option *option = find(name);
    if (!option)
      return makeError("unknown option '--{}' (try --help)", name);
    if (!hasValue) {
      if (option->isFlag) {
        value = "true";
      } else {
        if (i + 1 >= argc)
          return makeError("option '--{}' needs a value ({})", name,
                           option->metavar);
        value = argv[++i];
      }
    }
    QLORA_RETURN_IF_ERROR(option->set(value));
  }
  return Status::ok();
}

std::optional<int> CommandLine::parseOrExit(int argc, char **argv) {
  Status parsed = parse(argc, argv);
  if (!parsed) {
    std::fprintf(stderr, "%s: error: %s\n", program_.c_str(),
                 parsed.message().c_str());
    return 1;
  }
  if (help_) {
    std::fputs(helpText().c_str(), stdout);
    return 0;
  }
  if (version_) {
    std::printf("%s %s\n", program_.c_str(), kVersion);
    return 0;
  }
  return std::nullopt;
}

std::string CommandLine::helpText() const {
  std::string text = "usage: " + program_ + " " + usage_ + "\n\n" + summary_ +
                     "\n\noptions:\n";
  for (const Option &option : options_) {
    std::string head = "  --" + option.name;
    if (!option.isFlag)
      head += " " + option.metavar;
    if (head.size() < 34)
      head.resize(34, ' ');
    else
      head += "\n" + std::string(34, ' ');
    text += head + option.help;
    if (!option.defaultText.empty())
      text += " (default: " + option.defaultText + ")";
    text += "\n";
  }
  text += "  -h, --help                      show this help and exit\n"
          "  --version                       print the version and exit\n";
  return text;
}

std::string joinList(const std::vector<std::string> &names) {
  std::string text;
  for (const std::string &name : names)
    text += (text.empty() ? "" : ", ") + name;
  return text;
}

} // namespace qlora::cli
