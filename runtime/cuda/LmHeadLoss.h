//===- LmHeadLoss.h - The causal-LM head and its loss, in row chunks --------===//
//
// The training step's lm_head product fused with its loss and the loss's
// input gradient, so that the batch's logits are never held at once (at
// 8192 tokens they are 500 MiB in bf16 with Llama-2's 32,000 words, 2 GiB
// with Llama-3's 128,256). Rows go through in chunks of
// lmHeadChunkRows(): the chunk's bf16 logits (cuBLAS, rounded as the
// unfused step's qlora.linear rounds them), their loss and gradient in
// place (crossEntropyRows, as crossEntropyBf16 computes them), and the
// chunk's dx = dlogits · W. Asynchronous like every step kernel: the count
// of counted labels stays on the device.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <cuda_runtime_api.h>

typedef struct cublasContext *cublasHandle_t;

namespace qlora::cuda {

/// For x [batch * seq, hidden] and the head W [vocab, hidden] (bf16), with
/// labels [batch, seq] shifted within each row as crossEntropyBf16 shifts
/// them: *loss (=) the mean cross-entropy over counted rows, dx (=) its
/// gradient times *dloss, and the first invalid label's position in
/// status[kBadLabelPosition] (`status` may be null). `lossWorkspace` is
/// CrossEntropyWorkspace::forRows(batch * seq).bytes and `chunkLogits`
/// chunkRows * vocab bf16 (Workspaces.h), both device memory.
Status lmHeadLossChunked(cublasHandle_t blas, const uint16_t *x,
                         const uint16_t *weight, const int32_t *labels,
                         int64_t batch, int64_t seq, int64_t hidden,
                         int64_t vocab, int32_t ignoreIndex, int64_t chunkRows,
                         void *lossWorkspace, uint16_t *chunkLogits,
                         int32_t *status, float *loss, const float *dloss,
                         uint16_t *dx, cudaStream_t stream);

} // namespace qlora::cuda
