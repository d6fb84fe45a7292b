//===- CudnnAttention.h - Causal GQA attention through cuDNN's fused SDPA ---===//
//
// The same causal softmax(q kᵀ * scale) v as AttentionKernels.h, in the same
// layouts (q, out, dout, dq [batch, seq, heads * headDim]; k, v, dk, dv
// [batch, seq, kvHeads * headDim]; lse fp32 [batch, heads, seq], natural
// log), run by cuDNN's fused flash-attention engines: on the H200 they
// measured 460 / 330 TFLOP/s forward / backward at the Llama-7B shape where
// the built-in kernels reach 198 / 149.
//
// The graphs are cuDNN's backend operation graphs for scaled dot-product
// attention (two batched matmuls around a masked softmax that writes its
// log-sum-exp; the backward recomputes the probabilities from it), built
// once per shape and cached with their execution plans for the life of the
// process. A plan is built on a shape's first call; when that call is being
// captured into a CUDA graph, it is built with the thread's capture mode
// relaxed, as cuDNN allocates and loads kernels while it finalizes.
//
// Which implementation serves a call is QLORA_ATTENTION's choice: `auto`
// (the default) takes cuDNN where libcudnn.so.9 loads and supports the
// shape and the built-in kernels elsewhere; `cudnn` makes a shape cuDNN
// cannot run an error; `builtin` never loads cuDNN.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <cuda_runtime_api.h>
#include <string>

namespace qlora::cuda {

/// What QLORA_ATTENTION asks for (unset: Auto).
enum class AttentionChoice { Auto, Cudnn, Builtin };
Expected<AttentionChoice> attentionChoice();

/// The shape of one causal attention call.
struct AttentionShape {
  int64_t batch = 0, seq = 0, heads = 0, kvHeads = 0, headDim = 0;
  float scale = 0;
};

/// out (=) and lse (=) through cuDNN. `*ran` is false, with nothing
/// enqueued, where QLORA_ATTENTION lets the built-in kernels serve the call
/// instead (cuDNN absent, or the shape unsupported under `auto`).
Status cudnnAttentionForward(const uint16_t *q, const uint16_t *k,
                             const uint16_t *v, const AttentionShape &shape,
                             uint16_t *out, float *lse, cudaStream_t stream,
                             bool *ran);

/// dq (=), dk (=), dv (=) through cuDNN, from the forward's out and lse.
/// `dqAccumulator` is fp32 device memory of batch * seq * heads * headDim
/// floats (the head of attentionBackward's scratch), zeroed here. `*ran`
/// as for the forward.
Status cudnnAttentionBackward(const uint16_t *q, const uint16_t *k,
                              const uint16_t *v, const uint16_t *out,
                              const float *lse, const uint16_t *dout,
                              const AttentionShape &shape, float *dqAccumulator,
                              uint16_t *dq, uint16_t *dk, uint16_t *dv,
                              cudaStream_t stream, bool *ran);

/// One line on what serves `shape` (building its plans if need be): "cuDNN
/// 9.19.0 fused attention (workspace 0 B forward, 2.0 MiB backward)", or
/// "built-in kernels (" + why + ")".
std::string attentionImplementation(const AttentionShape &shape);

} // namespace qlora::cuda
