//===- CpuStepSupport.h - What generated CPU training steps call ------------===//
//
// Code generation lowers every qlora op to calls of the functions below,
// declared from the kernel table runtime/step/CpuKernels.def (which the
// compiler checks its calls against). All arguments are compile-time
// constants: byte offsets into the arena (buffers and the workspaces the
// planner placed), sizes, and attributes; the only runtime value is the
// StepContext. Each function turns offsets into typed pointers and calls a
// kernel of runtime/cpu. Kernels that can fail on data (a token id outside
// the vocabulary) record the first error in the context; later calls of the
// step are skipped and the entry point returns it.
//
// The entry points a step library exports come from QLORA_STEP_ENTRY, with
// the C interface of runtime/step/StepAbi.h.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/NF4.h"
#include "runtime/cpu/Kernels.h"
#include "runtime/step/Dropout.h"
#include "runtime/step/StepAbi.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace qlora::step {

/// The state of one call of an entry point.
struct StepContext {
  uint8_t *arena = nullptr;
  uint8_t *hostArena = nullptr; ///< where offloaded activations wait
  uint64_t hostArenaBytes = 0;
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

/// An NF4 weight's parts in the arena and its shape (the codes and the
/// fp32 block maxima; double quantization is undone on load).
struct NF4Parts {
  int64_t codes, absmax, rows, cols, blockSize;
};

// The declarations of every kernel a step calls, from the table; the
// definitions below must match them (checked at the end of this file).
#define QLORA_STEP_KERNEL_TABLE "runtime/step/CpuKernels.def"
#define QLORA_STEP_KERNEL_SPECIFIER inline
#include "runtime/step/DeclareStepKernels.inc"

/// Runs `body` on the host's context and reports its error, for the
/// exported C symbols.
inline int runEntry(QLoRAStepContext *host, void (*body)(StepContext *)) {
  if (!step_abi::accepts(host))
    return 2;
  StepContext context;
  context.arena = host->arena;
  context.hostArena = host->host_arena;
  context.hostArenaBytes = host->host_arena_bytes;
  body(&context);
  if (!context.failed())
    return 0;
  step_abi::reportError(host, context.error);
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

/// Copies between the arena and the host arena: synchronous on the cpu, so
/// the waits have nothing to wait for.
inline bool hostRange(StepContext *c, int64_t hostOffset, int64_t bytes,
                      const char *kernel) {
  if (c->failed())
    return false;
  if (!c->hostArena || hostOffset < 0 || bytes < 0 ||
      uint64_t(hostOffset) + uint64_t(bytes) > c->hostArenaBytes) {
    c->fail(std::string(kernel) + ": the host arena does not hold [" +
            std::to_string(hostOffset) + ", +" + std::to_string(bytes) + ")");
    return false;
  }
  return true;
}

inline void offload(StepContext *c, int64_t src, int64_t bytes,
                    int64_t hostOffset, int64_t) {
  if (hostRange(c, hostOffset, bytes, "offload"))
    std::memcpy(c->hostArena + hostOffset, c->u8(src), size_t(bytes));
}

inline void reload(StepContext *c, int64_t hostOffset, int64_t bytes,
                   int64_t dst, int64_t) {
  if (hostRange(c, hostOffset, bytes, "reload"))
    std::memcpy(c->u8(dst), c->hostArena + hostOffset, size_t(bytes));
}

inline void offloadWait(StepContext *, int64_t) {}
inline void reloadWait(StepContext *, int64_t) {}

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
                 int64_t heads, int64_t headDim, float theta, float factor,
                 float lowFreqFactor, float highFreqFactor,
                 int64_t originalMaxPositionEmbeddings, int64_t y) {
  if (!c->failed())
    cpu::rope(c->f32(x), batch, seq, heads, headDim, theta, c->f32(y),
              {factor, lowFreqFactor, highFreqFactor,
               originalMaxPositionEmbeddings});
}

inline void ropeGrad(StepContext *c, int64_t dy, int64_t batch, int64_t seq,
                     int64_t heads, int64_t headDim, float theta, float factor,
                     float lowFreqFactor, float highFreqFactor,
                     int64_t originalMaxPositionEmbeddings, int64_t dx) {
  if (!c->failed())
    cpu::ropeBackward(c->f32(dy), batch, seq, heads, headDim, theta,
                      c->f32(dx),
                      {factor, lowFreqFactor, highFreqFactor,
                       originalMaxPositionEmbeddings});
}

inline void attention(StepContext *c, int64_t q, int64_t k, int64_t v,
                      int64_t batch, int64_t seq, int64_t heads,
                      int64_t kvHeads, int64_t headDim, float scale,
                      int64_t out, int64_t lse) {
  if (!c->failed())
    cpu::attention(c->f32(q), c->f32(k), c->f32(v), batch, seq, heads,
                   kvHeads, headDim, scale, c->f32(out), c->f32(lse));
}

/// The backward from the forward's saved log-sum-exp.
inline void attentionGrad(StepContext *c, int64_t q, int64_t k, int64_t v,
                          int64_t out, int64_t lse, int64_t dout,
                          int64_t batch, int64_t seq, int64_t heads,
                          int64_t kvHeads, int64_t headDim, float scale,
                          int64_t dq, int64_t dk, int64_t dv) {
  if (!c->failed())
    cpu::attentionBackward(c->f32(q), c->f32(k), c->f32(v), c->f32(out),
                           c->f32(lse), c->f32(dout), batch, seq, heads,
                           kvHeads, headDim, scale, c->f32(dq), c->f32(dk),
                           c->f32(dv));
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

inline cpu::NF4View nf4View(StepContext *c, const NF4Parts &w) {
  return cpu::NF4View{c->u8(w.codes), c->f32(w.absmax), w.rows, w.cols,
                      w.blockSize};
}

inline void nf4Linear(StepContext *c, int64_t x, const NF4Parts &weight,
                      int64_t M, int64_t y) {
  if (!c->failed())
    cpu::nf4Linear(c->f32(x), nf4View(c, weight), M, c->f32(y));
}

inline void nf4LinearGradInput(StepContext *c, int64_t dy,
                               const NF4Parts &weight, int64_t M, int64_t dx) {
  if (!c->failed())
    cpu::nf4LinearBackwardInput(c->f32(dy), nf4View(c, weight), M, 0.0f,
                                c->f32(dx));
}

/// A LoRA branch y = scale * (x A^T) B^T, alone or added onto the base
/// projection already in y (`accumulate`, lora_linear); `xa` is a
/// workspace of M * r floats.
inline void lora(StepContext *c, int64_t x, int64_t A, int64_t B, int64_t M,
                 int64_t N, int64_t K, int64_t r, float scale,
                 int64_t accumulate, int64_t xa, int64_t y) {
  if (c->failed())
    return;
  if (!accumulate)
    cpu::fill(c->f32(y), M * N, 0.0f);
  cpu::loraForward(c->f32(x), c->f32(A), c->f32(B), M, N, K, r, scale,
                   c->f32(xa), c->f32(y));
}

/// Gradients of the branch: dx, dA, dB are written, not accumulated.
inline void loraGrad(StepContext *c, int64_t x, int64_t A, int64_t B,
                     int64_t dy, int64_t M, int64_t N, int64_t K, int64_t r,
                     float scale, int64_t xa, int64_t dx, int64_t dA,
                     int64_t dB) {
  if (c->failed())
    return;
  // xa = x A^T again: cheaper to recompute (M x r) than to keep.
  cpu::gemm(false, true, M, r, K, 1.0f, c->f32(x), K, c->f32(A), K, 0.0f,
            c->f32(xa), r);
  cpu::fill(c->f32(dx), M * K, 0.0f);
  cpu::fill(c->f32(dA), r * K, 0.0f);
  cpu::fill(c->f32(dB), N * r, 0.0f);
  cpu::loraBackward(c->f32(x), c->f32(A), c->f32(B), c->f32(xa), c->f32(dy),
                    M, N, K, r, scale, c->f32(dA), c->f32(dB), c->f32(dx));
}

// --- LoRA dropout --------------------------------------------------------------
//
// Masks come from runtime/step/Dropout.h, the function the GPU draws them
// with too.

/// out = dropout(x): dropped elements are zero, kept ones scaled by 1/(1-p).
/// `out` may be `x`.
inline void applyDropout(const float *x, int64_t n, float p, uint32_t seed,
                         uint32_t stream, float *out) {
  float keep = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < n; ++i)
    out[i] = dropout::dropped(seed, stream, uint64_t(i), p) ? 0.0f
                                                            : x[i] * keep;
}

inline uint32_t dropoutSeed(StepContext *c, int64_t seed) {
  return uint32_t(*c->i32(seed));
}

/// The LoRA branch on dropout(x), alone or added to y; `dropped` is a
/// workspace of M * K floats.
inline void loraDropout(StepContext *c, int64_t x, int64_t A, int64_t B,
                        int64_t M, int64_t N, int64_t K, int64_t r,
                        float scale, float p, int64_t stream, int64_t seed,
                        int64_t accumulate, int64_t dropped, int64_t xa,
                        int64_t y) {
  if (c->failed())
    return;
  applyDropout(c->f32(x), M * K, p, dropoutSeed(c, seed), uint32_t(stream),
               c->f32(dropped));
  lora(c, dropped, A, B, M, N, K, r, scale, accumulate, xa, y);
}

/// Gradients of a branch with dropout: the mask is redrawn; dx passes
/// through it.
inline void loraGradDropout(StepContext *c, int64_t x, int64_t A, int64_t B,
                            int64_t dy, int64_t M, int64_t N, int64_t K,
                            int64_t r, float scale, float p, int64_t stream,
                            int64_t seed, int64_t dropped, int64_t xa,
                            int64_t dx, int64_t dA, int64_t dB) {
  if (c->failed())
    return;
  uint32_t seedValue = dropoutSeed(c, seed);
  applyDropout(c->f32(x), M * K, p, seedValue, uint32_t(stream),
               c->f32(dropped));
  loraGrad(c, dropped, A, B, dy, M, N, K, r, scale, xa, dx, dA, dB);
  applyDropout(c->f32(dx), M * K, p, seedValue, uint32_t(stream), c->f32(dx));
}

// --- Loss -----------------------------------------------------------------------

/// Labels shifted by one within each row into `shifted`: position t
/// predicts label t + 1; the last position of a row has no target.
inline void shiftLabels(const int32_t *labels, int64_t batch, int64_t seq,
                        int32_t ignoreIndex, int32_t *shifted) {
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t + 1 < seq; ++t)
      shifted[b * seq + t] = labels[b * seq + t + 1];
    shifted[b * seq + seq - 1] = ignoreIndex;
  }
}

