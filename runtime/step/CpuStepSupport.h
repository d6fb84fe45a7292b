//===- CpuStepSupport.h - What generated CPU training steps call ------------===//
//
// Code generation lowers every qlora op to one call of a function below. All
// arguments are compile-time constants: byte offsets into the arena, sizes,
// and attributes; the only runtime value is the StepContext. Each function
// turns offsets into typed pointers and calls a kernel of runtime/cpu.
// Kernels that can fail on data (a token id outside the vocabulary) record
// the first error in the context; later calls of the step are skipped and
// the entry point returns it.
//
// The entry points a step library exports come from QLORA_STEP_ENTRY:
//   int <symbol>(uint8_t *arena, char *error, size_t errorCapacity);
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/NF4.h"
#include "runtime/cpu/Kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace qlora::step {

/// The state of one call of an entry point.
struct StepContext {
  uint8_t *arena = nullptr;
  std::string error;
  bool failed() const { return !error.empty(); }
  void fail(const std::string &message) {
    if (error.empty())
      error = message;
  }
  float *f32(int64_t offset) const {
    return reinterpret_cast<float *>(arena + offset);
  }
  int32_t *i32(int64_t offset) const {
    return reinterpret_cast<int32_t *>(arena + offset);
  }
  uint8_t *u8(int64_t offset) const { return arena + offset; }
};

/// Runs `body` on `arena` and reports its error, for the exported C symbols.
inline int runEntry(uint8_t *arena, char *error, size_t capacity,
                    void (*body)(StepContext *)) {
  StepContext context;
  context.arena = arena;
  body(&context);
  if (!context.failed())
    return 0;
  if (capacity > 0) {
    size_t n = std::min(capacity - 1, context.error.size());
    std::memcpy(error, context.error.data(), n);
    error[n] = '\0';
  }
  return 1;
}

// --- Elementwise and data movement -----------------------------------------

inline void fill(StepContext *c, int64_t out, int64_t n, float value) {
  if (!c->failed())
    cpu::fill(c->f32(out), n, value);
}

inline void copy(StepContext *c, int64_t src, int64_t bytes, int64_t dst) {
  if (!c->failed() && src != dst)
    std::memmove(c->u8(dst), c->u8(src), size_t(bytes));
}

inline void add(StepContext *c, int64_t a, int64_t b, int64_t n, int64_t out) {
  if (!c->failed())
    cpu::add(c->f32(a), c->f32(b), n, c->f32(out));
}

/// out = x * s, with s a scalar buffer.
inline void mulScalar(StepContext *c, int64_t x, int64_t s, int64_t n,
                      int64_t out) {
  if (c->failed())
    return;
  float factor = *c->f32(s);
  const float *in = c->f32(x);
  float *result = c->f32(out);
  for (int64_t i = 0; i < n; ++i)
    result[i] = in[i] * factor;
}

/// out = a * b elementwise.
inline void mul(StepContext *c, int64_t a, int64_t b, int64_t n, int64_t out) {
  if (c->failed())
    return;
  const float *x = c->f32(a), *y = c->f32(b);
  float *result = c->f32(out);
  for (int64_t i = 0; i < n; ++i)
    result[i] = x[i] * y[i];
}

// --- The network -------------------------------------------------------------

inline void embedding(StepContext *c, int64_t table, int64_t ids,
                      int64_t tokens, int64_t hidden, int64_t vocab,
                      int64_t out) {
  if (c->failed())
    return;
  Status status = cpu::embedding(c->f32(table), c->i32(ids), tokens, hidden,
                                 vocab, c->f32(out));
  if (!status)
    c->fail(status.message());
}

inline void rmsNorm(StepContext *c, int64_t x, int64_t weight, int64_t rows,
                    int64_t hidden, float eps, int64_t y) {
  if (!c->failed())
    cpu::rmsNorm(c->f32(x), c->f32(weight), rows, hidden, eps, c->f32(y));
}

inline void rmsNormGrad(StepContext *c, int64_t x, int64_t weight, int64_t dy,
                        int64_t rows, int64_t hidden, float eps, int64_t dx) {
  if (!c->failed())
    cpu::rmsNormBackward(c->f32(x), c->f32(weight), c->f32(dy), rows, hidden,
                         eps, c->f32(dx));
}

inline void rope(StepContext *c, int64_t x, int64_t batch, int64_t seq,
                 int64_t heads, int64_t headDim, float theta, int64_t y) {
  if (!c->failed())
    cpu::rope(c->f32(x), batch, seq, heads, headDim, theta, c->f32(y));
}

