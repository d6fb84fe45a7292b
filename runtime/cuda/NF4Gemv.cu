//===- NF4Gemv.cu - Small-M products straight from NF4 ----------------------===//
//
// One warp per output row: the warp streams the row's packed codes once
// (16 bytes a lane a step), decodes them in registers, and multiplies with
// the M activation rows, which are small and stay in L1/L2. For M <= 8 the
// weight read dominates, so the kernel runs near memory bandwidth.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Device.cuh"

namespace qlora::cuda {
namespace {

using detail::blockAbsmax;

constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ float bf16Low(uint32_t pair) {
  return __uint_as_float(pair << 16);
}
__device__ __forceinline__ float bf16High(uint32_t pair) {
  return __uint_as_float(pair & 0xffff0000u);
}

template <int M>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemvKernel(const uint16_t *__restrict__ x, NF4DeviceWeight w,
               detail::NF4Tables tables, uint16_t *__restrict__ y) {
  __shared__ float code[16];
  __shared__ float dynamicMap[256];
  detail::loadTables(tables, code, dynamicMap);
  __syncthreads();

  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t N = w.rows, K = w.cols;
  if (row >= N)
    return;
  const uint4 *packed = reinterpret_cast<const uint4 *>(w.packed + row * K / 2);
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m)
    acc[m] = 0.0f;

  for (int64_t j = lane; j < K / 32; j += 32) {
    uint4 bytes = __ldg(&packed[j]);
    float absmax = blockAbsmax(w, (row * K + j * 32) / w.blockSize, dynamicMap);
    uint32_t words[4] = {bytes.x, bytes.y, bytes.z, bytes.w};
    float weight[32];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      uint32_t byte = (words[i / 4] >> (8 * (i % 4))) & 0xffu;
      // The weight in bf16, as the reference's dequantized operand.
      weight[2 * i] = __bfloat162float(
          __float2bfloat16_rn(__fmul_rn(code[byte >> 4], absmax)));
      weight[2 * i + 1] = __bfloat162float(
          __float2bfloat16_rn(__fmul_rn(code[byte & 0xfu], absmax)));
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const uint4 *activations =
          reinterpret_cast<const uint4 *>(x + m * K + j * 32);
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        uint4 chunk = __ldg(&activations[v]);
        uint32_t pairs[4] = {chunk.x, chunk.y, chunk.z, chunk.w};
#pragma unroll
        for (int p = 0; p < 4; ++p) {
          acc[m] = fmaf(weight[8 * v + 2 * p], bf16Low(pairs[p]), acc[m]);
          acc[m] = fmaf(weight[8 * v + 2 * p + 1], bf16High(pairs[p]), acc[m]);
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float sum = acc[m];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0)
      y[m * N + row] = __bfloat16_as_ushort(__float2bfloat16_rn(sum));
  }
}

template <int M>
void launch(const uint16_t *x, const NF4DeviceWeight &w, uint16_t *y,
            cudaStream_t stream) {
  int64_t blocks = (w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  gemvKernel<M><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
      x, w, detail::hostTables(), y);
}

} // namespace

Status nf4Gemv(const uint16_t *x, int64_t M, const NF4DeviceWeight &weight,
               uint16_t *y, cudaStream_t stream) {
  if (weight.cols % 32 != 0 || weight.blockSize % 32 != 0)
    return makeError("nf4Gemv: expects K and the block size to be multiples "
                     "of 32, got K = {} and block {}",
                     weight.cols, weight.blockSize);
  switch (M) {
  case 1: launch<1>(x, weight, y, stream); break;
  case 2: launch<2>(x, weight, y, stream); break;
  case 3: launch<3>(x, weight, y, stream); break;
  case 4: launch<4>(x, weight, y, stream); break;
  case 5: launch<5>(x, weight, y, stream); break;
  case 6: launch<6>(x, weight, y, stream); break;
  case 7: launch<7>(x, weight, y, stream); break;
  case 8: launch<8>(x, weight, y, stream); break;
  default:
    return makeError("nf4Gemv: expects 1 <= M <= 8, got {}", M);
  }
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace qlora::cuda
