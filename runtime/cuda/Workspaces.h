//===- Workspaces.h - The scratch the GPU kernels need, by shape ------------===//
//
// Sizes of the device workspaces of the CUDA kernels, as plain C++ without
// CUDA headers: the kernels carve their scratch by these, and the compiler
// sizes the workspaces it places in a step's arena by the same functions.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstddef>
#include <cstdint>

namespace qlora::cuda {

//===----------------------------------------------------------------------===//
// Attention backward
//===----------------------------------------------------------------------===//

/// Keys per CTA of the attention backward (BackwardConfig<D>::kBc).
constexpr int64_t kAttentionBackwardKeyBlock = 64;
/// The CTA count below which the backward splits a kv head's query heads:
/// several waves of three CTAs an SM on an H200, so that the long causal key
/// blocks are spread out.
constexpr int64_t kAttentionBackwardTargetCtas = 1024;

/// How many CTAs share a kv head's query heads in attentionBackward by
/// default: the largest divisor of heads / kvHeads that keeps the dk / dv
/// kernel at most kAttentionBackwardTargetCtas CTAs, so 1 for MHA and for
/// large batch x seq. A function of the shape only.
inline int64_t attentionBackwardSplits(int64_t batch, int64_t seq,
                                       int64_t heads, int64_t kvHeads) {
  if (batch <= 0 || seq <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
    return 1;
  const int64_t group = heads / kvHeads;
  const int64_t ctas = (seq + kAttentionBackwardKeyBlock - 1) /
                       kAttentionBackwardKeyBlock * kvHeads * batch;
  int64_t splits = 1;
  for (int64_t d = 2; d <= group; ++d)
    if (group % d == 0 && ctas * d <= kAttentionBackwardTargetCtas)
      splits = d;
  return splits;
}

/// Floats of the attention backward's scratch before the split partials:
/// the dq accumulator and D, rounded up to 16 bytes for the partials'
/// vector accesses.
inline int64_t attentionBackwardPartialsOffset(int64_t batch, int64_t seq,
                                               int64_t heads,
                                               int64_t headDim) {
  return (batch * seq * heads * (headDim + 1) + 3) / 4 * 4;
}

/// Bytes of the fp32 workspace attentionBackward needs (layout in
/// AttentionKernels.h); `splits` 0 means attentionBackwardSplits().
inline size_t attentionBackwardScratchBytes(int64_t batch, int64_t seq,
                                            int64_t heads, int64_t kvHeads,
                                            int64_t headDim,
                                            int64_t splits = 0) {
  if (batch <= 0 || seq <= 0 || heads <= 0 || headDim <= 0 || kvHeads <= 0 ||
      heads % kvHeads != 0)
    return 0;
  if (splits == 0)
    splits = attentionBackwardSplits(batch, seq, heads, kvHeads);
  const int64_t partials =
      splits > 1 ? 2 * splits * batch * seq * kvHeads * headDim : 0;
  return size_t(attentionBackwardPartialsOffset(batch, seq, heads, headDim) +
                partials) *
         sizeof(float);
}

//===----------------------------------------------------------------------===//
// Reductions and the loss
//===----------------------------------------------------------------------===//

/// The fp64 partial sums sumOfSquares needs as workspace.
constexpr int64_t kSumOfSquaresPartials = 1024;

/// The workspace of the step's cross-entropy over `rows` positions: the
/// shifted labels (int32), each row's loss (fp32), and the count of
/// counted rows (int32), each from a 256-byte boundary.
struct CrossEntropyWorkspace {
  int64_t shiftedLabels = 0, rowLoss = 0, count = 0, bytes = 0;
  static CrossEntropyWorkspace forRows(int64_t rows) {
    auto align = [](int64_t bytes) { return (bytes + 255) / 256 * 256; };
    CrossEntropyWorkspace layout;
    layout.shiftedLabels = 0;
    layout.rowLoss = align(4 * rows);
    layout.count = layout.rowLoss + align(4 * rows);
    layout.bytes = layout.count + 256;
    return layout;
  }
};

/// The fused lm_head + loss (LmHeadLoss.h) holds one chunk of rows' bf16
/// logits at a time: as many rows as fit in kLmHeadChunkLogitBytes, a
/// multiple of 64 (at least 64, at most all rows). 64 MiB keeps the chunk's
/// products large (1024 x 32000 for Llama-2, 256 x 128256 for Llama-3).
constexpr int64_t kLmHeadChunkLogitBytes = int64_t(64) << 20;

inline int64_t lmHeadChunkRows(int64_t rows, int64_t vocab) {
  if (rows <= 0 || vocab <= 0)
    return 1;
  int64_t fit = kLmHeadChunkLogitBytes / (2 * vocab) / 64 * 64;
  fit = fit < 64 ? 64 : fit;
  return fit < rows ? fit : rows;
}

} // namespace qlora::cuda
