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
  std::string path = dir + "/" + library.manifest_.library;
  library.handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library.handle_)
    return makeError("cannot load the compiled step {}: {}", path,
                     ::dlerror());
  for (const auto &[role, symbol] : library.manifest_.entryPoints) {
    void *address = ::dlsym(library.handle_, symbol.c_str());
    if (!address)
      return makeError("{}: missing entry point '{}' ({})", path, symbol,
                       role);
    library.entries_[role] = reinterpret_cast<StepEntryPoint>(address);
  }
  return library;
}

StepLibrary::StepLibrary(StepLibrary &&other) noexcept
    : manifest_(std::move(other.manifest_)),
      handle_(std::exchange(other.handle_, nullptr)),
      entries_(std::move(other.entries_)) {}

StepLibrary &StepLibrary::operator=(StepLibrary &&other) noexcept {
  if (this != &other) {
    if (handle_)
      ::dlclose(handle_);
    manifest_ = std::move(other.manifest_);
    handle_ = std::exchange(other.handle_, nullptr);
    entries_ = std::move(other.entries_);
  }
  return *this;
}

StepLibrary::~StepLibrary() {
  if (handle_)
    ::dlclose(handle_);
}

Status StepLibrary::call(const std::string &role, uint8_t *arena) const {
  auto entry = entries_.find(role);
  if (entry == entries_.end())
    return makeError("the compiled step has no '{}' entry point", role);
  char error[1024] = {0};
  if (entry->second(arena, error, sizeof error) != 0)
    return Error(error[0] ? std::string(error)
                          : role + " failed without a message");
  return Status::ok();
}

} // namespace qlora
