//===- StepKernels.cu - The small kernels of a compiled cuda step -----------===//
//
// Memory-bound and simple: grid-stride loops over 16-byte vectors where the
// pointers allow (arena buffers are 256-byte aligned), scalars for the
// rest. The loss follows runtime/cpu/CrossEntropy.cpp in fp32 (lse per row,
// the row loss formed in fp64), one block per row.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/StepKernels.h"

#include "runtime/cuda/Bf16.cuh"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/GridStride.h"
#include "runtime/cuda/LossKernels.cuh"
#include "runtime/cuda/Workspaces.h"
#include "runtime/step/Dropout.h"
#include "runtime/step/StepStatus.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>

namespace qlora::cuda {
namespace {

using detail::bf16ToFloat;
using detail::floatToBf16;
using detail::pack8;
using detail::unpack8;

constexpr int kThreads = 256;

using detail::aligned16;

unsigned blocksFor(int64_t items) {
  return detail::gridStrideBlocks(items, kThreads);
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

enum class BinaryOp { Add, Mul };

template <BinaryOp kOp> __device__ __forceinline__ float apply(float a, float b) {
  if constexpr (kOp == BinaryOp::Add)
    return a + b;
  return a * b;
}

/// No __restrict__: out may alias a or b; each element is read, then
/// written, by one thread.
template <BinaryOp kOp>
__global__ void __launch_bounds__(kThreads)
    binaryF32Kernel(const float *a, const float *b, int64_t n, int64_t vectors,
                    float *out) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  const int64_t first = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (int64_t k = first; k < vectors; k += stride) {
    float4 x = reinterpret_cast<const float4 *>(a)[k];
    float4 y = reinterpret_cast<const float4 *>(b)[k];
    reinterpret_cast<float4 *>(out)[k] =
        make_float4(apply<kOp>(x.x, y.x), apply<kOp>(x.y, y.y),
                    apply<kOp>(x.z, y.z), apply<kOp>(x.w, y.w));
  }
  for (int64_t i = vectors * 4 + first; i < n; i += stride)
    out[i] = apply<kOp>(a[i], b[i]);
}

__global__ void __launch_bounds__(kThreads)
    addBf16Kernel(const uint16_t *a, const uint16_t *b, int64_t n,
                  int64_t vectors, uint16_t *out) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  const int64_t first = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (int64_t k = first; k < vectors; k += stride) {
    float x[8], y[8];
    unpack8(reinterpret_cast<const uint4 *>(a)[k], x);
    unpack8(reinterpret_cast<const uint4 *>(b)[k], y);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      x[j] += y[j];
    reinterpret_cast<uint4 *>(out)[k] = pack8(x);
  }
  for (int64_t i = vectors * 8 + first; i < n; i += stride)
    out[i] = floatToBf16(bf16ToFloat(a[i]) + bf16ToFloat(b[i]));
}

__global__ void __launch_bounds__(kThreads)
    mulScalarF32Kernel(const float *x, const float *__restrict__ s, int64_t n,
                       float *out) {
  const float factor = __ldg(s);
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += stride)
    out[i] = x[i] * factor;
}

__global__ void __launch_bounds__(kThreads)
    fillF32Kernel(float *__restrict__ out, int64_t n, float value) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += stride)
    out[i] = value;
}

//===----------------------------------------------------------------------===//
// Embedding and dropout
//===----------------------------------------------------------------------===//

/// One block per token: its row copied in 16-byte vectors when `vectorize`.
__global__ void __launch_bounds__(kThreads)
    embeddingKernel(const uint16_t *__restrict__ table,
                    const int32_t *__restrict__ ids, int64_t hidden,
                    int64_t vocab, bool vectorize,
                    int32_t *__restrict__ status, uint16_t *__restrict__ out) {
  const int64_t token = blockIdx.x;
  const int32_t id = __ldg(ids + token);
  uint16_t *row = out + token * hidden;
  if (id < 0 || id >= vocab) {
    for (int64_t j = threadIdx.x; j < hidden; j += kThreads)
      row[j] = 0;
    if (threadIdx.x == 0 && status)
      atomicMin(status + step_status::kBadTokenPosition, int32_t(token));
    return;
  }
  const uint16_t *source = table + int64_t(id) * hidden;
  if (vectorize) {
    for (int64_t k = threadIdx.x; k < hidden / 8; k += kThreads)
      reinterpret_cast<uint4 *>(row)[k] =
          __ldg(reinterpret_cast<const uint4 *>(source) + k);
    return;
  }
  for (int64_t j = threadIdx.x; j < hidden; j += kThreads)
    row[j] = source[j];
}

