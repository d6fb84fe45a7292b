//===- Gemm.cpp - Row-major bf16 products through cuBLAS --------------------===//
#include "runtime/cuda/Gemm.h"

#include "runtime/cuda/CudaStatus.h"

namespace qlora::cuda {

Status gemmBf16NT(cublasHandle_t blas, int64_t M, int64_t N, int64_t K,
                  float alpha, const uint16_t *in, const uint16_t *w,
                  float beta, uint16_t *out) {
  // outᵀ [N, M] = w [N, K] · inᵀ [K, M].
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      blas, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &alpha, w,
      CUDA_R_16BF, int(K), in, CUDA_R_16BF, int(K), &beta, out, CUDA_R_16BF,
      int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::ok();
}

Status gemmBf16NN(cublasHandle_t blas, int64_t M, int64_t N, int64_t K,
                  float alpha, const uint16_t *in, const uint16_t *w,
                  float beta, uint16_t *out) {
  // outᵀ [N, M] = wᵀ [N, K] · inᵀ [K, M].
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      blas, CUBLAS_OP_N, CUBLAS_OP_N, int(N), int(M), int(K), &alpha, w,
      CUDA_R_16BF, int(N), in, CUDA_R_16BF, int(K), &beta, out, CUDA_R_16BF,
      int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::ok();
}

Status gemmBf16TNToF32(cublasHandle_t blas, int64_t M, int64_t N, int64_t K,
                       float alpha, const uint16_t *a, const uint16_t *b,
                       float beta, float *out) {
  // outᵀ [N, M] = bᵀ [N, K] · a [K, M].
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      blas, CUBLAS_OP_N, CUBLAS_OP_T, int(N), int(M), int(K), &alpha, b,
      CUDA_R_16BF, int(N), a, CUDA_R_16BF, int(M), &beta, out, CUDA_R_32F,
      int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::ok();
}

} // namespace qlora::cuda
