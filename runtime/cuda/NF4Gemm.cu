//===- NF4Gemm.cu - Large-M NF4 products: dequantize, then tensor cores -----===//
//
// For large M the product is compute-bound, and a fast dequantization into a
// reused bf16 scratch (a few microseconds at memory bandwidth) followed by
// cuBLAS's tensor-core GEMM costs a few percent over bf16 cuBLAS. Row-major
// tensors are passed to column-major cuBLAS as their transposes.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Kernels.h"

#include <cublas_v2.h>

#include <vector>

namespace qlora::cuda {

Status nf4MatmulDequantGemm(cublasHandle_t blas, const uint16_t *x, int64_t M,
                            const NF4DeviceWeight &weight, uint16_t *scratch,
                            uint16_t *y, cudaStream_t stream) {
  QLORA_RETURN_IF_ERROR(dequantizeNF4(weight, scratch, stream));
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas, stream));
  const float alpha = 1.0f, beta = 0.0f;
  const int N = int(weight.rows), K = int(weight.cols);
  // y^T [N, M] = W [N, K] (stored as col-major K x N, transposed) · x^T.
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      blas, CUBLAS_OP_T, CUBLAS_OP_N, N, int(M), K, &alpha, scratch,
      CUDA_R_16BF, K, x, CUDA_R_16BF, K, &beta, y, CUDA_R_16BF, N,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
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
                          uint16_t *dx, cudaStream_t stream) {
  QLORA_RETURN_IF_ERROR(dequantizeNF4(weight, scratch, stream));
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas, stream));
  const float alpha = 1.0f, beta = 0.0f;
  const int N = int(weight.rows), K = int(weight.cols);
  // dX^T [K, M] = W^T [K, N] (col-major K x N as stored) · dY^T [N, M].
  QLORA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      blas, CUBLAS_OP_N, CUBLAS_OP_N, K, int(M), N, &alpha, scratch,
      CUDA_R_16BF, K, dy, CUDA_R_16BF, N, &beta, dx, CUDA_R_16BF, K,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::ok();
}

} // namespace qlora::cuda
