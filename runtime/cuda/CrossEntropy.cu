//===- CrossEntropy.cu - Fused causal-LM cross-entropy on the GPU -----------===//
//
// transformers' ForCausalLMLoss after the shift (torch cross_entropy, mean
// over labels that are not ignore_index) with its backward, on fp32 logits:
//  1. one block counts the counted rows and finds the first invalid label;
//  2. one block per row reads the row for an online max / sum of exp (the
//     lse), then writes dlogits = (softmax - onehot) * dloss / count, and
//     the row's loss;
//  3. one block averages the row losses in a fixed order (fp64;
//     LossKernels.cuh).
// When a row fits in shared memory (vocab 32000: 125 KiB), the first pass
// keeps it there and the logits are read once; otherwise the second pass
// reads them again. Nothing else of vocabulary size is materialized. Row
// sums are fp32 per thread (a few hundred terms) combined in a fixed tree,
// within fp32 rounding of the CPU's fp64 sums; the row loss itself is formed
// in fp64 as the CPU does.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/LossKernels.cuh"
#include "runtime/cuda/TrainingKernels.h"

#include <climits>
#include <cstdint>
#include <map>
#include <mutex>

namespace qlora::cuda {
namespace {

constexpr int kCountThreads = 1024;
/// Threads of a row block: the uncached kernel runs several blocks an SM;
/// the cached one holds a whole row in shared memory, so one block an SM,
/// and more threads with several loads in flight each keep DRAM busy.
constexpr int kRowThreads = 256;
constexpr int kCachedRowThreads = 1024;
constexpr int kCachedLoadsInFlight = 4;

//===----------------------------------------------------------------------===//
// Label count and check
//===----------------------------------------------------------------------===//

__global__ void __launch_bounds__(kCountThreads)
    countLabelsKernel(const int32_t *__restrict__ labels, int64_t rows,
                      int64_t vocab, int32_t ignoreIndex,
                      int32_t *__restrict__ status) {
  __shared__ int counts[kCountThreads / 32];
  __shared__ long long firstBad[kCountThreads / 32];
  int count = 0;
  long long bad = LLONG_MAX;
  for (int64_t r = threadIdx.x; r < rows; r += kCountThreads) {
    int32_t label = __ldg(labels + r);
    if (label == ignoreIndex)
      continue;
    if (label < 0 || label >= vocab)
      bad = min(bad, (long long)r);
    else
      ++count;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    count += __shfl_xor_sync(0xffffffffu, count, offset);
    bad = min(bad, __shfl_xor_sync(0xffffffffu, bad, offset));
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    counts[warp] = count;
    firstBad[warp] = bad;
  }
  __syncthreads();
  if (warp == 0) {
    count = counts[lane];
    bad = firstBad[lane];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      count += __shfl_xor_sync(0xffffffffu, count, offset);
      bad = min(bad, __shfl_xor_sync(0xffffffffu, bad, offset));
    }
    if (lane == 0) {
      status[0] = count;
      status[1] = bad == LLONG_MAX ? -1 : int32_t(bad);
      status[2] = bad == LLONG_MAX ? 0 : labels[bad];
      status[3] = 0;
    }
  }
}

//===----------------------------------------------------------------------===//
// The fused row kernel
//===----------------------------------------------------------------------===//

using detail::combine;
using detail::onlineAdd;
using detail::onlineAdd4;

/// No __restrict__ on logits / dlogits: they may alias. Every read of the
/// row (pass 1 and the label's logit) precedes the reduction's barriers, and
/// in pass 2 each element is read and then written by one thread.
/// kCached: pass 1 also stores the row in dynamic shared memory (vocab
/// floats: the float4 part first, then the scalar head and tail), and pass 2
/// reads it from there.
template <int kThreads, bool kCached>
__global__ void __launch_bounds__(kThreads)
    crossEntropyRowKernel(const float *logits, const int32_t *__restrict__ labels,
                          int64_t vocab, int32_t ignoreIndex, float dloss,
                          bool vectorize, const int32_t *__restrict__ status,
                          float *dlogits, float *__restrict__ rowLoss) {
  constexpr int kWarps = kThreads / 32;
  constexpr int kLoads = kCached ? kCachedLoadsInFlight : 1;
  __shared__ float warpMax[kWarps], warpSum[kWarps];
  __shared__ float labelLogit, rowLse, rowWeight;
  extern __shared__ float4 rowCache[];
  const int64_t row = blockIdx.x;
  const float *in = logits + row * vocab;
  float *out = dlogits + row * vocab;
  const int32_t label = __ldg(labels + row);
  const int count = __ldg(status);
  const bool counted =
      label != ignoreIndex && label >= 0 && label < vocab && count > 0;

  // A scalar head up to a 16-byte boundary, float4 vectors, a scalar tail;
  // logits and dlogits have the same alignment when `vectorize`.
  int64_t head = vocab, vectors = 0;
  if (vectorize) {
    int64_t misaligned = int64_t((reinterpret_cast<uintptr_t>(in) & 15u) / 4);
    head = misaligned == 0 ? 0 : min(int64_t(4) - misaligned, vocab);
    vectors = (vocab - head) / 4;
  }
  const int64_t tail = head + vectors * 4;
  // The cached row's scalars: head elements at [0, head), tail after them.
  float *cachedScalars = reinterpret_cast<float *>(rowCache + vectors);
  auto scalarSlot = [&](int64_t j) { return j < head ? j : head + (j - tail); };

  if (!counted) { // ignored (or invalid) rows: zero gradient, no loss
    for (int64_t j = threadIdx.x; j < head; j += kThreads)
      out[j] = 0.0f;
    for (int64_t k = threadIdx.x; k < vectors; k += kThreads)
      reinterpret_cast<float4 *>(out + head)[k] = make_float4(0, 0, 0, 0);
    for (int64_t j = tail + threadIdx.x; j < vocab; j += kThreads)
      out[j] = 0.0f;
    if (threadIdx.x == 0)
      rowLoss[row] = 0.0f;
    return;
  }

  // Pass 1: online max and sum of exp. Each thread visits its elements in
  // increasing order whatever kLoads is, so the sums do not depend on it.
  float m = -INFINITY, s = 0.0f;
  auto addScalar = [&](int64_t j) {
    float x = in[j];
    if constexpr (kCached)
      cachedScalars[scalarSlot(j)] = x;
    onlineAdd(x, m, s);
  };
  for (int64_t j = threadIdx.x; j < head; j += kThreads)
    addScalar(j);
  const float4 *inVectors = reinterpret_cast<const float4 *>(in + head);
  for (int64_t first = threadIdx.x; first < vectors;
       first += int64_t(kThreads) * kLoads) {
    float4 v[kLoads];
#pragma unroll
    for (int u = 0; u < kLoads; ++u)
      if (first + int64_t(u) * kThreads < vectors)
        v[u] = inVectors[first + int64_t(u) * kThreads];
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      int64_t k = first + int64_t(u) * kThreads;
      if (k >= vectors)
        break;
      if constexpr (kCached)
        rowCache[k] = v[u];
      onlineAdd4(v[u], m, s);
    }
  }
  for (int64_t j = tail + threadIdx.x; j < vocab; j += kThreads)
    addScalar(j);
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
    float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
    combine(m, s, m2, s2);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    warpMax[warp] = m;
    warpSum[warp] = s;
  }
  if (threadIdx.x == 0)
    labelLogit = in[label];
  __syncthreads();
  if (warp == 0) {
    m = lane < kWarps ? warpMax[lane] : -INFINITY;
    s = lane < kWarps ? warpSum[lane] : 0.0f;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
      float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
      combine(m, s, m2, s2);
    }
    if (lane == 0) {
      // The CPU's lse = max + log(sum) and loss = lse - logit, in fp64.
      double lse = double(m) + log(double(s));
      rowLoss[row] = float(lse - double(labelLogit));
      rowLse = float(lse);
      rowWeight = float(double(dloss) / double(count));
    }
  }
  __syncthreads();
  const float lse = rowLse, weight = rowWeight;

  // Pass 2: dlogits = exp(x - lse) * weight, minus weight at the label. A
  // thread reads back only what it cached itself.
  auto grad = [&](float x, int64_t j) {
    float g = expf(x - lse) * weight;
    return j == label ? g - weight : g;
  };
  auto scalar = [&](int64_t j) {
    if constexpr (kCached)
      return cachedScalars[scalarSlot(j)];
    return in[j];
  };
  for (int64_t j = threadIdx.x; j < head; j += kThreads)
    out[j] = grad(scalar(j), j);
  for (int64_t k = threadIdx.x; k < vectors; k += kThreads) {
    float4 v;
    if constexpr (kCached)
      v = rowCache[k];
    else
      v = inVectors[k];
    int64_t j = head + 4 * k;
    reinterpret_cast<float4 *>(out + head)[k] =
        make_float4(grad(v.x, j), grad(v.y, j + 1), grad(v.z, j + 2),
                    grad(v.w, j + 3));
  }
  for (int64_t j = tail + threadIdx.x; j < vocab; j += kThreads)
    out[j] = grad(scalar(j), j);
}