/// Each thread draws one Philox block: 4 consecutive elements.
__global__ void __launch_bounds__(kThreads)
    dropoutKernel(const uint16_t *x, int64_t n, float p,
                  const int32_t *__restrict__ seed, uint32_t dropoutStream,
                  uint16_t *out) {
  const uint32_t key = uint32_t(__ldg(seed));
  const float keep = 1.0f / (1.0f - p);
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t group = int64_t(blockIdx.x) * kThreads + threadIdx.x;
       4 * group < n; group += stride) {
    for (int64_t i = 4 * group; i < min(n, 4 * group + 4); ++i)
      out[i] = dropout::dropped(key, dropoutStream, uint64_t(i), p)
                   ? uint16_t(0)
                   : floatToBf16(bf16ToFloat(x[i]) * keep);
  }
}

//===----------------------------------------------------------------------===//
// The loss
//===----------------------------------------------------------------------===//

constexpr int kLabelThreads = 1024;
constexpr int kRowThreads = 256;

/// One block: labels shifted within each row, the count of counted labels,
/// and the first invalid label's position recorded.
__global__ void __launch_bounds__(kLabelThreads)
    shiftLabelsKernel(const int32_t *__restrict__ labels, int64_t rows,
                      int64_t seq, int64_t vocab, int32_t ignoreIndex,
                      int32_t *__restrict__ shifted, int32_t *__restrict__ count,
                      int32_t *__restrict__ status) {
  __shared__ int counts[kLabelThreads / 32];
  int local = 0;
  for (int64_t r = threadIdx.x; r < rows; r += kLabelThreads) {
    int32_t label = (r % seq) + 1 < seq ? __ldg(labels + r + 1) : ignoreIndex;
    if (label != ignoreIndex && (label < 0 || label >= vocab)) {
      if (status)
        atomicMin(status + step_status::kBadLabelPosition, int32_t(r));
      label = ignoreIndex;
    }
    shifted[r] = label;
    local += label != ignoreIndex;
  }
  for (int offset = 16; offset > 0; offset /= 2)
    local += __shfl_xor_sync(0xffffffffu, local, offset);
  if (threadIdx.x % 32 == 0)
    counts[threadIdx.x / 32] = local;
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0;
    for (int w = 0; w < kLabelThreads / 32; ++w)
      total += counts[w];
    *count = total;
  }
}

using detail::combine;
using detail::onlineAdd;

