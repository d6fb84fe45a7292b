//===- CudnnLibrary.h - cuDNN's backend API, loaded at run time -------------===//
//
// The runtime never links cuDNN: a GPU host may lack it (it comes with
// PyTorch's wheels as nvidia-cudnn-cu13, or with a cuDNN install), and the
// built-in kernels serve every shape without it. cudnnLibrary() dlopens
// libcudnn.so.9 once (QLORA_CUDNN_LIBRARY names another file) and resolves
// the few backend-API entry points the fused attention uses. The types and
// enums come from cuDNN's own headers, found at configure time.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cudnn_graph.h>

#include <string>

namespace qlora::cuda {

/// The entry points of a loaded cuDNN, or why none is loaded.
struct CudnnLibrary {
  bool loaded = false;
  std::string reason;  ///< why not loaded
  std::string path;    ///< the file dlopen'ed
  size_t version = 0;  ///< cudnnGetVersion(), e.g. 91900

  decltype(&::cudnnGetVersion) getVersion = nullptr;
  decltype(&::cudnnGetErrorString) getErrorString = nullptr;
  decltype(&::cudnnGetLastErrorString) getLastErrorString = nullptr;
  decltype(&::cudnnCreate) create = nullptr;
  decltype(&::cudnnSetStream) setStream = nullptr;
  decltype(&::cudnnBackendCreateDescriptor) createDescriptor = nullptr;
  decltype(&::cudnnBackendDestroyDescriptor) destroyDescriptor = nullptr;
  decltype(&::cudnnBackendSetAttribute) setAttribute = nullptr;
  decltype(&::cudnnBackendGetAttribute) getAttribute = nullptr;
  decltype(&::cudnnBackendFinalize) finalize = nullptr;
  decltype(&::cudnnBackendExecute) execute = nullptr;

  /// "call: status name: cuDNN's last error message" for a failed call.
  std::string describe(const char *call, cudnnStatus_t status) const;
};

/// The process's cuDNN, loaded on first use (thread-safe).
const CudnnLibrary &cudnnLibrary();

} // namespace qlora::cuda
