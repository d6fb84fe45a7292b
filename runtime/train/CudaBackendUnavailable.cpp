//===- CudaBackendUnavailable.cpp - A runtime built without CUDA ------------===//
#include "runtime/train/StepBackend.h"

namespace qlora {

Expected<std::unique_ptr<StepBackend>>
openCudaBackend(const StepLibrary &library) {
  return makeError("the step in {} targets cuda and this runtime was built "
                   "without CUDA (nvcc was not found when it was built)",
                   library.directory());
}

bool cudaBackendAvailable() { return false; }

} // namespace qlora