inline void ropeGrad(StepContext *c, int64_t dy, int64_t batch, int64_t seq,
                     int64_t heads, int64_t headDim, float theta, int64_t dx) {
  if (!c->failed())
    cpu::ropeBackward(c->f32(dy), batch, seq, heads, headDim, theta,
                      c->f32(dx));
}

inline void attention(StepContext *c, int64_t q, int64_t k, int64_t v,
                      int64_t batch, int64_t seq, int64_t heads,
                      int64_t kvHeads, int64_t headDim, float scale,
                      int64_t out) {
  if (c->failed())
    return;
  std::vector<float> lse(size_t(batch * heads * seq));
  cpu::attention(c->f32(q), c->f32(k), c->f32(v), batch, seq, heads, kvHeads,
                 headDim, scale, c->f32(out), lse.data());
}

/// Recomputes the log-sum-exp of the forward (flash-style) and runs the
/// backward.
inline void attentionGrad(StepContext *c, int64_t q, int64_t k, int64_t v,
                          int64_t out, int64_t dout, int64_t batch,
                          int64_t seq, int64_t heads, int64_t kvHeads,
                          int64_t headDim, float scale, int64_t dq, int64_t dk,
                          int64_t dv) {
  if (c->failed())
    return;
  std::vector<float> lse(size_t(batch * heads * seq));
  std::vector<float> recomputed(size_t(batch * seq * heads * headDim));
  cpu::attention(c->f32(q), c->f32(k), c->f32(v), batch, seq, heads, kvHeads,
                 headDim, scale, recomputed.data(), lse.data());
  cpu::attentionBackward(c->f32(q), c->f32(k), c->f32(v), c->f32(out),
                         lse.data(), c->f32(dout), batch, seq, heads, kvHeads,
                         headDim, scale, c->f32(dq), c->f32(dk), c->f32(dv));
}

inline void swiglu(StepContext *c, int64_t gate, int64_t up, int64_t n,
                   int64_t out) {
  if (!c->failed())
    cpu::swiglu(c->f32(gate), c->f32(up), n, c->f32(out));
}

inline void swigluGrad(StepContext *c, int64_t gate, int64_t up, int64_t dout,
                       int64_t n, int64_t dgate, int64_t dup) {
  if (!c->failed())
    cpu::swigluBackward(c->f32(gate), c->f32(up), c->f32(dout), n,
                        c->f32(dgate), c->f32(dup));
}

// --- Projections ---------------------------------------------------------------

inline void linear(StepContext *c, int64_t x, int64_t weight, int64_t M,
                   int64_t N, int64_t K, int64_t y) {
  if (!c->failed())
    cpu::linear(c->f32(x), c->f32(weight), M, N, K, c->f32(y));
}

inline void linearGradInput(StepContext *c, int64_t dy, int64_t weight,
                            int64_t M, int64_t N, int64_t K, int64_t dx) {
  if (!c->failed())
    cpu::linearBackwardInput(c->f32(dy), c->f32(weight), M, N, K, 0.0f,
                             c->f32(dx));
}

inline cpu::NF4View nf4View(StepContext *c, int64_t packed, int64_t absmax,
                            int64_t N, int64_t K, int64_t blockSize) {
  return cpu::NF4View{c->u8(packed), c->f32(absmax), N, K, blockSize};
}

inline void nf4Linear(StepContext *c, int64_t x, int64_t packed,
                      int64_t absmax, int64_t N, int64_t K, int64_t blockSize,
                      int64_t M, int64_t y) {
  if (!c->failed())
    cpu::nf4Linear(c->f32(x), nf4View(c, packed, absmax, N, K, blockSize), M,
                   c->f32(y));
}

inline void nf4LinearGradInput(StepContext *c, int64_t dy, int64_t packed,
                               int64_t absmax, int64_t N, int64_t K,
                               int64_t blockSize, int64_t M, int64_t dx) {
  if (!c->failed())
    cpu::nf4LinearBackwardInput(c->f32(dy),
                                nf4View(c, packed, absmax, N, K, blockSize),
                                M, 0.0f, c->f32(dx));
}

