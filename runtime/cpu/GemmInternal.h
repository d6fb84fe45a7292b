//===- GemmInternal.h - The GEMM driver behind gemm() and the linears -------===//
//
// Private to runtime/cpu. The driver reads its operands through the packing
// routines, so an operand can be a strided fp32 matrix, the same rounded to
// bf16 on the fly, or an NF4 weight dequantized panel by panel: the NF4
// linears reuse the blocked GEMM without materializing the weight.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/cpu/Kernels.h"

#include <cstdint>

namespace qlora {
namespace cpu {
namespace detail {

/// One GEMM operand X, read as the logical matrix op(X). For a dense
/// operand, op(X)(i, p) is data[i*ld + p], or data[p*ld + i] when
/// transposed. For an NF4 operand with logical weight W [rows, cols],
/// op(X)(i, p) is W[i][p], or W[p][i] when transposed; its elements are
/// bf16(code * absmax) as bitsandbytes' dequantize_4bit to bf16 yields them.
struct Operand {
  const float *data = nullptr;
  int64_t ld = 0;
  const NF4View *nf4 = nullptr;
  /// Filled in by the driver for an NF4 operand: 16 decoded values a block.
  const float *nf4Tables = nullptr;
  bool trans = false;
  /// Round dense elements to bf16 as they are packed (bnb's x.to(bf16)).
  bool roundBf16 = false;

  static Operand dense(const float *data, int64_t ld, bool trans,
                       bool roundBf16 = false) {
    Operand op;
    op.data = data;
    op.ld = ld;
    op.trans = trans;
    op.roundBf16 = roundBf16;
    return op;
  }
  static Operand weight(const NF4View &w, bool trans) {
    Operand op;
    op.nf4 = &w;
    op.trans = trans;
    return op;
  }
};

/// C[M,N] = alpha * op(A) op(B) + beta * C; beta == 0 never reads C.
void gemm(int64_t M, int64_t N, int64_t K, float alpha, const Operand &A,
          const Operand &B, float beta, float *C, int64_t ldc);

/// Rounds x[0, n) to bf16 values in place (multi-threaded).
void roundToBf16(float *x, int64_t n);

} // namespace detail
} // namespace cpu
} // namespace qlora
