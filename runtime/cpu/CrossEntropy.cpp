//===- CrossEntropy.cpp - Causal-LM cross-entropy with label masking --------===//
//
// transformers' ForCausalLMLoss after the shift: torch's cross_entropy with
// reduction "mean" and ignore_index, on fp32 logits. Row log-sum-exps
// accumulate in double (within fp32 rounding of torch) and the mean sums the
// per-row losses in row order, so the result does not depend on threads.
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/Kernels.h"

#include "runtime/Parallel.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace qlora {
namespace cpu {
namespace {

/// log(sum(exp(row))) with the max subtracted first.
double logSumExp(const float *row, int64_t vocab) {
  float max = row[0];
  for (int64_t j = 1; j < vocab; ++j)
    max = std::max(max, row[j]);
  double sum = 0.0;
  for (int64_t j = 0; j < vocab; ++j)
    sum += double(std::exp(row[j] - max));
  return double(max) + std::log(sum);
}

int64_t rowGrain(int64_t vocab) {
  return std::max<int64_t>(1, 65536 / std::max<int64_t>(vocab, 1));
}

} // namespace

Expected<int64_t> crossEntropy(const float *logits, const int32_t *labels,
                               int64_t rows, int64_t vocab,
                               int32_t ignoreIndex, float *loss) {
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (labels[r] == ignoreIndex)
      continue;
    if (labels[r] < 0 || labels[r] >= vocab)
      return makeError("cross_entropy: label {} at row {} is outside the "
                       "vocabulary [0, {}) and is not the ignore index {}",
                       labels[r], r, vocab, ignoreIndex);
    ++count;
  }
  if (count == 0) { // torch's mean over nothing is NaN; a step with no
    *loss = 0.0f;   // target tokens contributes nothing instead.
    return int64_t(0);
  }
  std::vector<double> rowLoss(size_t(rows), 0.0);
  parallelFor(0, rows, rowGrain(vocab), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (labels[r] == ignoreIndex)
        continue;
      const float *row = logits + r * vocab;
      rowLoss[size_t(r)] = logSumExp(row, vocab) - double(row[labels[r]]);
    }
  });
  double sum = 0.0;
  for (double value : rowLoss)
    sum += value;
  *loss = float(sum / double(count));
  return count;
}

void crossEntropyBackward(const float *logits, const int32_t *labels,
                          int64_t rows, int64_t vocab, int32_t ignoreIndex,
                          float dloss, int64_t count, float *dlogits) {
  float weight = count > 0 ? float(double(dloss) / double(count)) : 0.0f;
  parallelFor(0, rows, rowGrain(vocab), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float *out = dlogits + r * vocab;
      if (labels[r] == ignoreIndex || count <= 0) {
        std::fill(out, out + vocab, 0.0f);
        continue;
      }
      const float *row = logits + r * vocab;
      float lse = float(logSumExp(row, vocab));
      for (int64_t j = 0; j < vocab; ++j)
        out[j] = std::exp(row[j] - lse) * weight;
      out[labels[r]] -= weight;
    }
  });
}

} // namespace cpu
} // namespace qlora
