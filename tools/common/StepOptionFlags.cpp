//===- StepOptionFlags.cpp - StepOptions as command-line flags --------------===//
#include "tools/common/StepOptionFlags.h"

namespace qlora::cli {
namespace {

void add(CommandLine &commandLine, const char *name, const char *help,
         int64_t *value) {
  commandLine.option(name, "N", help, value);
}
void add(CommandLine &commandLine, const char *name, const char *help,
         double *value) {
  commandLine.option(name, "X", help, value);
}
void add(CommandLine &commandLine, const char *name, const char *help,
         bool *value) {
  commandLine.flag(name, help, value);
}
void add(CommandLine &commandLine, const char *name, const char *help,
         ByteSize *value) {
  commandLine.option(name, "SIZE", help, value);
}
void add(CommandLine &commandLine, const char *name, const char *help,
         std::string *value) {
  commandLine.option(name, "A,B", help, value);
}

} // namespace

void addStepOptionFlags(CommandLine &commandLine, StepOptions &options) {
#define QLORA_STEP_OPTION(Field, Kind, Default, HfName, PipelineName, Help)    \
  add(commandLine, HfName, Help, &options.Field);
#include "runtime/train/StepOptions.def"
}

} // namespace qlora::cli
