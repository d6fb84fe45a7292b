//===- TrainingKernels.h - Norm, RoPE, SwiGLU, loss and AdamW on the GPU ----===//
//
// Host entry points of the CUDA kernels a training step needs around the NF4
// products. The kernels stay private to Norm.cu, Rope.cu, Activation.cu,
// CrossEntropy.cu and Optimizer.cu. They compute what runtime/cpu/Kernels.h
// computes (same formulas, same fp32 operation order where it matters), with
// bf16 activations passed as uint16_t bit patterns and fp32 accumulation.
//
// Every entry point is asynchronous on `stream` and returns launch errors,
// except crossEntropy() and checkCrossEntropy(), which synchronize to report
// bad labels. Shape arguments are not checked against buffer sizes (the
// compiler has checked them); the entries check only what the kernels need.
// Any alignment works: 16-byte vector loads are used where the pointers
// allow them, scalar loads elsewhere.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/RopeScaling.h"
#include "runtime/cuda/Workspaces.h"

#include <cstdint>
#include <cuda_runtime_api.h>

namespace qlora::cuda {

//===----------------------------------------------------------------------===//
// RMSNorm
//===----------------------------------------------------------------------===//

/// HF LlamaRMSNorm: y = weight * (x * rsqrt(mean(x^2) + eps)) per row of x
/// [rows, hidden]; x, weight, y bf16. rstd (=) [rows] fp32 keeps
/// rsqrt(mean(x^2) + eps) for the backward. y may alias x.
Status rmsNormForward(const uint16_t *x, const uint16_t *weight, int64_t rows,
                      int64_t hidden, float eps, uint16_t *y, float *rstd,
                      cudaStream_t stream);

/// dx (=) of rmsNormForward for upstream dy, from the forward's rstd; the
/// weight is frozen in QLoRA, so there is no weight gradient. bf16 x, weight,
/// dy and dx; dx may alias dy.
Status rmsNormBackward(const uint16_t *x, const uint16_t *weight,
                       const uint16_t *dy, const float *rstd, int64_t rows,
                       int64_t hidden, uint16_t *dx, cudaStream_t stream);

//===----------------------------------------------------------------------===//
// RoPE
//===----------------------------------------------------------------------===//

/// The largest headDim the RoPE kernels take (inv_freq travels as a kernel
/// argument).
constexpr int64_t kMaxRopeHeadDim = 512;

/// HF Llama rotary embedding with rotate_half, positions 0..seq-1 in every
/// batch row, x and y bf16 [batch, seq, heads * headDim]:
/// y = x * cos + rotate_half(x) * sin. inv_freq is cpu::rope's
/// (ropeInverseFrequencies on the host); angle = pos * inv_freq[i] in fp32,
/// then sincosf. headDim must be even and at most kMaxRopeHeadDim. y (=)
/// may alias x.
Status ropeForward(const uint16_t *x, int64_t batch, int64_t seq,
                   int64_t heads, int64_t headDim, float theta, uint16_t *y,
                   cudaStream_t stream, const RopeScaling &scaling = {});

/// dx (=) of ropeForward: the rotation by the opposite angle. dx may alias
/// dy.
Status ropeBackward(const uint16_t *dy, int64_t batch, int64_t seq,
                    int64_t heads, int64_t headDim, float theta, uint16_t *dx,
                    cudaStream_t stream, const RopeScaling &scaling = {});

//===----------------------------------------------------------------------===//
// SwiGLU
//===----------------------------------------------------------------------===//

/// out (=) = silu(gate) * up over n bf16 elements, silu(g) = g / (1 +
/// exp(-g)) in fp32. out may alias gate or up.
Status swigluForward(const uint16_t *gate, const uint16_t *up, int64_t n,
                     uint16_t *out, cudaStream_t stream);

/// dgate (=), dup (=) of swigluForward for upstream dout, bf16. The outputs
/// may alias any of the inputs (each element is read before it is written).
Status swigluBackward(const uint16_t *gate, const uint16_t *up,
                      const uint16_t *dout, int64_t n, uint16_t *dgate,
                      uint16_t *dup, cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Cross-entropy
//===----------------------------------------------------------------------===//

/// int32 words of the device status that the cross-entropy kernels write:
/// [0] the number of counted rows, [1] the first row whose label is invalid
/// (-1 when none), [2] that row's label, [3] unused.
constexpr int64_t kCrossEntropyStatusWords = 4;

/// Causal-LM cross-entropy on already-shifted labels over fp32 logits
/// [rows, vocab] (fp32 in this first version: the lm_head output in fp32, as
/// the reference stack upcasts it), fused with its backward. Three kernels:
///  * labels are counted and checked into `status` (kCrossEntropyStatusWords
///    int32 in device memory);
///  * one block per row: an online max / sum of exp gives the row's lse,
///    rowLoss[row] (=) = lse - logits[row, label], and
///    dlogits[row] (=) = dloss * (softmax - onehot(label)) / count, zero for
///    ignored rows;
///  * *loss (=) (device) = the mean of rowLoss over counted rows, summed in a
///    fixed order (0 when no row counts).
/// dlogits may alias logits (the backward in place). Asynchronous: a row with
/// a label outside [0, vocab) other than ignoreIndex is only recorded in
/// `status` (its dlogits row and rowLoss are written as zeros); call
/// checkCrossEntropy() to turn that into an error. rowLoss is [rows] fp32.
Status crossEntropyAsync(const float *logits, const int32_t *labels,
                         int64_t rows, int64_t vocab, int32_t ignoreIndex,
                         float dloss, float *dlogits, float *rowLoss,
                         float *loss, int32_t *status, cudaStream_t stream);

/// Synchronizes `stream` and reads `status` back: the number of counted rows,
/// or an error naming the first row with an invalid label and that label.
Expected<int64_t> checkCrossEntropy(const int32_t *status, int64_t vocab,
                                    int32_t ignoreIndex, cudaStream_t stream);

/// crossEntropyAsync then checkCrossEntropy. Synchronizes `stream`. On an
/// error the outputs are unspecified.
Expected<int64_t> crossEntropy(const float *logits, const int32_t *labels,
                               int64_t rows, int64_t vocab,
                               int32_t ignoreIndex, float dloss,
                               float *dlogits, float *rowLoss, float *loss,
                               int32_t *status, cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

/// One torch.optim.AdamW step on fp32 master weights, in place on param, m
/// and v (n elements each), step counted from 1 (a smaller value acts as 1).
/// The scalar coefficients are formed on the host in double exactly as
/// cpu::adamw forms them, and every element follows cpu::adamw's fp32
/// operation order without FMA contraction, so the results are the CPU's bit
/// for bit.
Status adamw(float *param, const float *grad, float *m, float *v, int64_t n,
             float lr, float beta1, float beta2, float eps, float weightDecay,
             int64_t step, cudaStream_t stream);

/// *out (=) (device, fp32) = sum(x^2) over n fp32 elements, accumulated in
/// fp64: a fixed grid of kSumOfSquaresPartials blocks writes one partial each
/// into `partials` (device, kSumOfSquaresPartials doubles), and one block
/// adds them in a fixed tree. The order depends only on n, so the result is
/// deterministic on any GPU (global gradient-norm clipping).
Status sumOfSquares(const float *x, int64_t n, double *partials, float *out,
                    cudaStream_t stream);

/// x *= *factor over n fp32 elements, the factor read from device memory
/// (the clipping coefficient computed on the device, no host round trip).
Status scaleByDeviceScalar(float *x, int64_t n, const float *factor,
                           cudaStream_t stream);

/// adamw() with the learning rate and the step read from the device, so
/// that a step captured as a CUDA graph replays with each call's values; the
/// coefficients are formed as adamw() forms them, in double, on the device.
/// `compute`, when not null, receives the updated parameters in bf16 (the
/// copy the products read).
Status adamwOnDevice(float *param, const float *grad, float *m, float *v,
                     int64_t n, const float *lr, const float *step,
                     float beta1, float beta2, float eps, float weightDecay,
                     uint16_t *compute, cudaStream_t stream);

/// *out (=) = min(1, maxNorm / (sqrt(*total) + 1e-6)): clip_grad_norm_'s
/// factor from the summed squares, on the device.
Status clipCoefficient(const float *total, float maxNorm, float *out,
                       cudaStream_t stream);

/// *counter += the number of NaN or infinite values among n fp32 values.
Status countNonFinite(const float *x, int64_t n, unsigned long long *counter,
                      cudaStream_t stream);

} // namespace qlora::cuda
