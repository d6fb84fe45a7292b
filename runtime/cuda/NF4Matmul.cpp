//===- NF4Matmul.cpp - The library's choice of NF4 forward strategy ---------===//
//
// Host code only: picks among the forward products of NF4Kernels.h by the
// shape class, so that callers (the code generator, qlora-train) name one
// entry point and the crossovers live in one place.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/NF4Kernels.h"

namespace qlora::cuda {

NF4MatmulPath chooseNF4MatmulPath(int64_t M, const NF4DeviceWeight &weight,
                                  const GemmEpilogue &epilogue) {
  const bool hasEpilogue = epilogue.residual || epilogue.lora;
  if (hasEpilogue || M > 16)
    return NF4MatmulPath::DequantGemm;
  const int64_t K = weight.cols;
  // Measured: the tensor-core kernel beats the GEMV at every M; the GEMV
  // remains for K that is not a multiple of 64.
  if (K % 64 == 0 && weight.blockSize % 64 == 0)
    return NF4MatmulPath::SmallM;
  if (M <= 8 && K % 8 == 0)
    return NF4MatmulPath::Gemv;
  return NF4MatmulPath::DequantGemm;
}

Status nf4Matmul(cublasHandle_t blas, const uint16_t *x, int64_t M,
                 const NF4DeviceWeight &weight, uint16_t *scratch, uint16_t *y,
                 cudaStream_t stream, const GemmEpilogue &epilogue) {
  if (M < 1)
    return makeError("nf4Matmul: expects M >= 1, got {}", M);
  switch (chooseNF4MatmulPath(M, weight, epilogue)) {
  case NF4MatmulPath::Gemv:
    return nf4Gemv(x, M, weight, y, stream);
  case NF4MatmulPath::SmallM:
    return nf4MatmulSmallM(x, M, weight, y, stream);
  case NF4MatmulPath::DequantGemm:
    break;
  }
  if (!blas || !scratch)
    return makeError("nf4Matmul: M = {} takes dequantize + cuBLAS, which "
                     "needs a cuBLAS handle and a scratch of rows * cols bf16",
                     M);
  return nf4MatmulDequantGemm(blas, x, M, weight, scratch, y, stream,
                              epilogue);
}

} // namespace qlora::cuda
