//===- Rope.cpp - Llama rotary position embedding ---------------------------===//
//
// HF LlamaRotaryEmbedding ("default" and "llama3" rope types, attention
// scaling 1; inverse frequencies from runtime/RopeScaling.h) with
// apply_rotary_pos_emb's rotate_half convention: pairs (i, i + headDim/2) of
// each head rotate by pos * inv_freq[i]. The angles are computed in fp32 as
// torch computes them; the cos/sin table is built once per call.
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/Kernels.h"

#include "runtime/Parallel.h"
#include "runtime/RopeScaling.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace qlora {
namespace cpu {
namespace {

/// cos and sin of pos * inv_freq[i] for pos < seq, i < headDim / 2.
struct RopeTable {
  std::vector<float> cos, sin;

  RopeTable(int64_t seq, int64_t headDim, float theta,
            const RopeScaling &scaling) {
    int64_t half = headDim / 2;
    std::vector<float> invFreq =
        ropeInverseFrequencies(headDim, theta, scaling);
    cos.resize(size_t(seq * half));
    sin.resize(size_t(seq * half));
    for (int64_t pos = 0; pos < seq; ++pos)
      for (int64_t i = 0; i < half; ++i) {
        float angle = float(pos) * invFreq[size_t(i)];
        cos[size_t(pos * half + i)] = std::cos(angle);
        sin[size_t(pos * half + i)] = std::sin(angle);
      }
  }
};

/// out = in rotated by +angle (forward) or -angle (backward, the transpose).
void rotate(const float *in, int64_t batch, int64_t seq, int64_t heads,
            int64_t headDim, float theta, const RopeScaling &scaling,
            bool inverse, float *out) {
  RopeTable table(seq, headDim, theta, scaling);
  int64_t half = headDim / 2, width = heads * headDim;
  parallelFor(0, batch * seq, std::max<int64_t>(1, 8192 / width),
              [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      int64_t pos = row % seq;
      const float *c = table.cos.data() + pos * half;
      const float *s = table.sin.data() + pos * half;
      for (int64_t h = 0; h < heads; ++h) {
        const float *x = in + row * width + h * headDim;
        float *y = out + row * width + h * headDim;
        if (!inverse)
          // y = x * cos + cat(-x2, x1) * sin
          for (int64_t i = 0; i < half; ++i) {
            y[i] = x[i] * c[i] - x[i + half] * s[i];
            y[i + half] = x[i + half] * c[i] + x[i] * s[i];
          }
        else
          // dx = dy * cos + cat(dy2, -dy1) * sin
          for (int64_t i = 0; i < half; ++i) {
            y[i] = x[i] * c[i] + x[i + half] * s[i];
            y[i + half] = x[i + half] * c[i] - x[i] * s[i];
          }
      }
    }
  });
}

} // namespace

void rope(const float *x, int64_t batch, int64_t seq, int64_t heads,
          int64_t headDim, float theta, float *y,
          const RopeScaling &scaling) {
  rotate(x, batch, seq, heads, headDim, theta, scaling, /*inverse=*/false, y);
}

void ropeBackward(const float *dy, int64_t batch, int64_t seq, int64_t heads,
                  int64_t headDim, float theta, float *dx,
                  const RopeScaling &scaling) {
  rotate(dy, batch, seq, heads, headDim, theta, scaling, /*inverse=*/true,
         dx);
}

} // namespace cpu
} // namespace qlora
