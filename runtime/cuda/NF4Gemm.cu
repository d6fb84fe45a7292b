//===- NF4Gemm.cu - Large-M NF4 products: dequantize, then tensor cores -----===//
//
// For large M the product is compute-bound, and a fast dequantization into a
// reused bf16 scratch (a few microseconds at memory bandwidth) followed by
// cuBLAS's tensor-core GEMM costs a few percent over bf16 cuBLAS. Row-major
// tensors are passed to column-major cuBLAS as their transposes.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Kernels.h"

#include <cublas_v2.h>

namespace qlora::cuda {

Status nf4MatmulDequantGemm(cublasHandle_t blas, const uint16_t *x, int64_t M,
                            const NF4DeviceWeight &weight, uint16_t *scratch,
                            uint16_t *y, cudaStream_t stream) {
  QLORA_RETURN_IF_ERROR(dequantizeNF4(weight, scratch, stream));
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas, stream));
  const float alpha = 1.0f, beta = 0.0f;
  const int N = int(weight.rows), K = int(weight.cols);
  // y^T [N, M] = W [N, K] (stored as col-major K x N, transposed) · x^T.
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      blas, CUBLAS_OP_T, CUBLAS_OP_N, N, int(M), K, &alpha, scratch,
      CUDA_R_16BF, K, x, CUDA_R_16BF, K, &beta, y, CUDA_R_16BF, N,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::ok();
}

Status nf4MatmulGradInput(cublasHandle_t blas, const uint16_t *dy, int64_t M,
                          const NF4DeviceWeight &weight, uint16_t *scratch,
                          uint16_t *dx, cudaStream_t stream) {
  QLORA_RETURN_IF_ERROR(dequantizeNF4(weight, scratch, stream));
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas, stream));
  const float alpha = 1.0f, beta = 0.0f;
  const int N = int(weight.rows), K = int(weight.cols);
  // dX^T [K, M] = W^T [K, N] (col-major K x N as stored) · dY^T [N, M].
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      blas, CUBLAS_OP_N, CUBLAS_OP_N, K, int(M), N, &alpha, scratch,
      CUDA_R_16BF, K, dy, CUDA_R_16BF, N, &beta, dx, CUDA_R_16BF, K,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::ok();
}

} // namespace qlora::cuda
