//===- Linear.cpp - Dense, NF4 and LoRA linear layers -----------------------===//
//
// Weights follow HF's layout W [out, in]. The dense linear (lm_head) is fp32.
// The NF4 linears follow bitsandbytes' Linear4bit / MatMul4Bit with compute
// dtype bf16: the GEMM reads x (or dy) rounded to bf16 and the weight
// dequantized to bf16 while packing its panels, accumulates in fp32, and the
// result is rounded to bf16. The LoRA branch is PEFT's, all fp32.
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/GemmInternal.h"
#include "runtime/cpu/Kernels.h"

#include "runtime/Float16.h"
#include "runtime/Parallel.h"

#include <vector>

namespace qlora {
namespace cpu {

using detail::Operand;

void linear(const float *x, const float *weight, int64_t M, int64_t N,
            int64_t K, float *y) {
  gemm(false, true, M, N, K, 1.0f, x, K, weight, K, 0.0f, y, N);
}

void linearBackwardInput(const float *dy, const float *weight, int64_t M,
                         int64_t N, int64_t K, float beta, float *dx) {
  gemm(false, false, M, K, N, 1.0f, dy, N, weight, K, beta, dx, K);
}

void nf4Linear(const float *x, const NF4View &w, int64_t M, float *y) {
  int64_t N = w.rows, K = w.cols;
  // y = bf16(x) * W^T: op(B)(p, j) = W[j][p], the weight read transposed.
  detail::gemm(M, N, K, 1.0f, Operand::dense(x, K, false, /*roundBf16=*/true),
               Operand::weight(w, /*trans=*/true), 0.0f, y, N);
  detail::roundToBf16(y, M * N);
}

void nf4LinearBackwardInput(const float *dy, const NF4View &w, int64_t M,
                            float beta, float *dx) {
  int64_t N = w.rows, K = w.cols;
  Operand lhs = Operand::dense(dy, N, false, /*roundBf16=*/true);
  Operand rhs = Operand::weight(w, /*trans=*/false); // op(B)(p, j) = W[p][j]
  if (beta == 0.0f) {
    detail::gemm(M, K, N, 1.0f, lhs, rhs, 0.0f, dx, K);
    detail::roundToBf16(dx, M * K);
    return;
  }
  // The product is rounded to bf16 before it meets dx (torch's ToCopy
  // backward then the fp32 gradient sum), so it needs its own buffer.
  std::vector<float> product(size_t(M * K));
  detail::gemm(M, K, N, 1.0f, lhs, rhs, 0.0f, product.data(), K);
  parallelFor(0, M * K, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      dx[i] = beta * dx[i] + bf16ToFloat(floatToBf16(product[size_t(i)]));
  });
}

void loraForward(const float *x, const float *A, const float *B, int64_t M,
                 int64_t N, int64_t K, int64_t r, float scale, float *xa,
                 float *y) {
  gemm(false, true, M, r, K, 1.0f, x, K, A, K, 0.0f, xa, r);
  // PEFT: result + lora_B(xa) * scaling, i.e. y + scale * (xa B^T).
  gemm(false, true, M, N, r, scale, xa, r, B, r, 1.0f, y, N);
}

void loraBackward(const float *x, const float *A, const float *B,
                  const float *xa, const float *dy, int64_t M, int64_t N,
                  int64_t K, int64_t r, float scale, float *dA, float *dB,
                  float *dx) {
  // g = scale * dy B: the gradient reaching xa, shared by dA and dx.
  std::vector<float> g(size_t(M * r));
  gemm(false, false, M, r, N, scale, dy, N, B, r, 0.0f, g.data(), r);
  gemm(true, false, r, K, M, 1.0f, g.data(), r, x, K, 1.0f, dA, K);
  gemm(true, false, N, r, M, scale, dy, N, xa, r, 1.0f, dB, r);
  gemm(false, false, M, K, r, 1.0f, g.data(), r, A, K, 1.0f, dx, K);
}

} // namespace cpu
} // namespace qlora