size_t rowCacheBytes(int64_t vocab) { return size_t(vocab) * sizeof(float); }

/// The dynamic shared memory the cached row kernel may use on the current
/// device: the block opt-in limit less its static shared memory. The kernel
/// is allowed that much once per device, so that a call costs no driver
/// round trips beyond cudaGetDevice.
Expected<size_t> rowCacheLimit() {
  static std::mutex mutex;
  static std::map<int, size_t> limits;
  int device = 0;
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  if (auto found = limits.find(device); found != limits.end())
    return found->second;
  int optin = 0;
  QLORA_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(
      &optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  cudaFuncAttributes attributes;
  auto kernel = crossEntropyRowKernel<kCachedRowThreads, true>;
  QLORA_CUDA_RETURN_IF_ERROR(cudaFuncGetAttributes(&attributes, kernel));
  size_t limit = size_t(optin) > attributes.sharedSizeBytes
                     ? size_t(optin) - attributes.sharedSizeBytes
                     : 0;
  QLORA_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(limit)));
  limits[device] = limit;
  return limit;
}

} // namespace

Status crossEntropyAsync(const float *logits, const int32_t *labels,
                         int64_t rows, int64_t vocab, int32_t ignoreIndex,
                         float dloss, float *dlogits, float *rowLoss,
                         float *loss, int32_t *status, cudaStream_t stream) {
  if (rows < 0 || rows > INT32_MAX || vocab <= 0 || vocab > INT32_MAX)
    return makeError("crossEntropy: expects 0 <= rows < 2^31 and 0 < vocab < "
                     "2^31, got rows = {}, vocab = {}",
                     rows, vocab);
  countLabelsKernel<<<1, kCountThreads, 0, stream>>>(labels, rows, vocab,
                                                     ignoreIndex, status);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (rows > 0) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(logits);
    const uintptr_t b = reinterpret_cast<uintptr_t>(dlogits);
    const bool vectorize = ((a ^ b) & 15u) == 0 && (a & 3u) == 0;
    Expected<size_t> cacheLimit = rowCacheLimit();
    if (!cacheLimit)
      return cacheLimit.error();
    if (rowCacheBytes(vocab) <= *cacheLimit)
      crossEntropyRowKernel<kCachedRowThreads, true>
          <<<unsigned(rows), kCachedRowThreads, rowCacheBytes(vocab),
             stream>>>(logits, labels, vocab, ignoreIndex, dloss, vectorize,
                       status, dlogits, rowLoss);
    else
      crossEntropyRowKernel<kRowThreads, false>
          <<<unsigned(rows), kRowThreads, 0, stream>>>(
              logits, labels, vocab, ignoreIndex, dloss, vectorize, status,
              dlogits, rowLoss);
    QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  detail::meanLossKernel<<<1, detail::kMeanLossThreads, 0, stream>>>(
      rowLoss, rows, status, loss);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Expected<int64_t> checkCrossEntropy(const int32_t *status, int64_t vocab,
                                    int32_t ignoreIndex, cudaStream_t stream) {
  int32_t words[kCrossEntropyStatusWords] = {};
  QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(words, status, sizeof words,
                                             cudaMemcpyDeviceToHost, stream));
  QLORA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  if (words[1] >= 0)
    return makeError("cross_entropy: label {} at row {} is outside the "
                     "vocabulary [0, {}) and is not the ignore index {}",
                     words[2], words[1], vocab, ignoreIndex);
  return int64_t(words[0]);
}

Expected<int64_t> crossEntropy(const float *logits, const int32_t *labels,
                               int64_t rows, int64_t vocab,
                               int32_t ignoreIndex, float dloss,
                               float *dlogits, float *rowLoss, float *loss,
                               int32_t *status, cudaStream_t stream) {
  QLORA_RETURN_IF_ERROR(crossEntropyAsync(logits, labels, rows, vocab,
                                          ignoreIndex, dloss, dlogits, rowLoss,
                                          loss, status, stream));
  return checkCrossEntropy(status, vocab, ignoreIndex, stream);
}

} // namespace qlora::cuda
