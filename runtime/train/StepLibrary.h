//===- StepLibrary.h - A compiled step loaded from its shared library -------===//
//
// The generated code exports one C function per entry point:
//   int <symbol>(uint8_t *arena, char *error, size_t errorCapacity);
// returning 0 on success and otherwise writing a message (a bad token id, a
// NaN) into `error`. This class dlopens the library and resolves them.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/train/Manifest.h"

#include <cstdint>
#include <map>
#include <string>

namespace qlora {

using StepEntryPoint = int (*)(uint8_t *arena, char *error,
                               size_t errorCapacity);

class StepLibrary {
public:
  /// Opens `dir`/manifest.json and the library it names.
  static Expected<StepLibrary> open(const std::string &dir);
  StepLibrary(StepLibrary &&other) noexcept;
  StepLibrary &operator=(StepLibrary &&other) noexcept;
  StepLibrary(const StepLibrary &) = delete;
  StepLibrary &operator=(const StepLibrary &) = delete;
  ~StepLibrary();

  const StepManifest &manifest() const { return manifest_; }
  /// Runs the entry point registered for `role` ("train_step", …).
  Status call(const std::string &role, uint8_t *arena) const;

private:
  StepLibrary() = default;
  StepManifest manifest_;
  void *handle_ = nullptr;
  std::map<std::string, StepEntryPoint> entries_;
};

} // namespace qlora
