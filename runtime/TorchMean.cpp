//===- TorchMean.cpp - torch.mean of an fp32 vector, in CUDA's order --------===//
#include "runtime/TorchMean.h"

#include <algorithm>
#include <vector>

namespace qlora {
namespace {

constexpr int kMaxThreads = 512; // max_reduce_threads for fp32
constexpr int kVectorWidth = 4;  // vectorized loads along the reduced dim
constexpr int kUnroll = 4;       // vt0: accumulators of the scalar path
constexpr int64_t kMinValuesPerThread = 16;
constexpr int64_t kMaxValuesPerThread = 256;

int64_t lastPow2(int64_t n) {
  int64_t p = 1;
  while (p * 2 <= n)
    p *= 2;
  return p;
}

int64_t divUp(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Reduces the per-thread values of one block the way block_x_reduce does:
/// halves are folded through shared memory down to a warp, and the warp
/// continues with shuffle-down offsets 16, 8, ..., 1. Together that is lane
/// t += lane t + offset for offset = width/2, width/4, ..., 1.
float blockReduce(std::vector<float> values) {
  for (size_t offset = values.size() / 2; offset >= 1; offset /= 2)
    for (size_t t = 0; t < offset; ++t)
      values[t] += values[t + offset];
  return values[0];
}

} // namespace

float torchCudaMean(const float *x, int64_t n, const CudaReduceDevice &device) {
  bool vectorize = n >= 128;
  int64_t dim0 = vectorize ? n / kVectorWidth : n;
  int64_t blockWidth = dim0 < kMaxThreads ? lastPow2(dim0) : kMaxThreads;

  // With one output, each thread walks the input with a stride of
  // blockWidth * ctas (in vectors when vectorized).
  int64_t valuesPerThread = divUp(n, blockWidth);
  int64_t ctas = 1;
  if (valuesPerThread >= kMaxValuesPerThread) {
    int64_t blocksPerSm = device.maxThreadsPerMultiProcessor / blockWidth;
    int64_t targetGrid = int64_t(device.multiProcessorCount) * blocksPerSm;
    ctas = std::max(std::min(targetGrid, divUp(valuesPerThread,
                                               kMinValuesPerThread)),
                    divUp(valuesPerThread, kMaxValuesPerThread));
  }
  int64_t stride = blockWidth * ctas;

  std::vector<float> partials(ctas);
  std::vector<float> threadValues(blockWidth);
  for (int64_t cta = 0; cta < ctas; ++cta) {
    for (int64_t t = 0; t < blockWidth; ++t) {
      int64_t idx = t + cta * blockWidth;
      float acc[kUnroll] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (vectorize) {
        for (; idx * kVectorWidth + kVectorWidth - 1 < n; idx += stride)
          for (int i = 0; i < kVectorWidth; ++i)
            acc[i] += x[idx * kVectorWidth + i];
        // The tail that does not fill a vector goes to the first block.
        int64_t tail = n - n % kVectorWidth + t;
        if (cta == 0 && tail < n)
          acc[0] += x[tail];
      } else {
        for (; idx + (kUnroll - 1) * stride < n; idx += stride * kUnroll)
          for (int i = 0; i < kUnroll; ++i)
            acc[i] += x[idx + i * stride];
        for (int i = 0; i < kUnroll && idx < n; ++i, idx += stride)
          acc[i] += x[idx];
      }
      threadValues[t] = ((acc[0] + acc[1]) + acc[2]) + acc[3];
    }
    partials[cta] = blockReduce(threadValues);
  }

  float sum = partials[0];
  if (ctas > 1) {
    // The last block: thread t sums partials t, t + blockWidth, ... and the
    // block reduces those.
    std::fill(threadValues.begin(), threadValues.end(), 0.0f);
    for (int64_t i = 0; i < ctas; ++i)
      threadValues[i % blockWidth] += partials[i];
    sum = blockReduce(threadValues);
  }
  float factor = 1.0f / float(n);
  return sum * factor;
}

} // namespace qlora
