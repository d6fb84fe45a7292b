//===- GpuTestUtil.h - Comparisons shared by the GPU tests ------------------===//
//
// GPU results come back as bf16 bit patterns or fp32; the references are the
// CPU kernels' fp32 (or fp64) results. NaN or infinity in a result (an
// unwritten, NaN-poisoned element) never passes. The assertion macros turn a
// runtime Status or a failed device call into a test failure with its message.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/Float16.h"
#include "runtime/cuda/DeviceBuffer.h"
#include "runtime/cuda/NF4Kernels.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <vector>

/// Fails the test (and returns from it) with the error's message.
#define ASSERT_OK(expr)                                                        \
  do {                                                                         \
    ::qlora::Status status_ = (expr);                                          \
    ASSERT_TRUE(status_.isOk()) << status_.message();                          \
  } while (false)

/// Records a failure with the error's message and goes on.
#define EXPECT_OK(expr)                                                        \
  do {                                                                         \
    ::qlora::Status status_ = (expr);                                          \
    EXPECT_TRUE(status_.isOk()) << status_.message();                          \
  } while (false)

/// Waits for the kernels and fails on an asynchronous error (a bad address).
#define ASSERT_SYNCED() ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess)

namespace qlora::cuda::testing {

/// The buffer, or an empty one after recording the error as a failure (the
/// test goes on and fails on the empty buffer's results).
template <typename T> DeviceBuffer<T> take(Expected<DeviceBuffer<T>> buffer) {
  if (!buffer) {
    ADD_FAILURE() << buffer.message();
    return DeviceBuffer<T>();
  }
  return buffer.take();
}

/// A GPU test on fresh random inputs: skipped without a CUDA device, and the
/// seed printed when it fails so that the failing inputs can be drawn again.
class SeededGpuTest : public ::testing::Test {
protected:
  void SetUp() override {
    if (!haveCudaDevice())
      GTEST_SKIP() << "no CUDA device";
    seed_ = std::random_device{}();
    engine_.seed(seed_);
  }
  void TearDown() override {
    if (HasFailure())
      std::cerr << "random seed of this test: " << seed_ << "\n";
  }

  /// `n` bf16 values drawn from N(mean, scale^2).
  std::vector<uint16_t> randomBf16(int64_t n, float mean = 0.0f,
                                   float scale = 1.0f) {
    std::normal_distribution<float> normal(mean, scale);
    std::vector<uint16_t> values(static_cast<size_t>(n));
    for (uint16_t &value : values)
      value = floatToBf16(normal(engine_));
    return values;
  }
  /// `n` fp32 values drawn from N(0, scale^2).
  std::vector<float> randomFloat(int64_t n, float scale) {
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> values(static_cast<size_t>(n));
    for (float &value : values)
      value = normal(engine_);
    return values;
  }
  std::mt19937_64 &engine() { return engine_; }

private:
  uint32_t seed_ = 0;
  std::mt19937_64 engine_;
};

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
/// the sizes differ. `Ref` is float or double.
template <typename Ref>
double relativeError(const std::vector<float> &got,
                     const std::vector<Ref> &ref) {
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

template <typename Ref>
double relativeError(const std::vector<uint16_t> &got,
                     const std::vector<Ref> &ref) {
  return relativeError(toFloat(got), ref);
}

} // namespace qlora::cuda::testing
