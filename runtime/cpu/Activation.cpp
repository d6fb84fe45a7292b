//===- Activation.cpp - SwiGLU (Llama MLP) forward and backward -------------===//
//
// LlamaMLP's act_fn(gate) * up with act_fn = SiLU, in torch's fp32 formulas:
// silu(g) = g / (1 + exp(-g)) and silu'(g) = s (1 + g (1 - s)), s = sigmoid(g).
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/Kernels.h"

#include "runtime/Parallel.h"

#include <cmath>

namespace qlora {
namespace cpu {
namespace {
constexpr int64_t kGrain = 1 << 14;
} // namespace

void swiglu(const float *gate, const float *up, int64_t n, float *out) {
  parallelFor(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

void swigluBackward(const float *gate, const float *up, const float *dout,
                    int64_t n, float *dgate, float *dup) {
  parallelFor(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float g = gate[i], u = up[i], d = dout[i];
      float sigmoid = 1.0f / (1.0f + std::exp(-g));
      // mul backward gives d * up to silu, silu_backward multiplies by s'.
      dgate[i] = d * u * sigmoid * (1.0f + g * (1.0f - sigmoid));
      dup[i] = d * (g / (1.0f + std::exp(-g)));
    }
  });
}

} // namespace cpu
} // namespace qlora
