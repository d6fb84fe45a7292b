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
  return chooseNF4MatmulPath(M, weight.rows, weight.cols, weight.blockSize,
                             epilogue.residual || epilogue.lora);
}

SmallMTiling chooseSmallMTiling(const NF4DeviceWeight &weight,
                                int multiprocessors) {
  // Measured: 16 warps win only where the row tiles leave SMs short of a
  // second block and each of 16 warps holds a single stage (4096 x 4096);
  // elsewhere 8 warps, with more chunks each, are faster.
  const int64_t rowTiles = (weight.rows + 15) / 16;
  const bool fewTiles = rowTiles < 2 * int64_t(multiprocessors);
  const bool singleStage = weight.cols <= 16 * 4 * 64;
  return SmallMTiling{fewTiles && singleStage ? 16 : 8};
}

Status nf4Matmul(cublasHandle_t blas, const uint16_t *x, int64_t M,
                 const NF4DeviceWeight &weight, uint16_t *scratch, uint16_t *y,
                 cudaStream_t stream, const GemmEpilogue &epilogue) {
  if (M < 1)
    return makeError("nf4Matmul: expects M >= 1, got {}", M);
  switch (chooseNF4MatmulPath(M, weight, epilogue)) {
  case NF4MatmulPath::Gemv:
    return nf4Gemv(x, M, weight, y, stream);
  case NF4MatmulPath::SmallM: {
    Expected<int> multiprocessors = currentMultiprocessors();
    if (!multiprocessors)
      return multiprocessors.error();
    return nf4MatmulSmallM(x, M, weight, y, stream,
                           chooseSmallMTiling(weight, *multiprocessors));
  }
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
