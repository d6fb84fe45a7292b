//===- CudaStatus.h - CUDA and cuBLAS errors as Status ----------------------===//
//
// One macro per library turns a failed call into an Error naming the call,
// the file and the line; a library never aborts.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace qlora::cuda {

inline Status cudaStatus(cudaError_t code, const char *call, const char *file,
                         int line) {
  if (code == cudaSuccess)
    return Status::ok();
  return makeError("{}:{}: {} failed: {} ({})", file, line, call,
                   cudaGetErrorString(code), cudaGetErrorName(code));
}

inline Status cublasStatus(cublasStatus_t code, const char *call,
                           const char *file, int line) {
  if (code == CUBLAS_STATUS_SUCCESS)
    return Status::ok();
  return makeError("{}:{}: {} failed: {}", file, line, call,
                   cublasGetStatusString(code));
}

} // namespace qlora::cuda

/// Returns the error of a failed CUDA runtime call from the enclosing
/// function (which returns Status or Expected<T>).
#define QLORA_CUDA_RETURN_IF_ERROR(call)                                       \
  QLORA_RETURN_IF_ERROR(                                                       \
      ::qlora::cuda::cudaStatus((call), #call, __FILE__, __LINE__))

/// The same for cuBLAS calls.
#define QLORA_CUBLAS_RETURN_IF_ERROR(call)                                     \
  QLORA_RETURN_IF_ERROR(                                                       \
      ::qlora::cuda::cublasStatus((call), #call, __FILE__, __LINE__))