/// The LoRA branch alone: y = scale * (x A^T) B^T.
inline void lora(StepContext *c, int64_t x, int64_t A, int64_t B, int64_t M,
                 int64_t N, int64_t K, int64_t r, float scale, int64_t y) {
  if (c->failed())
    return;
  std::vector<float> xa(size_t(M * r));
  cpu::fill(c->f32(y), M * N, 0.0f);
  cpu::loraForward(c->f32(x), c->f32(A), c->f32(B), M, N, K, r, scale,
                   xa.data(), c->f32(y));
}

/// A LoRA branch added onto a base projection already in y (lora_linear).
inline void loraAdd(StepContext *c, int64_t x, int64_t A, int64_t B,
                    int64_t M, int64_t N, int64_t K, int64_t r, float scale,
                    int64_t y) {
  if (c->failed())
    return;
  std::vector<float> xa(size_t(M * r));
  cpu::loraForward(c->f32(x), c->f32(A), c->f32(B), M, N, K, r, scale,
                   xa.data(), c->f32(y));
}

/// Gradients of the branch: dx, dA, dB are written, not accumulated.
inline void loraGrad(StepContext *c, int64_t x, int64_t A, int64_t B,
                     int64_t dy, int64_t M, int64_t N, int64_t K, int64_t r,
                     float scale, int64_t dx, int64_t dA, int64_t dB) {
  if (c->failed())
    return;
  // xa = x A^T again: cheaper to recompute (M x r) than to keep.
  std::vector<float> xa(size_t(M * r));
  cpu::gemm(false, true, M, r, K, 1.0f, c->f32(x), K, c->f32(A), K, 0.0f,
            xa.data(), r);
  cpu::fill(c->f32(dx), M * K, 0.0f);
  cpu::fill(c->f32(dA), r * K, 0.0f);
  cpu::fill(c->f32(dB), N * r, 0.0f);
  cpu::loraBackward(c->f32(x), c->f32(A), c->f32(B), xa.data(), c->f32(dy), M,
                    N, K, r, scale, c->f32(dA), c->f32(dB), c->f32(dx));
}

// --- LoRA dropout --------------------------------------------------------------
//
// PEFT applies nn.Dropout(p) to the input of each LoRA branch (never to the
// base projection). Here the mask is a pure function of (seed, stream,
// element): the host draws a seed per micro-batch, each branch of the step
// has its own stream, and the backward redraws the very mask the forward
// used instead of storing it.

/// Whether element `index` of stream `stream` is dropped, at rate `p`.
inline bool dropped(uint32_t seed, uint32_t stream, uint64_t index, float p) {
  uint64_t z = (uint64_t(seed) << 32 | stream) + index * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return double(z >> 11) * 0x1.0p-53 < double(p);
}

/// out = dropout(x): dropped elements are zero, kept ones scaled by 1/(1-p).
inline void applyDropout(const float *x, int64_t n, float p, uint32_t seed,
                         uint32_t stream, float *out) {
  float keep = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < n; ++i)
    out[i] = dropped(seed, stream, uint64_t(i), p) ? 0.0f : x[i] * keep;
}

inline uint32_t dropoutSeed(StepContext *c, int64_t seed) {
  return uint32_t(*c->i32(seed));
}

/// The LoRA branch on dropout(x), alone (lora) or added to y (lora_linear).
inline void loraDropout(StepContext *c, int64_t x, int64_t A, int64_t B,
                        int64_t M, int64_t N, int64_t K, int64_t r,
                        float scale, float p, int64_t stream, int64_t seed,
                        int64_t accumulate, int64_t y) {
  if (c->failed())
    return;
  std::vector<float> dropped(size_t(M * K)), xa(size_t(M * r));
  applyDropout(c->f32(x), M * K, p, dropoutSeed(c, seed), uint32_t(stream),
               dropped.data());
  if (!accumulate)
    cpu::fill(c->f32(y), M * N, 0.0f);
  cpu::loraForward(dropped.data(), c->f32(A), c->f32(B), M, N, K, r, scale,
                   xa.data(), c->f32(y));
}

