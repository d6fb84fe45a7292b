//===- StepLibrary.cpp - A compiled step loaded from its shared library -----===//
#include "runtime/train/StepLibrary.h"

#include <dlfcn.h>
#include <utility>

namespace qlora {

Expected<StepLibrary> StepLibrary::open(const std::string &dir) {
  Expected<StepManifest> manifest =
      StepManifest::read(dir + "/manifest.json");
  if (!manifest)
    return manifest.error();
  StepLibrary library;
  library.manifest_ = manifest.take();
  library.directory_ = dir;
  if (library.manifest_.abiVersion != QLORA_STEP_ABI_VERSION)
    return makeError("{}: the step was compiled for step ABI {} and this "
                     "runtime has ABI {}; recompile it with qlora-compile "
                     "from this version",
                     dir, library.manifest_.abiVersion,
                     QLORA_STEP_ABI_VERSION);
  std::string path = dir + "/" + library.manifest_.library;
  library.handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library.handle_)
    return makeError("cannot load the compiled step {}: {}", path,
                     ::dlerror());
  auto abi = reinterpret_cast<QLoRAStepAbiVersionFn>(
      ::dlsym(library.handle_, "qlora_step_abi_version"));
  auto target = reinterpret_cast<QLoRAStepTargetFn>(
      ::dlsym(library.handle_, "qlora_step_target"));
  if (!abi || !target)
    return makeError("{} is not a step library of this version (no "
                     "qlora_step_abi_version); recompile it",
                     path);
  if (abi() != QLORA_STEP_ABI_VERSION)
    return makeError("{} was generated for step ABI {} and this runtime has "
                     "ABI {}; recompile it",
                     path, abi(), QLORA_STEP_ABI_VERSION);
  if (library.manifest_.target != target())
    return makeError("{} targets {} but its manifest says {}", path, target(),
                     library.manifest_.target);
  for (const auto &[role, symbol] : library.manifest_.entryPoints) {
    void *address = ::dlsym(library.handle_, symbol.c_str());
    if (!address)
      return makeError("{}: missing entry point '{}' ({})", path, symbol,
                       role);
    library.entries_[role] = reinterpret_cast<QLoRAStepEntryFn>(address);
  }
  return library;
}

StepLibrary::StepLibrary(StepLibrary &&other) noexcept
    : manifest_(std::move(other.manifest_)),
      directory_(std::move(other.directory_)),
      handle_(std::exchange(other.handle_, nullptr)),
      entries_(std::move(other.entries_)) {}

StepLibrary &StepLibrary::operator=(StepLibrary &&other) noexcept {
  if (this != &other) {
    if (handle_)
      ::dlclose(handle_);
    manifest_ = std::move(other.manifest_);
    directory_ = std::move(other.directory_);
    handle_ = std::exchange(other.handle_, nullptr);
    entries_ = std::move(other.entries_);
  }
  return *this;
}

StepLibrary::~StepLibrary() {
  if (handle_)
    ::dlclose(handle_);
}

Expected<QLoRAStepEntryFn> StepLibrary::entry(const std::string &role) const {
  auto found = entries_.find(role);
  if (found == entries_.end())
    return makeError("the compiled step has no '{}' entry point", role);
  return found->second;
}

Status StepLibrary::call(const std::string &role,
                         QLoRAStepContext &context) const {
  Expected<QLoRAStepEntryFn> function = entry(role);
  if (!function)
    return function.error();
  char error[1024] = {0};
  context.error = error;
  context.error_capacity = sizeof error;
  int code = (*function)(&context);
  context.error = nullptr;
  context.error_capacity = 0;
  if (code != 0)
    return Error(error[0] ? std::string(error)
                          : role + " failed without a message");
  return Status::ok();
}

} // namespace qlora
