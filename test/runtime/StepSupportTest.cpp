//===- StepSupportTest.cpp - What generated steps call, LoRA dropout --------===//
//
// The dropout branch must drop at the rate asked, and its backward must be
// the derivative of its forward: the mask redrawn in the backward is the one
// the forward used. Checked by finite differences through the forward.
//
//===----------------------------------------------------------------------===//
#include "runtime/step/CpuStepSupport.h"

#include <gtest/gtest.h>

#include <random>

namespace qlora::step {
namespace {

TEST(LoraDropout, DropsAtTheRateAskedAndScalesTheRest) {
  const int64_t n = 200000;
  std::vector<float> ones(n, 1.0f), out(n);
  applyDropout(ones.data(), n, 0.25f, 1234, 7, out.data());
  int64_t zeros = 0;
  for (float value : out) {
    zeros += value == 0.0f;
    EXPECT_TRUE(value == 0.0f || std::fabs(value - 1.0f / 0.75f) < 1e-6f);
  }
  EXPECT_NEAR(double(zeros) / n, 0.25, 0.005);
  // Another stream or seed gives another mask.
  std::vector<float> other(n);
  applyDropout(ones.data(), n, 0.25f, 1234, 8, other.data());
  EXPECT_NE(out, other);
  applyDropout(ones.data(), n, 0.25f, 1235, 7, other.data());
  EXPECT_NE(out, other);
}

/// An arena laid out by hand: x, A, B, y, dy, dx, dA, dB and the seed.
struct Arena {
  static constexpr int64_t M = 5, N = 6, K = 7, r = 3;
  std::vector<uint8_t> bytes = std::vector<uint8_t>(1 << 16);
  int64_t x = 0, A = 1024, B = 2048, y = 3072, dy = 4096, dx = 5120,
          dA = 6144, dB = 7168, seed = 8192, dropped = 9216, xa = 10240;
  StepContext context() {
    StepContext c;
    c.arena = bytes.data();
    return c;
  }
  float *f(int64_t offset) { return reinterpret_cast<float *>(&bytes[offset]); }
};

double projectedOutput(Arena &arena, const std::vector<float> &weights) {
  StepContext c = arena.context();
  loraDropout(&c, arena.x, arena.A, arena.B, Arena::M, Arena::N, Arena::K,
              Arena::r, 2.0f, 0.3f, 5, arena.seed, 0, arena.dropped, arena.xa,
              arena.y);
  double sum = 0.0;
  for (int64_t i = 0; i < Arena::M * Arena::N; ++i)
    sum += double(weights[i]) * arena.f(arena.y)[i];
  return sum;
}

TEST(LoraDropout, BackwardIsTheDerivativeOfTheForward) {
  Arena arena;
  std::mt19937 random(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < Arena::M * Arena::K; ++i)
    arena.f(arena.x)[i] = normal(random);
  for (int64_t i = 0; i < Arena::r * Arena::K; ++i)
    arena.f(arena.A)[i] = normal(random);
  for (int64_t i = 0; i < Arena::N * Arena::r; ++i)
    arena.f(arena.B)[i] = normal(random);
  *reinterpret_cast<int32_t *>(&arena.bytes[arena.seed]) = 99;
  std::vector<float> weights(Arena::M * Arena::N);
  for (float &w : weights)
    w = normal(random);
  std::copy(weights.begin(), weights.end(), arena.f(arena.dy));

  StepContext c = arena.context();
  loraGradDropout(&c, arena.x, arena.A, arena.B, arena.dy, Arena::M, Arena::N,
                  Arena::K, Arena::r, 2.0f, 0.3f, 5, arena.seed, arena.dropped,
                  arena.xa, arena.dx, arena.dA, arena.dB);
  std::vector<float> dx(arena.f(arena.dx), arena.f(arena.dx) + Arena::M * Arena::K);
  std::vector<float> dA(arena.f(arena.dA), arena.f(arena.dA) + Arena::r * Arena::K);

  const float h = 1e-2f;
  int zeroGrads = 0;
  for (int64_t i = 0; i < Arena::M * Arena::K; ++i) {
    float saved = arena.f(arena.x)[i];
    arena.f(arena.x)[i] = saved + h;
    double plus = projectedOutput(arena, weights);
    arena.f(arena.x)[i] = saved - h;
    double minus = projectedOutput(arena, weights);
    arena.f(arena.x)[i] = saved;
    double numeric = (plus - minus) / (2.0 * h);
    EXPECT_NEAR(dx[i], numeric, 1e-2 * (1.0 + std::fabs(numeric))) << i;
    zeroGrads += dx[i] == 0.0f;
  }
  // Dropped inputs get no gradient: about 30% of them.
  EXPECT_GT(zeroGrads, 0);
  EXPECT_LT(zeroGrads, Arena::M * Arena::K);
  for (int64_t i = 0; i < Arena::r * Arena::K; i += 4) {
    float saved = arena.f(arena.A)[i];
    arena.f(arena.A)[i] = saved + h;
    double plus = projectedOutput(arena, weights);
    arena.f(arena.A)[i] = saved - h;
    double minus = projectedOutput(arena, weights);
    arena.f(arena.A)[i] = saved;
    double numeric = (plus - minus) / (2.0 * h);
    EXPECT_NEAR(dA[i], numeric, 1e-2 * (1.0 + std::fabs(numeric))) << i;
  }
}

} // namespace
} // namespace qlora::step
