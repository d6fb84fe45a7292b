//===- GpuTestUtil.h - Comparisons shared by the GPU tests ------------------===//
//
// GPU results come back as bf16 bit patterns or fp32; the references are the
// CPU kernels' fp32 results. NaN or infinity in a result (an unwritten,
// NaN-poisoned element) never passes.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Float16.h"

#include <cmath>
#include <limits>
#include <vector>

namespace qlora::cuda::testing {

inline std::vector<float> toFloat(const std::vector<uint16_t> &bf16) {
  std::vector<float> values(bf16.size());
  for (size_t i = 0; i < bf16.size(); ++i)
    values[i] = bf16ToFloat(bf16[i]);
  return values;
}

inline std::vector<uint16_t> toBf16(const std::vector<float> &values) {
  std::vector<uint16_t> bf16(values.size());
  for (size_t i = 0; i < values.size(); ++i)
    bf16[i] = floatToBf16(values[i]);
  return bf16;
}

/// The CPU's fp32 result as the GPU stores it: rounded to bf16.
inline std::vector<float> roundedToBf16(const std::vector<float> &values) {
  return toFloat(toBf16(values));
}

/// ||got - ref|| / ||ref||; infinity when got holds a NaN or infinity, or
/// the sizes differ.
inline double relativeError(const std::vector<float> &got,
                            const std::vector<float> &ref) {
  if (got.size() != ref.size())
    return std::numeric_limits<double>::infinity();
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]))
      return std::numeric_limits<double>::infinity();
    double d = double(got[i]) - double(ref[i]);
    diff += d * d;
    norm += double(ref[i]) * double(ref[i]);
  }
  return norm == 0.0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

inline double relativeError(const std::vector<uint16_t> &got,
                            const std::vector<float> &ref) {
  return relativeError(toFloat(got), ref);
}

} // namespace qlora::cuda::testing
