//===- Elementwise.cpp - Embedding lookup and elementwise helpers -----------===//
//
// The embedding gather (the only kernel here that can fail: token ids come
// from user data) and the residual add, gradient accumulation, scaling and
// fill that the emitted step uses between the big kernels.
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/Kernels.h"

#include "runtime/Parallel.h"

#include <algorithm>

namespace qlora {
namespace cpu {
namespace {
constexpr int64_t kGrain = 1 << 15;
} // namespace

Status embedding(const float *table, const int32_t *ids, int64_t tokens,
                 int64_t hidden, int64_t vocab, float *out) {
  // Validate first so that a bad batch leaves out untouched.
  for (int64_t t = 0; t < tokens; ++t)
    if (ids[t] < 0 || ids[t] >= vocab)
      return makeError("embedding: token id {} at position {} is outside the "
                       "vocabulary [0, {})",
                       ids[t], t, vocab);
  parallelFor(0, tokens, std::max<int64_t>(1, kGrain / std::max<int64_t>(hidden, 1)),
              [&](int64_t begin, int64_t end) {
                for (int64_t t = begin; t < end; ++t)
                  std::copy_n(table + int64_t(ids[t]) * hidden, hidden,
                              out + t * hidden);
              });
  return Status::ok();
}

void add(const float *a, const float *b, int64_t n, float *out) {
  parallelFor(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      out[i] = a[i] + b[i];
  });
}

void accumulate(float *acc, const float *x, int64_t n) {
  parallelFor(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      acc[i] += x[i];
  });
}

void scale(float *x, int64_t n, float factor) {
  parallelFor(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      x[i] *= factor;
  });
}

void fill(float *x, int64_t n, float value) {
  parallelFor(0, n, kGrain, [&](int64_t begin, int64_t end) {
    std::fill(x + begin, x + end, value);
  });
}

} // namespace cpu
} // namespace qlora
