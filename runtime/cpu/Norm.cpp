//===- Norm.cpp - RMSNorm forward and backward ------------------------------===//
//
// HF LlamaRMSNorm in fp32, row by row: y = weight * (x * rsqrt(mean(x^2) +
// eps)), in torch's order of operations. Row sums accumulate in double, which
// is within fp32 rounding of torch's own reduction order. The norm weights are
// frozen in QLoRA, so the backward produces only dx.
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/Kernels.h"

#include "runtime/Parallel.h"

#include <algorithm>
#include <cmath>

namespace qlora {
namespace cpu {
namespace {

/// rsqrt(mean(x^2) + eps) of one row, as torch computes it in fp32.
float inverseRms(const float *x, int64_t hidden, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < hidden; ++i)
    sum += double(x[i] * x[i]);
  float variance = float(sum / double(hidden));
  return 1.0f / std::sqrt(variance + eps);
}

int64_t rowGrain(int64_t hidden) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(hidden, 1));
}

} // namespace

void rmsNorm(const float *x, const float *weight, int64_t rows, int64_t hidden,
             float eps, float *y) {
  parallelFor(0, rows, rowGrain(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float *xr = x + row * hidden;
      float *yr = y + row * hidden;
      float r = inverseRms(xr, hidden, eps);
      for (int64_t i = 0; i < hidden; ++i)
        yr[i] = weight[i] * (xr[i] * r);
    }
  });
}

void rmsNormBackward(const float *x, const float *weight, const float *dy,
                     int64_t rows, int64_t hidden, float eps, float *dx) {
  // With g = weight * dy and r = rsqrt(mean(x^2) + eps):
  //   dx_i = r g_i - x_i r^3 sum_j(g_j x_j) / hidden.
  parallelFor(0, rows, rowGrain(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float *xr = x + row * hidden;
      const float *dyr = dy + row * hidden;
      float *dxr = dx + row * hidden;
      float r = inverseRms(xr, hidden, eps);
      double dot = 0.0;
      for (int64_t i = 0; i < hidden; ++i)
        dot += double(weight[i] * dyr[i]) * double(xr[i]);
      double rd = double(r);
      float c = float(rd * rd * rd * dot / double(hidden));
      for (int64_t i = 0; i < hidden; ++i)
        dxr[i] = r * (weight[i] * dyr[i]) - xr[i] * c;
    }
  });
}

} // namespace cpu
} // namespace qlora
