//===- Kernels.h - CPU reference kernels for a QLoRA training step ----------===//
//
// The CPU backend's kernels: emitted C++ calls them with raw pointers into one
// arena. Tensors are row-major and fp32 unless a signature says otherwise.
// They reproduce, within rounding, what the reference stack (bitsandbytes +
// PEFT + transformers after prepare_model_for_kbit_training) computes for a
// Llama QLoRA step: everything in fp32 except the frozen NF4 projections,
// which round their input to bf16, dequantize the weight to bf16, accumulate
// in fp32 and round the result to bf16.
//
// Conventions:
//   * "(=)" outputs are fully overwritten and never read (a NaN already there
//     does no harm); "+=" outputs accumulate, for gradient accumulation.
//   * Outputs never alias inputs unless a comment says they may.
//   * Kernels run on qlora::parallelFor's pool; the floating-point results do
//     not depend on the number of threads nor on the instruction set picked
//     for the GEMM (no FMA contraction, fixed summation orders).
//   * Only embedding and crossEntropy can fail (bad token ids / labels); the
//     others assume shapes that the compiler has already checked.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/RopeScaling.h"

#include <cstdint>

namespace qlora {
namespace cpu {

//===----------------------------------------------------------------------===//
// GEMM
//===----------------------------------------------------------------------===//

/// C[M,N] = alpha * op(A) * op(B) + beta * C, fp32, row-major with leading
/// dimensions. op(A) is M x K (A is K x M when transA), op(B) is K x N (B is
/// N x K when transB). beta == 0 overwrites C without reading it. Packed
/// panels, a register-tiled micro-kernel and the thread pool.
void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K,
          float alpha, const float *A, int64_t lda, const float *B,
          int64_t ldb, float beta, float *C, int64_t ldc);

/// The instruction sets the GEMM micro-kernel is compiled for (x86-64 only;
/// elsewhere everything is Generic). All give bit-identical results; the
/// choice only changes speed.
enum class Isa { Generic, Avx2, Avx512 };
/// The best instruction set this host supports.
Isa hostIsa();
/// The instruction set the GEMM uses now (hostIsa() unless pinned).
Isa gemmIsa();
/// Pins the GEMM to `isa`, capped at hostIsa(); tests use it to cover every
/// path. Not to be called while a kernel runs.
void setGemmIsa(Isa isa);
/// "generic", "avx2" or "avx512".
const char *isaName(Isa isa);

//===----------------------------------------------------------------------===//
// Embedding, norms, rope
//===----------------------------------------------------------------------===//

/// out[t, :] = table[ids[t], :] for t < tokens; table is [vocab, hidden].
/// Fails, naming the id and its position, when an id is outside [0, vocab);
/// nothing is written then.
Status embedding(const float *table, const int32_t *ids, int64_t tokens,
                 int64_t hidden, int64_t vocab, float *out);

/// HF LlamaRMSNorm in fp32: y = weight * (x * rsqrt(mean(x^2) + eps)) per row
/// of x [rows, hidden]. y (=) may alias x.
void rmsNorm(const float *x, const float *weight, int64_t rows, int64_t hidden,
             float eps, float *y);
/// dx (=) of rmsNorm for upstream dy; the weight is frozen, so no weight
/// gradient. dx may alias dy.
void rmsNormBackward(const float *x, const float *weight, const float *dy,
                     int64_t rows, int64_t hidden, float eps, float *dx);

/// HF Llama rotary embedding with rotate_half, positions 0..seq-1 in every
/// batch row. x, y: [batch, seq, heads * headDim], headDim even.
/// inv_freq = ropeInverseFrequencies(headDim, theta, scaling) and angle =
/// pos * inv_freq in fp32 as torch computes them; y = x * cos +
/// rotate_half(x) * sin, where rotate_half(x) = cat(-x2, x1) over the
/// halves of each head. y (=) must not alias x.
void rope(const float *x, int64_t batch, int64_t seq, int64_t heads,
          int64_t headDim, float theta, float *y,
          const RopeScaling &scaling = {});
/// dx (=) of rope: the rotation by the opposite angle. dx must not alias dy.
void ropeBackward(const float *dy, int64_t batch, int64_t seq, int64_t heads,
                  int64_t headDim, float theta, float *dx,
                  const RopeScaling &scaling = {});

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

/// Causal softmax(q k^T * scale) v with GQA: query head h reads kv head
/// h / (heads / kvHeads). q, out: [batch, seq, heads * headDim]; k, v:
/// [batch, seq, kvHeads * headDim]. out (=) and lse (=) [batch, heads, seq],
/// the natural-log sum of exp of the scaled scores, saved for the backward.
/// Flash-style: tiles of queries and keys with an online softmax, so no
/// seq x seq matrix exists beyond one tile. fp32.
void attention(const float *q, const float *k, const float *v, int64_t batch,
               int64_t seq, int64_t heads, int64_t kvHeads, int64_t headDim,
               float scale, float *out, float *lse);
/// dq (=), dk (=), dv (=) of attention for upstream dout, from the forward's
/// out and lse. dk and dv sum over the query heads sharing a kv head.
/// Recomputes the probabilities tile by tile in two passes (keys-major for
/// dk/dv, queries-major for dq) so that threads never write the same rows.
void attentionBackward(const float *q, const float *k, const float *v,
                       const float *out, const float *lse, const float *dout,
                       int64_t batch, int64_t seq, int64_t heads,
                       int64_t kvHeads, int64_t headDim, float scale,
                       float *dq, float *dk, float *dv);

//===----------------------------------------------------------------------===//
// Activations and elementwise
//===----------------------------------------------------------------------===//

/// out (=) = silu(gate) * up, silu(g) = g / (1 + exp(-g)). out may alias
/// gate or up.
void swiglu(const float *gate, const float *up, int64_t n, float *out);
/// dgate (=), dup (=) of swiglu for upstream dout.
void swigluBackward(const float *gate, const float *up, const float *dout,
                    int64_t n, float *dgate, float *dup);

/// out (=) = a + b; out may alias a or b.
void add(const float *a, const float *b, int64_t n, float *out);
/// acc += x.
void accumulate(float *acc, const float *x, int64_t n);
/// x *= factor.
void scale(float *x, int64_t n, float factor);
/// x (=) = value.
void fill(float *x, int64_t n, float value);

//===----------------------------------------------------------------------===//
// Linear layers
//===----------------------------------------------------------------------===//

/// Dense frozen linear, HF layout W [N, K] (out, in): y[M,N] (=) x[M,K] W^T,
/// fp32 (lm_head).
void linear(const float *x, const float *weight, int64_t M, int64_t N,
            int64_t K, float *y);
/// dx[M,K] = beta * dx + dy[M,N] W. beta == 0 does not read dx.
void linearBackwardInput(const float *dy, const float *weight, int64_t M,
                         int64_t N, int64_t K, float beta, float *dx);

/// A frozen NF4 weight W [rows = N (out), cols = K (in)], ready to
/// dequantize: packed codes (first element of each byte in the high nibble,
/// as bitsandbytes packs them) and one fp32 absmax per `blockSize` elements
/// of the flattened weight (the double-quantized constants already decoded,
/// NF4Weight::blockAbsmax()).
struct NF4View {
  const uint8_t *packed;
  const float *absmax;
  int64_t rows /*N*/, cols /*K*/, blockSize;
};

/// bnb Linear4bit with compute dtype bf16: y[M,N] (=) bf16(bf16(x) W^T)
/// where W's elements are bf16(code * absmax), products accumulate in fp32
/// and the result is rounded to bf16 (stored as fp32). The weight is
/// dequantized panel by panel inside the GEMM's packing, never as a whole
/// (a per-call table of 16 decoded values per block makes that a lookup).
void nf4Linear(const float *x, const NF4View &w, int64_t M, float *y);
/// bnb MatMul4Bit's input gradient: dx[M,K] = beta * dx +
/// bf16(bf16(dy) W) in fp32. beta == 0 does not read dx.
void nf4LinearBackwardInput(const float *dy, const NF4View &w, int64_t M,
                            float beta, float *dx);

/// PEFT LoRA branch: y += scale * (x A^T) B^T with A [r, K], B [N, r], fp32.
/// Saves xa (=) = x A^T [M, r] for the backward.
void loraForward(const float *x, const float *A, const float *B, int64_t M,
                 int64_t N, int64_t K, int64_t r, float scale, float *xa,
                 float *y);
/// With g = scale * dy B [M, r]: dA += g^T x, dB += scale * dy^T xa,
/// dx += g A. All three accumulate (gradient accumulation, and dx also
/// collects the base projection's and the other branches' gradients).
void loraBackward(const float *x, const float *A, const float *B,
                  const float *xa, const float *dy, int64_t M, int64_t N,
                  int64_t K, int64_t r, float scale, float *dA, float *dB,
                  float *dx);

//===----------------------------------------------------------------------===//
// Loss and optimizer
//===----------------------------------------------------------------------===//

/// Causal-LM cross-entropy on already-shifted labels: *loss (=) is the mean
/// over rows whose label is not ignoreIndex of lse(logits[row]) -
/// logits[row, label]. Returns the number of counted rows; when it is 0 the
/// loss is 0 (torch would give NaN). A label outside [0, vocab) other than
/// ignoreIndex fails, naming the row and label, and writes nothing.
Expected<int64_t> crossEntropy(const float *logits, const int32_t *labels,
                               int64_t rows, int64_t vocab,
                               int32_t ignoreIndex, float *loss);
/// dlogits (=) = dloss * (softmax(logits) - onehot(label)) / count, with
/// zero rows for ignored labels (all zero when count is 0). Labels must have
/// passed crossEntropy's check.
void crossEntropyBackward(const float *logits, const int32_t *labels,
                          int64_t rows, int64_t vocab, int32_t ignoreIndex,
                          float dloss, int64_t count, float *dlogits);

/// One torch.optim.AdamW step (decoupled weight decay), step counted from 1
/// (a smaller value acts as 1), in torch's order of fp32 operations:
///   p *= 1 - lr*wd; m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g*g;
///   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
void adamw(float *param, const float *grad, float *m, float *v, int64_t n,
           float lr, float beta1, float beta2, float eps, float weightDecay,
           int64_t step);

/// sum(x^2) accumulated in double over fixed blocks, so the result does not
/// depend on the thread count (for the global gradient norm).
double sumOfSquares(const float *x, int64_t n);

} // namespace cpu
} // namespace qlora
