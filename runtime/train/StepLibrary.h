//===- StepLibrary.h - A compiled step loaded from its shared library -------===//
//
// dlopens the step library a manifest names, checks that it was generated
// for this runtime's ABI and for the manifest's target
// (runtime/step/StepAbi.h), and resolves its entry points.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/step/StepAbi.h"
#include "runtime/train/Manifest.h"

#include <cstdint>
#include <map>
#include <string>

namespace qlora {

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
  const std::string &directory() const { return directory_; }
  /// The entry point registered for `role` ("train_step", …), or an error.
  Expected<QLoRAStepEntryFn> entry(const std::string &role) const;
  /// Runs the entry point for `role` on `context`; its message on failure.
  Status call(const std::string &role, QLoRAStepContext &context) const;

private:
  StepLibrary() = default;
  StepManifest manifest_;
  std::string directory_;
  void *handle_ = nullptr;
  std::map<std::string, QLoRAStepEntryFn> entries_;
};

} // namespace qlora