/// Gradients of a branch with dropout: the mask is redrawn; dx passes
/// through it.
inline void loraGradDropout(StepContext *c, int64_t x, int64_t A, int64_t B,
                            int64_t dy, int64_t M, int64_t N, int64_t K,
                            int64_t r, float scale, float p, int64_t stream,
                            int64_t seed, int64_t dx, int64_t dA,
                            int64_t dB) {
  if (c->failed())
    return;
  uint32_t seedValue = dropoutSeed(c, seed);
  std::vector<float> masked(size_t(M * K)), xa(size_t(M * r));
  applyDropout(c->f32(x), M * K, p, seedValue, uint32_t(stream),
               masked.data());
  cpu::gemm(false, true, M, r, K, 1.0f, masked.data(), K, c->f32(A), K, 0.0f,
            xa.data(), r);
  cpu::fill(c->f32(dA), r * K, 0.0f);
  cpu::fill(c->f32(dB), N * r, 0.0f);
  std::vector<float> dMasked(size_t(M * K), 0.0f);
  cpu::loraBackward(masked.data(), c->f32(A), c->f32(B), xa.data(),
                    c->f32(dy), M, N, K, r, scale, c->f32(dA), c->f32(dB),
                    dMasked.data());
  applyDropout(dMasked.data(), M * K, p, seedValue, uint32_t(stream),
               c->f32(dx));
}

// --- Loss -----------------------------------------------------------------------

/// Labels shifted by one within each row: position t predicts label t + 1;
/// the last position of a row has no target.
inline std::vector<int32_t> shiftedLabels(const int32_t *labels, int64_t batch,
                                          int64_t seq, int32_t ignoreIndex) {
  std::vector<int32_t> shifted(size_t(batch * seq), ignoreIndex);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t + 1 < seq; ++t)
      shifted[b * seq + t] = labels[b * seq + t + 1];
  return shifted;
}

inline void crossEntropy(StepContext *c, int64_t logits, int64_t labels,
                         int64_t batch, int64_t seq, int64_t vocab,
                         int64_t ignoreIndex, int64_t loss) {
  if (c->failed())
    return;
  std::vector<int32_t> shifted =
      shiftedLabels(c->i32(labels), batch, seq, int32_t(ignoreIndex));
  Expected<int64_t> count =
      cpu::crossEntropy(c->f32(logits), shifted.data(), batch * seq, vocab,
                        int32_t(ignoreIndex), c->f32(loss));
  if (!count)
    c->fail(count.message());
}

inline void crossEntropyGrad(StepContext *c, int64_t logits, int64_t labels,
                             int64_t dloss, int64_t batch, int64_t seq,
                             int64_t vocab, int64_t ignoreIndex,
                             int64_t dlogits) {
  if (c->failed())
    return;
  std::vector<int32_t> shifted =
      shiftedLabels(c->i32(labels), batch, seq, int32_t(ignoreIndex));
  int64_t count = 0;
  for (int32_t label : shifted)
    count += label != int32_t(ignoreIndex);
  cpu::crossEntropyBackward(c->f32(logits), shifted.data(), batch * seq, vocab,
                            int32_t(ignoreIndex), *c->f32(dloss), count,
                            c->f32(dlogits));
}

// --- Optimizer -----------------------------------------------------------------

/// torch.optim.AdamW on fp32 master weights; the new values go to the
/// output buffers (which may be the inputs).
inline void adamw(StepContext *c, int64_t param, int64_t grad, int64_t m,
                  int64_t v, int64_t lr, int64_t step, int64_t n, float beta1,
                  float beta2, float eps, float weightDecay, int64_t paramOut,
                  int64_t mOut, int64_t vOut) {
  if (c->failed())
    return;
  copy(c, param, n * 4, paramOut);
  copy(c, m, n * 4, mOut);
  copy(c, v, n * 4, vOut);
  cpu::adamw(c->f32(paramOut), c->f32(grad), c->f32(mOut), c->f32(vOut), n,
             *c->f32(lr), beta1, beta2, eps, weightDecay,
             int64_t(std::lround(*c->f32(step))));
}

inline void sumSquares(StepContext *c, int64_t x, int64_t n, int64_t out) {
  if (!c->failed())
    *c->f32(out) = float(cpu::sumOfSquares(c->f32(x), n));
}

/// torch.nn.utils.clip_grad_norm_'s factor from the summed squares.
inline void clipCoefficient(StepContext *c, int64_t totalSquares,
                            float maxNorm, int64_t out) {
  if (c->failed())
    return;
  float norm = std::sqrt(*c->f32(totalSquares));
  *c->f32(out) = std::min(1.0f, maxNorm / (norm + 1e-6f));
}

} // namespace qlora::step

/// Exports `impl` (void(StepContext *)) as the C entry point `symbol`.
#define QLORA_STEP_ENTRY(symbol, impl)                                         \
  extern "C" int symbol(uint8_t *arena, char *error, size_t capacity) {        \
    return ::qlora::step::runEntry(arena, error, capacity, impl);              \
  }