inline void crossEntropy(StepContext *c, int64_t logits, int64_t labels,
                         int64_t batch, int64_t seq, int64_t vocab,
                         int64_t ignoreIndex, int64_t shifted, int64_t loss) {
  if (c->failed())
    return;
  shiftLabels(c->i32(labels), batch, seq, int32_t(ignoreIndex),
              c->i32(shifted));
  Expected<int64_t> count =
      cpu::crossEntropy(c->f32(logits), c->i32(shifted), batch * seq, vocab,
                        int32_t(ignoreIndex), c->f32(loss));
  if (!count)
    c->fail(count.message());
}

inline void crossEntropyGrad(StepContext *c, int64_t logits, int64_t labels,
                             int64_t dloss, int64_t batch, int64_t seq,
                             int64_t vocab, int64_t ignoreIndex,
                             int64_t shifted, int64_t dlogits) {
  if (c->failed())
    return;
  int32_t *targets = c->i32(shifted);
  shiftLabels(c->i32(labels), batch, seq, int32_t(ignoreIndex), targets);
  int64_t count = 0;
  for (int64_t i = 0; i < batch * seq; ++i)
    count += targets[i] != int32_t(ignoreIndex);
  cpu::crossEntropyBackward(c->f32(logits), targets, batch * seq, vocab,
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

#include "runtime/step/CheckStepKernels.inc"
#undef QLORA_STEP_KERNEL_TABLE
#undef QLORA_STEP_KERNEL_SPECIFIER

} // namespace qlora::step

/// Exports `impl` (void(StepContext *)) as the C entry point `symbol`.
#define QLORA_STEP_ENTRY(symbol, impl)                                         \
  extern "C" int symbol(QLoRAStepContext *context) {                           \
    return ::qlora::step::runEntry(context, impl);                             \
  }
