//===- NF4Gemm.cu - Large-M NF4 products: dequantize, then tensor cores -----===//
//
// For large M the product is compute-bound, and a fast dequantization into a
// reused bf16 scratch (a few microseconds at memory bandwidth) followed by
// cuBLAS's tensor-core GEMM costs a few percent over bf16 cuBLAS. Row-major
// tensors are passed to column-major cuBLAS as their transposes.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/Gemm.h"
#include "runtime/cuda/NF4Kernels.h"

#include <cublas_v2.h>

#include <vector>

namespace qlora::cuda {

namespace {

Status checkLoraTerm(const LoraTerm &lora, const char *entry) {
  if (!lora.a || !lora.b || !lora.hidden || lora.rank < 1)
    return makeError("{}: a LoRA term needs lora_A, lora_B, a hidden scratch "
                     "and rank >= 1 (got rank {}{}{}{})",
                     entry, lora.rank, lora.a ? "" : ", no lora_A",
                     lora.b ? "" : ", no lora_B",
                     lora.hidden ? "" : ", no hidden scratch");
  return Status::ok();
}

/// Starts `out` [count elements] from the residual, unless the residual is
/// `out` itself; returns the beta with which the product adds to it.
Expected<float> startFromResidual(const uint16_t *residual, uint16_t *out,
                                  int64_t count, cudaStream_t stream) {
  if (!residual)
    return 0.0f;
  if (residual != out)
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(out, residual, size_t(count) * sizeof(uint16_t),
                        cudaMemcpyDeviceToDevice, stream));
  return 1.0f;
}

/// What both products do before their GEMMs: check the epilogue, dequantize
/// W into `scratch`, put cuBLAS on `stream` and start `out` [count] from the
/// residual. Returns the beta of the base product.
Expected<float> startProduct(const char *entry, cublasHandle_t blas,
                             const NF4DeviceWeight &weight, uint16_t *scratch,
                             uint16_t *out, int64_t count,
                             const GemmEpilogue &epilogue,
                             cudaStream_t stream) {
  if (epilogue.lora)
    QLORA_RETURN_IF_ERROR(checkLoraTerm(*epilogue.lora, entry));
  QLORA_RETURN_IF_ERROR(dequantizeNF4(weight, scratch, stream));
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas, stream));
  return startFromResidual(epilogue.residual, out, count, stream);
}

} // namespace

Status nf4MatmulDequantGemm(cublasHandle_t blas, const uint16_t *x, int64_t M,
                            const NF4DeviceWeight &weight, uint16_t *scratch,
                            uint16_t *y, cudaStream_t stream,
                            const GemmEpilogue &epilogue) {
  const int64_t N = weight.rows, K = weight.cols;
  Expected<float> beta = startProduct("nf4MatmulDequantGemm", blas, weight,
                                      scratch, y, M * N, epilogue, stream);
  if (!beta)
    return beta.error();
  QLORA_RETURN_IF_ERROR(
      gemmBf16NT(blas, M, N, K, 1.0f, x, scratch, *beta, y));
  if (const LoraTerm *lora = epilogue.lora) {
    // hidden [M, r] = in · Aᵀ; y += scale · hidden · Bᵀ.
    QLORA_RETURN_IF_ERROR(gemmBf16NT(
        blas, M, lora->rank, K, 1.0f, lora->input ? lora->input : x, lora->a,
        0.0f, lora->hidden));
    QLORA_RETURN_IF_ERROR(gemmBf16NT(
        blas, M, N, lora->rank, lora->scale, lora->hidden, lora->b, 1.0f, y));
  }
  return Status::ok();
}

namespace {

/// The side stream and events of the pipelined product, made once per host
/// thread.
struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr;
  std::vector<cudaEvent_t> ready;
};

Expected<SideStream *> sideStream(int panels) {
  thread_local SideStream side;
  if (!side.stream) {
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaStreamCreateWithFlags(&side.stream, cudaStreamNonBlocking));
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaEventCreateWithFlags(&side.start, cudaEventDisableTiming));
  }
  while (int(side.ready.size()) < panels) {
    cudaEvent_t event;
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    side.ready.push_back(event);
  }
  return &side;
}

} // namespace

Status nf4MatmulDequantGemmPipelined(cublasHandle_t blas, const uint16_t *x,
                                     int64_t M, const NF4DeviceWeight &weight,
                                     uint16_t *scratch, uint16_t *y,
                                     cudaStream_t stream, int panels) {
  const int64_t N = weight.rows, K = weight.cols;
  if (panels < 1 || K % 8 != 0)
    return nf4MatmulDequantGemm(blas, x, M, weight, scratch, y, stream);
  Expected<SideStream *> side = sideStream(panels);
  if (!side)
    return side.error();
  // The side stream starts after everything already queued on `stream`
  // (the scratch may still be read by an earlier product).
  QLORA_CUDA_RETURN_IF_ERROR(cudaEventRecord((*side)->start, stream));
  QLORA_CUDA_RETURN_IF_ERROR(
      cudaStreamWaitEvent((*side)->stream, (*side)->start, 0));
  std::vector<int64_t> bounds(panels + 1);
  for (int p = 0; p <= panels; ++p)
    bounds[p] = N * p / panels;
  for (int p = 0; p < panels; ++p) {
    QLORA_RETURN_IF_ERROR(dequantizeNF4Rows(weight, bounds[p], bounds[p + 1],
                                            scratch, (*side)->stream));
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaEventRecord((*side)->ready[p], (*side)->stream));
  }
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas, stream));
  const float alpha = 1.0f, beta = 0.0f;
  for (int p = 0; p < panels; ++p) {
    int rows = int(bounds[p + 1] - bounds[p]);
    if (rows == 0)
      continue;
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaStreamWaitEvent(stream, (*side)->ready[p], 0));
    QLORA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
        blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, int(M), int(K), &alpha,
        scratch + bounds[p] * K, CUDA_R_16BF, int(K), x, CUDA_R_16BF, int(K),
        &beta, y + bounds[p], CUDA_R_16BF, int(N), CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT));
  }
  return Status::ok();
}

Status nf4MatmulGradInput(cublasHandle_t blas, const uint16_t *dy, int64_t M,
                          const NF4DeviceWeight &weight, uint16_t *scratch,
                          uint16_t *dx, cudaStream_t stream,
                          const GemmEpilogue &epilogue) {
  const int64_t N = weight.rows, K = weight.cols;
  Expected<float> beta = startProduct("nf4MatmulGradInput", blas, weight,
                                      scratch, dx, M * K, epilogue, stream);
  if (!beta)
    return beta.error();
  QLORA_RETURN_IF_ERROR(
      gemmBf16NN(blas, M, K, N, 1.0f, dy, scratch, *beta, dx));
  if (const LoraTerm *lora = epilogue.lora) {
    // hidden [M, r] = dY · B; dX += scale · hidden · A.
    QLORA_RETURN_IF_ERROR(gemmBf16NN(blas, M, lora->rank, N, 1.0f, dy,
                                          lora->b, 0.0f, lora->hidden));
    QLORA_RETURN_IF_ERROR(gemmBf16NN(blas, M, K, lora->rank, lora->scale,
                                          lora->hidden, lora->a, 1.0f, dx));
  }
  return Status::ok();
}

} // namespace qlora::cuda
