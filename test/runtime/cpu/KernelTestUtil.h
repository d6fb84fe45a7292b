//===- KernelTestUtil.h - Shared helpers of the CPU kernel tests ------------===//
//
// Random inputs with fixed seeds, NaN poisoning of "(=)" outputs, relative
// errors against float64 references (a NaN never passes), and central
// finite differences of a float64 scalar projection for gradient checks.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace qlora {
namespace cpu {
namespace testing {

/// n values uniform in [lo, hi), never exactly 0.
inline std::vector<float> randomVector(size_t n, uint32_t seed,
                                       float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(lo, hi);
  std::vector<float> values(n);
  for (float &value : values) {
    do
      value = distribution(generator);
    while (value == 0.0f);
  }
  return values;
}

inline std::vector<double> toDouble(const std::vector<float> &values) {
  return std::vector<double>(values.begin(), values.end());
}

/// A vector of quiet NaNs: an output a kernel must overwrite entirely.
inline std::vector<float> poisoned(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

/// ||out - ref|| / ||ref||; infinity when out holds a NaN or infinity, so
/// that unwritten (poisoned) elements always fail.
inline double relativeError(const float *out, const double *ref, size_t n) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[i]))
      return std::numeric_limits<double>::infinity();
    diff += (double(out[i]) - ref[i]) * (double(out[i]) - ref[i]);
    norm += ref[i] * ref[i];
  }
  return norm == 0.0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}
inline double relativeError(const std::vector<float> &out,
                            const std::vector<double> &ref) {
  EXPECT_EQ(out.size(), ref.size());
  return relativeError(out.data(), ref.data(), std::min(out.size(), ref.size()));
}

/// `count` distinct-ish coordinates of a vector of n, from a fixed seed.
inline std::vector<size_t> sampleCoordinates(size_t n, int count,
                                             uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<size_t> distribution(0, n - 1);
  std::vector<size_t> coordinates;
  for (int i = 0; i < count; ++i)
    coordinates.push_back(distribution(generator));
  return coordinates;
}

/// Checks grad[c] against the central difference of the float64 scalar
/// `loss(x)` at a few coordinates c. Tolerance: relTol of |fd| plus relTol
/// of the gradient's RMS plus 1e-6 (a gradient that is exactly 0, such as dk
/// with one key, comes out as fp32 rounding noise), loose enough for an fp32
/// kernel and far too tight for wrong math.
template <typename Loss>
void expectFiniteDifferences(const std::string &what, const float *grad,
                             std::vector<double> x, Loss loss, int count,
                             uint32_t seed, double relTol = 1e-4) {
  double rms = 0.0;
  for (size_t i = 0; i < x.size(); ++i)
    rms += double(grad[i]) * double(grad[i]);
  rms = std::sqrt(rms / double(x.size()));
  for (size_t c : sampleCoordinates(x.size(), count, seed)) {
    double saved = x[c];
    double h = 1e-5 * std::max(1.0, std::fabs(saved));
    x[c] = saved + h;
    double plus = loss(x);
    x[c] = saved - h;
    double minus = loss(x);
    x[c] = saved;
    double fd = (plus - minus) / (2.0 * h);
    EXPECT_NEAR(double(grad[c]), fd, relTol * (std::fabs(fd) + rms) + 1e-6)
        << what << " at coordinate " << c;
  }
}

/// sum_i r_i y_i: the scalar whose gradient with respect to y is r.
inline double project(const std::vector<double> &y,
                      const std::vector<float> &r) {
  double sum = 0.0;
  for (size_t i = 0; i < y.size(); ++i)
    sum += y[i] * double(r[i]);
  return sum;
}

} // namespace testing
} // namespace cpu
} // namespace qlora