/// One block per row: the row's lse and loss, and with `dlogits` its
/// gradient. No __restrict__ on logits / dlogits: they may alias (each
/// element is read in pass 1 before the barrier, then read and written by
/// one thread).
__global__ void __launch_bounds__(kRowThreads)
    crossEntropyRowKernel(const uint16_t *logits, int64_t vocab,
                          int32_t ignoreIndex,
                          const int32_t *__restrict__ shifted,
                          const int32_t *__restrict__ count,
                          const float *__restrict__ dloss, uint16_t *dlogits,
                          float *__restrict__ rowLoss) {
  __shared__ float warpMax[kRowThreads / 32], warpSum[kRowThreads / 32];
  __shared__ float rowLse, rowWeight;
  const int64_t row = blockIdx.x;
  const uint16_t *in = logits + row * vocab;
  const int32_t label = __ldg(shifted + row);
  const int counted = __ldg(count);
  if (label == ignoreIndex || counted == 0) { // shifted labels are valid
    if (dlogits)
      for (int64_t j = threadIdx.x; j < vocab; j += kRowThreads)
        dlogits[row * vocab + j] = 0;
    if (threadIdx.x == 0)
      rowLoss[row] = 0.0f;
    return;
  }
  float m = -INFINITY, s = 0.0f;
  for (int64_t j = threadIdx.x; j < vocab; j += kRowThreads)
    onlineAdd(bf16ToFloat(in[j]), m, s);
  for (int offset = 16; offset > 0; offset /= 2)
    combine(m, s, __shfl_xor_sync(0xffffffffu, m, offset),
            __shfl_xor_sync(0xffffffffu, s, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    warpMax[warp] = m;
    warpSum[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    m = lane < kRowThreads / 32 ? warpMax[lane] : -INFINITY;
    s = lane < kRowThreads / 32 ? warpSum[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2)
      combine(m, s, __shfl_xor_sync(0xffffffffu, m, offset),
              __shfl_xor_sync(0xffffffffu, s, offset));
    if (lane == 0) {
      // The CPU's lse = max + log(sum) and loss = lse - logit, in fp64.
      double lse = double(m) + log(double(s));
      rowLoss[row] = float(lse - double(bf16ToFloat(in[label])));
      rowLse = float(lse);
      rowWeight = dloss ? float(double(*dloss) / double(counted)) : 0.0f;
    }
  }
  __syncthreads();
  if (!dlogits)
    return;
  const float lse = rowLse, weight = rowWeight;
  uint16_t *out = dlogits + row * vocab;
  for (int64_t j = threadIdx.x; j < vocab; j += kRowThreads) {
    float g = expf(bf16ToFloat(in[j]) - lse) * weight;
    out[j] = floatToBf16(j == label ? g - weight : g);
  }
}


} // namespace

Status addF32(const float *a, const float *b, int64_t n, float *out,
              cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  int64_t vectors = aligned16({a, b, out}) ? n / 4 : 0;
  binaryF32Kernel<BinaryOp::Add>
      <<<blocksFor(vectors ? vectors : n), kThreads, 0, stream>>>(a, b, n,
                                                                  vectors, out);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status mulF32(const float *a, const float *b, int64_t n, float *out,
              cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  int64_t vectors = aligned16({a, b, out}) ? n / 4 : 0;
  binaryF32Kernel<BinaryOp::Mul>
      <<<blocksFor(vectors ? vectors : n), kThreads, 0, stream>>>(a, b, n,
                                                                  vectors, out);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status addBf16(const uint16_t *a, const uint16_t *b, int64_t n, uint16_t *out,
               cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  int64_t vectors = aligned16({a, b, out}) ? n / 8 : 0;
  addBf16Kernel<<<blocksFor(vectors ? vectors : n), kThreads, 0, stream>>>(
      a, b, n, vectors, out);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status mulScalarF32(const float *x, const float *s, int64_t n, float *out,
                    cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  mulScalarF32Kernel<<<blocksFor(n), kThreads, 0, stream>>>(x, s, n, out);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status fillF32(float *out, int64_t n, float value, cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  fillF32Kernel<<<blocksFor(n), kThreads, 0, stream>>>(out, n, value);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status embeddingBf16(const uint16_t *table, const int32_t *ids, int64_t tokens,
                     int64_t hidden, int64_t vocab, int32_t *status,
                     uint16_t *out, cudaStream_t stream) {
  if (tokens <= 0)
    return Status::ok();
  if (tokens > INT32_MAX)
    return makeError("embedding: expects fewer than 2^31 tokens, got {}",
                     tokens);
  bool vectorize = hidden % 8 == 0 && aligned16({table, out});
  embeddingKernel<<<unsigned(tokens), kThreads, 0, stream>>>(
      table, ids, hidden, vocab, vectorize, status, out);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status dropoutBf16(const uint16_t *x, int64_t n, float p, const int32_t *seed,
                   uint32_t dropoutStream, uint16_t *out, cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  if (!(p >= 0.0f && p < 1.0f))
    return makeError("dropout: expects p in [0, 1), got {}", p);
  dropoutKernel<<<blocksFor((n + 3) / 4), kThreads, 0, stream>>>(
      x, n, p, seed, dropoutStream, out);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

namespace {

Status checkLossRows(int64_t rows, int64_t vocab) {
  if (rows <= 0 || rows > INT32_MAX || vocab <= 0)
    return makeError("crossEntropy: expects 0 < rows < 2^31 and a positive "
                     "vocabulary, got rows = {}, vocab = {}",
                     rows, vocab);
  return Status::ok();
}

/// The workspace's parts (CrossEntropyWorkspace) for `rows` rows in all.
struct LossParts {
  int32_t *shifted;
  float *rowLoss;
  int32_t *count;
};

LossParts lossParts(void *workspace, int64_t rows) {
  CrossEntropyWorkspace layout = CrossEntropyWorkspace::forRows(rows);
  auto *base = static_cast<uint8_t *>(workspace);
  return {reinterpret_cast<int32_t *>(base + layout.shiftedLabels),
          reinterpret_cast<float *>(base + layout.rowLoss),
          reinterpret_cast<int32_t *>(base + layout.count)};
}

} // namespace

Status crossEntropyLabels(const int32_t *labels, int64_t batch, int64_t seq,
                          int64_t vocab, int32_t ignoreIndex, void *workspace,
                          int32_t *status, cudaStream_t stream) {
  const int64_t rows = batch * seq;
  QLORA_RETURN_IF_ERROR(checkLossRows(rows, vocab));
  LossParts parts = lossParts(workspace, rows);
  shiftLabelsKernel<<<1, kLabelThreads, 0, stream>>>(
      labels, rows, seq, vocab, ignoreIndex, parts.shifted, parts.count,
      status);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status crossEntropyRows(const uint16_t *logits, int64_t first, int64_t rows,
                        int64_t totalRows, int64_t vocab, int32_t ignoreIndex,
                        void *workspace, const float *dloss,
                        uint16_t *dlogits, cudaStream_t stream) {
  QLORA_RETURN_IF_ERROR(checkLossRows(totalRows, vocab));
  if (first < 0 || rows <= 0 || first + rows > totalRows)
    return makeError("crossEntropy: rows [{}, {}) outside the {} rows",
                     first, first + rows, totalRows);
  if (dlogits && !dloss)
    return makeError("crossEntropy: the gradient needs dloss");
  LossParts parts = lossParts(workspace, totalRows);
  crossEntropyRowKernel<<<unsigned(rows), kRowThreads, 0, stream>>>(
      logits, vocab, ignoreIndex, parts.shifted + first, parts.count, dloss,
      dlogits, parts.rowLoss + first);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status crossEntropyMean(void *workspace, int64_t rows, float *loss,
                        cudaStream_t stream) {
  QLORA_RETURN_IF_ERROR(checkLossRows(rows, 1));
  LossParts parts = lossParts(workspace, rows);
  detail::meanLossKernel<<<1, detail::kMeanLossThreads, 0, stream>>>(
      parts.rowLoss, rows, parts.count, loss);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status crossEntropyBf16(const uint16_t *logits, const int32_t *labels,
                        int64_t batch, int64_t seq, int64_t vocab,
                        int32_t ignoreIndex, void *workspace, int32_t *status,
                        float *loss, const float *dloss, uint16_t *dlogits,
                        cudaStream_t stream) {
  const int64_t rows = batch * seq;
  if (dlogits && !dloss)
    return makeError("crossEntropy: the gradient needs dloss");
  QLORA_RETURN_IF_ERROR(crossEntropyLabels(labels, batch, seq, vocab,
                                           ignoreIndex, workspace, status,
                                           stream));
  QLORA_RETURN_IF_ERROR(crossEntropyRows(logits, 0, rows, rows, vocab,
                                         ignoreIndex, workspace, dloss,
                                         dlogits, stream));
  return loss ? crossEntropyMean(workspace, rows, loss, stream)
              : Status::ok();
}

} // namespace qlora::cuda
