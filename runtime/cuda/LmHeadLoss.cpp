//===- LmHeadLoss.cpp - The causal-LM head and its loss, in row chunks ------===//
#include "runtime/cuda/LmHeadLoss.h"

#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/Gemm.h"
#include "runtime/cuda/StepKernels.h"

#include <algorithm>

namespace qlora::cuda {

Status lmHeadLossChunked(cublasHandle_t blas, const uint16_t *x,
                         const uint16_t *weight, const int32_t *labels,
                         int64_t batch, int64_t seq, int64_t hidden,
                         int64_t vocab, int32_t ignoreIndex, int64_t chunkRows,
                         void *lossWorkspace, uint16_t *chunkLogits,
                         int32_t *status, float *loss, const float *dloss,
                         uint16_t *dx, cudaStream_t stream) {
  const int64_t rows = batch * seq;
  if (rows <= 0 || hidden <= 0 || vocab <= 0 || chunkRows <= 0)
    return makeError("lmHeadLoss: expects positive sizes, got {} rows, "
                     "hidden {}, vocab {}, chunks of {} rows",
                     rows, hidden, vocab, chunkRows);
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas, stream));
  // Every chunk's gradient is divided by the count over all rows: the
  // labels are shifted and counted first.
  QLORA_RETURN_IF_ERROR(crossEntropyLabels(labels, batch, seq, vocab,
                                           ignoreIndex, lossWorkspace, status,
                                           stream));
  for (int64_t first = 0; first < rows; first += chunkRows) {
    const int64_t n = std::min(chunkRows, rows - first);
    QLORA_RETURN_IF_ERROR(gemmBf16NT(blas, n, vocab, hidden, 1.0f,
                                     x + first * hidden, weight, 0.0f,
                                     chunkLogits));
    QLORA_RETURN_IF_ERROR(crossEntropyRows(chunkLogits, first, n, rows, vocab,
                                           ignoreIndex, lossWorkspace, dloss,
                                           chunkLogits, stream));
    QLORA_RETURN_IF_ERROR(gemmBf16NN(blas, n, hidden, vocab, 1.0f,
                                     chunkLogits, weight, 0.0f,
                                     dx + first * hidden));
  }
  return crossEntropyMean(lossWorkspace, rows, loss, stream);
}

} // namespace qlora::cuda
