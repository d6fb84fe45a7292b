//===- LmHeadLoss.cu - The causal-LM head and its loss, in row chunks -------===//
#include "runtime/cuda/LmHeadLoss.h"

#include "runtime/cuda/Bf16.cuh"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/TrainingKernels.h"

#include <cublas_v2.h>

#include <vector>

namespace qlora::cuda {
namespace {

constexpr int kThreads = 256;

/// Counts the labels that are not ignoreIndex in each chunk of chunkRows.
__global__ void countChunksKernel(const int32_t *__restrict__ labels,
                                  int64_t rows, int64_t chunkRows,
                                  int32_t ignoreIndex,
                                  int32_t *__restrict__ counts) {
  int64_t chunk = blockIdx.x;
  int64_t begin = chunk * chunkRows;
  int64_t end = min(rows, begin + chunkRows);
  int local = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    local += labels[i] != ignoreIndex;
  for (int offset = 16; offset > 0; offset /= 2)
    local += __shfl_xor_sync(0xffffffffu, local, offset);
  __shared__ int warps[kThreads / 32];
  if (threadIdx.x % 32 == 0)
    warps[threadIdx.x / 32] = local;
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0;
    for (int w = 0; w < kThreads / 32; ++w)
      total += warps[w];
    counts[chunk] = total;
  }
}

/// fp32 to bf16, 8 values a thread.
__global__ void toBf16Kernel(const float *__restrict__ in, int64_t n,
                             uint16_t *__restrict__ out) {
  for (int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x);
       i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = detail::floatToBf16(in[i]);
}

/// The workspace, carved from one allocation.
struct Scratch {
  float *logits;      // [chunkRows, vocab]
  uint16_t *dlogits;  // [chunkRows, vocab] bf16
  float *rowLoss;     // [chunkRows]
  float *chunkLoss;   // [chunks]
  int32_t *counts;    // [chunks]
  int32_t *status;    // [chunks, kCrossEntropyStatusWords]
};

size_t alignUp(size_t bytes) { return (bytes + 255) / 256 * 256; }

Scratch carve(void *base, int64_t rows, int64_t vocab, int64_t chunkRows,
              size_t *total = nullptr) {
  int64_t chunks = (rows + chunkRows - 1) / chunkRows;
  char *cursor = static_cast<char *>(base);
  Scratch scratch;
  auto take = [&](size_t bytes) {
    char *at = cursor;
    cursor += alignUp(bytes);
    return at;
  };
  scratch.logits = reinterpret_cast<float *>(take(4 * chunkRows * vocab));
  scratch.dlogits = reinterpret_cast<uint16_t *>(take(2 * chunkRows * vocab));
  scratch.rowLoss = reinterpret_cast<float *>(take(4 * chunkRows));
  scratch.chunkLoss = reinterpret_cast<float *>(take(4 * chunks));
  scratch.counts = reinterpret_cast<int32_t *>(take(4 * chunks));
  scratch.status = reinterpret_cast<int32_t *>(
      take(4 * kCrossEntropyStatusWords * chunks));
  if (total)
    *total = size_t(cursor - static_cast<char *>(base));
  return scratch;
}

} // namespace

size_t lmHeadLossScratchBytes(int64_t rows, int64_t vocab, int64_t chunkRows) {
  size_t total = 0;
  carve(nullptr, rows, vocab, chunkRows, &total);
  return total;
}

Expected<double> lmHeadLoss(cublasHandle_t blas, const uint16_t *x,
                            const uint16_t *weight, const int32_t *labels,
                            int64_t rows, int64_t hidden, int64_t vocab,
                            int32_t ignoreIndex, int64_t chunkRows,
                            void *scratchBase, uint16_t *dx,
                            cudaStream_t stream) {
  if (rows <= 0 || hidden <= 0 || vocab <= 0 || chunkRows <= 0)
    return makeError("lmHeadLoss: expects positive sizes, got rows {}, "
                     "hidden {}, vocab {}, chunk {}",
                     rows, hidden, vocab, chunkRows);
  int64_t chunks = (rows + chunkRows - 1) / chunkRows;
  Scratch scratch = carve(scratchBase, rows, vocab, chunkRows);
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas, stream));

  // The mean is over all counted rows: each chunk's gradient is scaled by
  // 1 / total, so the counts come first.
  countChunksKernel<<<chunks, kThreads, 0, stream>>>(labels, rows, chunkRows,
                                                     ignoreIndex,
                                                     scratch.counts);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  std::vector<int32_t> counts(chunks);
  QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(counts.data(), scratch.counts,
                                             4 * chunks, cudaMemcpyDeviceToHost,
                                             stream));
  QLORA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  int64_t total = 0;
  for (int32_t count : counts)
    total += count;

  const float one = 1.0f, zero = 0.0f;
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    int64_t first = chunk * chunkRows;
    int64_t n = std::min(chunkRows, rows - first);
    // logitsᵀ [vocab, n] = W [vocab, hidden] · xᵀ, fp32 out.
    QLORA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
        blas, CUBLAS_OP_T, CUBLAS_OP_N, int(vocab), int(n), int(hidden), &one,
        weight, CUDA_R_16BF, int(hidden), x + first * hidden, CUDA_R_16BF,
        int(hidden), &zero, scratch.logits, CUDA_R_32F, int(vocab),
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    // The kernel divides by the chunk's count; scale dloss so that the
    // gradient is the one of the mean over all chunks.
    float dloss = total > 0 ? float(double(counts[chunk]) / double(total))
                            : 0.0f;
    QLORA_RETURN_IF_ERROR(crossEntropyAsync(
        scratch.logits, labels + first, n, vocab, ignoreIndex, dloss,
        scratch.logits, scratch.rowLoss, scratch.chunkLoss + chunk,
        scratch.status + chunk * kCrossEntropyStatusWords, stream));
    int64_t elements = n * vocab;
    int blocks = int(std::min<int64_t>((elements + kThreads - 1) / kThreads,
                                       65536));
    toBf16Kernel<<<blocks, kThreads, 0, stream>>>(scratch.logits, elements,
                                                  scratch.dlogits);
    QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    // dxᵀ [hidden, n] = Wᵀ [hidden, vocab] · dlogitsᵀ [vocab, n].
    QLORA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
        blas, CUBLAS_OP_N, CUBLAS_OP_N, int(hidden), int(n), int(vocab), &one,
        weight, CUDA_R_16BF, int(hidden), scratch.dlogits, CUDA_R_16BF,
        int(vocab), &zero, dx + first * hidden, CUDA_R_16BF, int(hidden),
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  // An invalid label anywhere is an error; each chunk kept its own status.
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    Expected<int64_t> checked = checkCrossEntropy(
        scratch.status + chunk * kCrossEntropyStatusWords, vocab, ignoreIndex,
        stream);
    if (!checked)
      return checked.error().withContext(
          "lmHeadLoss, chunk of rows from " + std::to_string(chunk * chunkRows));
  }
  std::vector<float> losses(chunks);
  QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(losses.data(), scratch.chunkLoss,
                                             4 * chunks, cudaMemcpyDeviceToHost,
                                             stream));
  QLORA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  if (total == 0)
    return 0.0;
  double sum = 0.0;
  for (int64_t chunk = 0; chunk < chunks; ++chunk)
    sum += double(losses[chunk]) * double(counts[chunk]);
  return sum / double(total);
}

} // namespace qlora::cuda
