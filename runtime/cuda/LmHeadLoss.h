//===- LmHeadLoss.h - The causal-LM head and its loss, in row chunks --------===//
//
// The lm_head product fused with cross-entropy, as the training step needs
// it: loss and dX for x [rows, hidden] and a bf16 head W [vocab, hidden],
// without materializing fp32 logits for the whole batch (at 8192 tokens and
// a 32000 vocabulary those would be 1 GiB). Rows go through in chunks: the
// chunk's fp32 logits (cuBLAS), the fused cross-entropy backward in place,
// and the chunk's dX = dlogits · W.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <cuda_runtime_api.h>

typedef struct cublasContext *cublasHandle_t;

namespace qlora::cuda {

/// Device workspace of lmHeadLoss, sized by lmHeadLossScratchBytes.
size_t lmHeadLossScratchBytes(int64_t rows, int64_t vocab, int64_t chunkRows);

/// Mean cross-entropy over rows whose (already shifted) label is not
/// ignoreIndex, and dx (=) its gradient for dloss = 1. Synchronizes
/// `stream` twice (label counts before, losses after). Errors name the first
/// invalid label.
Expected<double> lmHeadLoss(cublasHandle_t blas, const uint16_t *x,
                            const uint16_t *weight, const int32_t *labels,
                            int64_t rows, int64_t hidden, int64_t vocab,
                            int32_t ignoreIndex, int64_t chunkRows,
                            void *scratch, uint16_t *dx, cudaStream_t stream);

} // namespace qlora::cuda
