//===- AttentionKernels.h - Causal GQA flash attention on the GPU -----------===//
//
// Host entry points of the FlashAttention-2-style kernels in Attention.cu:
// causal softmax(q kᵀ * scale) v with grouped-query attention, forward and
// backward, on tensor cores (mma.sync m16n8k16, bf16 operands, fp32
// accumulation). They compute what cpu::attention and cpu::attentionBackward
// compute (runtime/cpu/Kernels.h): key j is visible to query i when j <= i,
// query head h reads kv head h / (heads / kvHeads), and lse is the
// natural-log sum of exp of the scaled scores of each query row. No seq x seq
// matrix is ever stored in global memory.
//
// Tensors are bf16 bit patterns (uint16_t) in the layouts of the CPU
// reference: q, out, dout, dq [batch, seq, heads * headDim]; k, v, dk, dv
// [batch, seq, kvHeads * headDim]; lse fp32 [batch, heads, seq]. headDim must
// be 64 or 128, heads a multiple of kvHeads, any seq >= 1 and any batch; the
// bf16 tensors must be 16-byte aligned (cudaMalloc'ed buffers are). Every
// entry is asynchronous on `stream` and reports argument and launch errors.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/cuda/Workspaces.h"

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

namespace qlora::cuda {

/// out (=) and lse (=) of causal attention. One CTA per (query block of 64,
/// head, batch row) with an online softmax over key blocks of 64; lse is
/// saved for attentionBackward.
Status attentionForward(const uint16_t *q, const uint16_t *k,
                        const uint16_t *v, int64_t batch, int64_t seq,
                        int64_t heads, int64_t kvHeads, int64_t headDim,
                        float scale, uint16_t *out, float *lse,
                        cudaStream_t stream);

// attentionBackwardScratchBytes() sizes the fp32 workspace of
// attentionBackward (Workspaces.h, without CUDA, for the compiler too):
//  * [0, batch*seq*heads*headDim) floats: the dq accumulator, laid out as
//    dq (zeroed, then summed into with fp32 atomics, then scaled and
//    rounded into dq);
//  * then batch*heads*seq floats: D = rowsum(dout o out) per query row,
//    laid out as lse;
//  * when a GQA shape gives too few CTAs to fill the GPU and the group's
//    query heads are split over several CTAs (attentionBackwardSplits()),
//    from the next 16-byte boundary: each split's fp32 partial dk and dv
//    (2 * splits * batch*seq*kvHeads*headDim floats).

/// dq (=), dk (=), dv (=) of attentionForward for upstream dout, from the
/// forward's out and lse; dk and dv sum over the query heads that share a kv
/// head. Four launches: a memset of the dq accumulator, D = rowsum(dout o
/// out), one CTA per (key block of 64, kv head, batch row) that recomputes
/// the probabilities and keeps dk and dv in registers over every query head
/// of its group (dq goes to `scratch` through fp32 atomics), and the
/// conversion of the accumulator to bf16. Where that leaves fewer than 1024
/// CTAs, the group's query heads are split over several CTAs whose fp32
/// partial dk and dv a fifth launch adds in a fixed order (`splits`: 0 for
/// attentionBackwardSplits(), else a divisor of heads / kvHeads; the
/// scratch must be sized for the same value). dk and dv are deterministic;
/// dq is not bit-for-bit reproducible, since the order of the atomic fp32
/// additions varies. `scratch` is device memory of attentionBackwardScratchBytes(),
/// 16-byte aligned; its contents on entry do not matter.
Status attentionBackward(const uint16_t *q, const uint16_t *k,
                         const uint16_t *v, const uint16_t *out,
                         const float *lse, const uint16_t *dout, int64_t batch,
                         int64_t seq, int64_t heads, int64_t kvHeads,
                         int64_t headDim, float scale, void *scratch,
                         uint16_t *dq, uint16_t *dk, uint16_t *dv,
                         cudaStream_t stream, int64_t splits = 0);

} // namespace qlora::cuda
