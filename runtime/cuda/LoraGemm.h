//===- LoraGemm.h - A LoRA branch and its gradients on the GPU --------------===//
//
// PEFT's branch y = scale · (x Aᵀ) Bᵀ on bf16 activations and bf16 copies of
// the adapters (A [r, K], B [N, r]), as small cuBLAS products with fp32
// accumulation; the adapter gradients come out in fp32, for the fp32 master
// weights. The base product's own branch (lora_linear) runs in the epilogue
// of nf4MatmulDequantGemm instead.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <cuda_runtime_api.h>

typedef struct cublasContext *cublasHandle_t;

namespace qlora::cuda {

/// xa (=) = x · Aᵀ [M, r]; y (=) = scale · xa · Bᵀ, or y += that when
/// `accumulate`, rounded once.
Status loraForward(cublasHandle_t blas, const uint16_t *x, const uint16_t *a,
                   const uint16_t *b, int64_t M, int64_t N, int64_t K,
                   int64_t r, float scale, bool accumulate, uint16_t *xa,
                   uint16_t *y, cudaStream_t stream);

/// The branch's gradients for upstream dy [M, N], written (not
/// accumulated): with xa = x · Aᵀ recomputed and t = dy · B [M, r],
/// dB (=) = scale · dyᵀ · xa and dA (=) = scale · tᵀ · x (fp32), dx (=) =
/// scale · t · A (bf16). `xa` and `t` are scratch of M * r bf16.
Status loraBackward(cublasHandle_t blas, const uint16_t *x, const uint16_t *a,
                    const uint16_t *b, const uint16_t *dy, int64_t M,
                    int64_t N, int64_t K, int64_t r, float scale, uint16_t *xa,
                    uint16_t *t, uint16_t *dx, float *dA, float *dB,
                    cudaStream_t stream);

} // namespace qlora::cuda
