//===- NF4MatmulPath.h - Which NF4 product strategy runs a shape ------------===//
//
// The measured choice among the NF4 forward products (the H200 figures in
// the README), as plain C++ without CUDA headers: the runtime's nf4Matmul
// and the compiler, which fixes the strategy per op ahead of time and
// records it in the manifest, decide from this one function.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>

namespace qlora::cuda {

/// The forward strategies the library chooses among (the fused kernel
/// joins when it is measured to win).
enum class NF4MatmulPath { Gemv, SmallM, DequantGemm };

/// The strategy for y = x · Wᵀ with M rows of x and W [rows, cols]: the
/// tensor-core small-M kernel up to 16 rows (faster than the CUDA-core GEMV
/// at every M measured) where K and the block size are multiples of 64 and
/// the weight fits its 32-bit offsets, the GEMV up to 8 rows where K is a
/// multiple of 8, dequantize + cuBLAS above and whenever there is an
/// epilogue (a residual or a LoRA term, which only that path applies).
inline NF4MatmulPath chooseNF4MatmulPath(int64_t M, int64_t rows,
                                         int64_t cols, int64_t blockSize,
                                         bool hasEpilogue) {
  if (hasEpilogue || M > 16)
    return NF4MatmulPath::DequantGemm;
  const bool offsetsFit = rows * cols < (int64_t(1) << 32);
  if (cols % 64 == 0 && blockSize % 64 == 0 && offsetsFit)
    return NF4MatmulPath::SmallM;
  if (M <= 8 && cols % 8 == 0)
    return NF4MatmulPath::Gemv;
  return NF4MatmulPath::DequantGemm;
}

/// The strategy's name in the manifest.
inline const char *nf4MatmulPathName(NF4MatmulPath path) {
  switch (path) {
  case NF4MatmulPath::Gemv:
    return "gemv";
  case NF4MatmulPath::SmallM:
    return "small_m";
  case NF4MatmulPath::DequantGemm:
    return "dequant_gemm";
  }
  return "?";
}

/// Bytes of the bf16 scratch dequantize + cuBLAS writes the weight into.
inline int64_t dequantScratchBytes(int64_t rows, int64_t cols) {
  return rows * cols * 2;
}

} // namespace qlora::cuda
