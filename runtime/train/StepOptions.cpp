//===- StepOptions.cpp - The options a compiled step is built with ----------===//
#include "runtime/train/StepOptions.h"

#include <fmt/format.h>

namespace qlora {
namespace {

std::string text(int64_t value) { return std::to_string(value); }
/// Shortest round-trip form, so that the value compiled is the value given.
std::string text(double value) { return fmt::format("{}", value); }
std::string text(bool value) { return value ? "true" : "false"; }
std::string text(const std::string &value) { return value; }
std::string text(ByteSize value) { return std::to_string(value.bytes); }

json::Value jsonOf(int64_t value) { return json::Value(value); }
json::Value jsonOf(double value) { return json::Value(value); }
json::Value jsonOf(bool value) { return json::Value(value); }
json::Value jsonOf(ByteSize value) { return json::Value(value.bytes); }
json::Value jsonOf(const std::string &list) {
  json::Value array = json::Value::array();
  for (const std::string &name : StepOptions::names(list))
    array.push(name);
  return array;
}

Status read(const json::Value &value, const char *name, int64_t *out) {
  if (!value.isInt())
    return makeError("option '{}' must be an integer, got {}", name,
                     json::kindName(value.kind()));
  *out = value.asInt();
  return Status::ok();
}
Status read(const json::Value &value, const char *name, double *out) {
  if (!value.isNumber())
    return makeError("option '{}' must be a number, got {}", name,
                     json::kindName(value.kind()));
  *out = value.asDouble();
  return Status::ok();
}
Status read(const json::Value &value, const char *name, bool *out) {
  if (!value.isBool())
    return makeError("option '{}' must be true or false, got {}", name,
                     json::kindName(value.kind()));
  *out = value.asBool();
  return Status::ok();
}
Status read(const json::Value &value, const char *name, ByteSize *out) {
  if (!value.isInt() || value.asInt() < 0)
    return makeError("option '{}' must be a byte count >= 0, got {}", name,
                     json::kindName(value.kind()));
  *out = ByteSize(value.asInt());
  return Status::ok();
}
Status read(const json::Value &value, const char *name, std::string *out) {
  if (!value.isArray())
    return makeError("option '{}' must be a list of names, got {}", name,
                     json::kindName(value.kind()));
  std::string list;
  for (const json::Value &item : value.asArray()) {
    if (!item.isString())
      return makeError("option '{}' must be a list of names", name);
    list += (list.empty() ? "" : ",") + item.asString();
  }
  *out = list;
  return Status::ok();
}

} // namespace

std::vector<std::string> StepOptions::arguments() const {
  std::vector<std::string> args;
#define QLORA_STEP_OPTION(Field, Kind, Default, HfName, PipelineName, Help)    \
  args.push_back("--" HfName "=" + text(Field));
#include "runtime/train/StepOptions.def"
  return args;
}

json::Value StepOptions::toJson() const {
  json::Value object = json::Value::object();
#define QLORA_STEP_OPTION(Field, Kind, Default, HfName, PipelineName, Help)    \
  object.set(HfName, jsonOf(Field));
#include "runtime/train/StepOptions.def"
  return object;
}

Expected<StepOptions> StepOptions::fromJson(const json::Value &value) {
  if (!value.isObject())
    return makeError("the step options must be an object");
  StepOptions options;
#define QLORA_STEP_OPTION(Field, Kind, Default, HfName, PipelineName, Help)    \
  if (const json::Value *item = value.find(HfName))                            \
    QLORA_RETURN_IF_ERROR(read(*item, HfName, &options.Field));
#include "runtime/train/StepOptions.def"
  return options;
}

std::vector<std::string> StepOptions::names(const std::string &list) {
  std::vector<std::string> names;
  size_t begin = 0;
  while (begin <= list.size()) {
    size_t end = list.find(',', begin);
    if (end == std::string::npos)
      end = list.size();
    if (end > begin)
      names.push_back(list.substr(begin, end - begin));
    begin = end + 1;
  }
  return names;
}

} // namespace qlora
