//===- CudnnLibrary.cpp - dlopen of cuDNN -----------------------------------===//
#include "runtime/cuda/CudnnLibrary.h"

#include <fmt/format.h>

#include <cstdlib>
#include <dlfcn.h>

namespace qlora::cuda {
namespace {

template <typename Function>
bool resolve(void *handle, const char *name, Function *out,
             std::string *missing) {
  *out = reinterpret_cast<Function>(dlsym(handle, name));
  if (!*out && missing->empty())
    *missing = name;
  return *out != nullptr;
}

CudnnLibrary load() {
  CudnnLibrary library;
  const char *chosen = std::getenv("QLORA_CUDNN_LIBRARY");
  library.path = chosen && *chosen ? chosen : "libcudnn.so.9";
  void *handle = dlopen(library.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = dlerror();
    library.reason = fmt::format("{} could not be loaded: {}", library.path,
                                 why ? why : "unknown error");
    return library;
  }
  std::string missing;
  resolve(handle, "cudnnGetVersion", &library.getVersion, &missing);
  resolve(handle, "cudnnGetErrorString", &library.getErrorString, &missing);
  resolve(handle, "cudnnGetLastErrorString", &library.getLastErrorString,
          &missing);
  resolve(handle, "cudnnCreate", &library.create, &missing);
  resolve(handle, "cudnnSetStream", &library.setStream, &missing);
  resolve(handle, "cudnnBackendCreateDescriptor", &library.createDescriptor,
          &missing);
  resolve(handle, "cudnnBackendDestroyDescriptor", &library.destroyDescriptor,
          &missing);
  resolve(handle, "cudnnBackendSetAttribute", &library.setAttribute, &missing);
  resolve(handle, "cudnnBackendGetAttribute", &library.getAttribute, &missing);
  resolve(handle, "cudnnBackendFinalize", &library.finalize, &missing);
  resolve(handle, "cudnnBackendExecute", &library.execute, &missing);
  if (!missing.empty()) {
    library.reason =
        fmt::format("{} lacks {}: not cuDNN 9's backend API", library.path,
                    missing);
    return library;
  }
  library.version = library.getVersion();
  // The SDPA graphs below need cuDNN 9 (the handle-less descriptors, the
  // non-multiple-of-64 sequences and the F16x16 dQ accumulator).
  if (library.version < 90000) {
    library.reason = fmt::format("{} is cuDNN {}, older than 9.0",
                                 library.path, library.version);
    return library;
  }
  library.loaded = true;
  // The handle stays open for the life of the process: plans built from it
  // are cached as long.
  return library;
}

} // namespace

std::string CudnnLibrary::describe(const char *call,
                                   cudnnStatus_t status) const {
  char last[1024] = {0};
  if (getLastErrorString)
    getLastErrorString(last, sizeof(last));
  return fmt::format("{} failed: {}{}{}", call,
                     getErrorString ? getErrorString(status) : "?",
                     last[0] ? ": " : "", last);
}

const CudnnLibrary &cudnnLibrary() {
  static const CudnnLibrary library = load();
  return library;
}

} // namespace qlora::cuda
