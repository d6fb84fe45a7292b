//===- Gemm.h - Row-major bf16 products through cuBLAS ----------------------===//
//
// The three product shapes the training kernels need, written once: cuBLAS
// is column-major, so each call below states the row-major product and
// passes cuBLAS its transposes. bf16 operands, fp32 accumulation; the
// caller has bound the handle to its stream.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>

typedef struct cublasContext *cublasHandle_t;

namespace qlora::cuda {

/// out[M, N] = alpha · in[M, K] · w[N, K]ᵀ + beta · out, bf16 out.
Status gemmBf16NT(cublasHandle_t blas, int64_t M, int64_t N, int64_t K,
                  float alpha, const uint16_t *in, const uint16_t *w,
                  float beta, uint16_t *out);

/// out[M, N] = alpha · in[M, K] · w[K, N] + beta · out, bf16 out.
Status gemmBf16NN(cublasHandle_t blas, int64_t M, int64_t N, int64_t K,
                  float alpha, const uint16_t *in, const uint16_t *w,
                  float beta, uint16_t *out);

/// out[M, N] = alpha · a[K, M]ᵀ · b[K, N] + beta · out, fp32 out: a weight
/// gradient summed over K rows.
Status gemmBf16TNToF32(cublasHandle_t blas, int64_t M, int64_t N, int64_t K,
                       float alpha, const uint16_t *a, const uint16_t *b,
                       float beta, float *out);

} // namespace qlora::cuda
