//===- StepKernels.h - The small kernels of a compiled cuda step ------------===//
//
// Host entry points of the kernels a generated cuda step needs beside the
// library's big ones: elementwise arithmetic on the optimizer's fp32 tensors
// and on bf16 activations, the embedding gather, LoRA dropout, and the loss
// over bf16 logits (the optimizer's are in TrainingKernels.h). None of them
// synchronizes or allocates, so a step that calls them can be captured as a
// CUDA graph. Data errors go to the step's status words
// (runtime/step/StepStatus.h) with atomicMin. Kernels stay private to
// StepKernels.cu.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <cuda_runtime_api.h>

namespace qlora::cuda {

/// out = a + b over n fp32 values; out may alias a or b.
Status addF32(const float *a, const float *b, int64_t n, float *out,
              cudaStream_t stream);
/// out = bf16(float(a) + float(b)) over n bf16 values; out may alias.
Status addBf16(const uint16_t *a, const uint16_t *b, int64_t n, uint16_t *out,
               cudaStream_t stream);
/// out = a * b over n fp32 values.
Status mulF32(const float *a, const float *b, int64_t n, float *out,
              cudaStream_t stream);
/// out = x * (*s) over n fp32 values, the factor read on the device.
Status mulScalarF32(const float *x, const float *s, int64_t n, float *out,
                    cudaStream_t stream);
/// out[i] = value.
Status fillF32(float *out, int64_t n, float value, cudaStream_t stream);

/// out[t] = table[ids[t]] rows of `hidden` bf16 for `tokens` ids. An id
/// outside [0, vocab) gives a zero row and records its position in
/// status[kBadTokenPosition].
Status embeddingBf16(const uint16_t *table, const int32_t *ids, int64_t tokens,
                     int64_t hidden, int64_t vocab, int32_t *status,
                     uint16_t *out, cudaStream_t stream);

/// out = dropout(x) over n bf16 values: element i is dropped when
/// dropout::dropped(*seed, stream, i, p) (runtime/step/Dropout.h), kept ones
/// scaled by 1/(1-p) in fp32 and rounded once. out may alias x.
Status dropoutBf16(const uint16_t *x, int64_t n, float p, const int32_t *seed,
                   uint32_t dropoutStream, uint16_t *out, cudaStream_t stream);

/// The causal-LM loss over bf16 logits [batch * seq, vocab] with the labels
/// shifted inside (position t predicts labels[t + 1] of its row), computed
/// in fp32 as the cpu computes it:
///  * shifts the labels into `workspace` (CrossEntropyWorkspace of
///    Workspaces.h), counts those that are not ignoreIndex, and records the
///    first invalid one's position in status[kBadLabelPosition] when
///    `status` is not null;
///  * when `loss` is not null, *loss (=) the mean over counted rows of
///    lse - logit[label], summed in a fixed order (0 when none counts);
///  * when `dlogits` is not null, dlogits (=) (softmax - onehot) * (*dloss)
///    / count in bf16, zero rows where the label is ignored (dlogits may
///    alias logits).
Status crossEntropyBf16(const uint16_t *logits, const int32_t *labels,
                        int64_t batch, int64_t seq, int64_t vocab,
                        int32_t ignoreIndex, void *workspace, int32_t *status,
                        float *loss, const float *dloss, uint16_t *dlogits,
                        cudaStream_t stream);

/// crossEntropyBf16's three phases, for logits that come in row chunks
/// (lmHeadLossChunked): crossEntropyLabels shifts and counts the labels of
/// all batch * seq rows into the workspace (sized for all of them);
/// crossEntropyRows computes rows [first, first + rows) of `totalRows` from
/// those rows' logits (row `first` at `logits`), their losses and, with
/// `dlogits`, their gradient; crossEntropyMean writes the mean loss.
Status crossEntropyLabels(const int32_t *labels, int64_t batch, int64_t seq,
                          int64_t vocab, int32_t ignoreIndex, void *workspace,
                          int32_t *status, cudaStream_t stream);
Status crossEntropyRows(const uint16_t *logits, int64_t first, int64_t rows,
                        int64_t totalRows, int64_t vocab, int32_t ignoreIndex,
                        void *workspace, const float *dloss,
                        uint16_t *dlogits, cudaStream_t stream);
Status crossEntropyMean(void *workspace, int64_t rows, float *loss,
                        cudaStream_t stream);

} // namespace qlora::cuda
