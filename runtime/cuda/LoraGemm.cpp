//===- LoraGemm.cpp - A LoRA branch and its gradients on the GPU ------------===//
#include "runtime/cuda/LoraGemm.h"

#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/Gemm.h"

namespace qlora::cuda {

Status loraForward(cublasHandle_t blas, const uint16_t *x, const uint16_t *a,
                   const uint16_t *b, int64_t M, int64_t N, int64_t K,
                   int64_t r, float scale, bool accumulate, uint16_t *xa,
                   uint16_t *y, cudaStream_t stream) {
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas, stream));
  QLORA_RETURN_IF_ERROR(gemmBf16NT(blas, M, r, K, 1.0f, x, a, 0.0f, xa));
  return gemmBf16NT(blas, M, N, r, scale, xa, b, accumulate ? 1.0f : 0.0f, y);
}

Status loraBackward(cublasHandle_t blas, const uint16_t *x, const uint16_t *a,
                    const uint16_t *b, const uint16_t *dy, int64_t M,
                    int64_t N, int64_t K, int64_t r, float scale, uint16_t *xa,
                    uint16_t *t, uint16_t *dx, float *dA, float *dB,
                    cudaStream_t stream) {
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas, stream));
  // xa = x Aᵀ again: M x r, cheaper to recompute than to keep.
  QLORA_RETURN_IF_ERROR(gemmBf16NT(blas, M, r, K, 1.0f, x, a, 0.0f, xa));
  QLORA_RETURN_IF_ERROR(gemmBf16NN(blas, M, r, N, 1.0f, dy, b, 0.0f, t));
  QLORA_RETURN_IF_ERROR(
      gemmBf16TNToF32(blas, N, r, M, scale, dy, xa, 0.0f, dB));
  QLORA_RETURN_IF_ERROR(gemmBf16TNToF32(blas, r, K, M, scale, t, x, 0.0f, dA));
  return gemmBf16NN(blas, M, K, r, scale, t, a, 0.0f, dx);
}

} // namespace qlora::cuda
