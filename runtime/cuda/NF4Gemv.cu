//===- NF4Gemv.cu - Small-M products straight from NF4 ----------------------===//
//
// A warp computes kRows output rows: it streams their packed codes once (4
// bytes a lane a step, coalesced) and multiplies them with the M activation
// rows, loaded once per step for all kRows rows (they are small and stay in
// L1/L2). Each packed word lies in one quantization block, so the codes are
// summed against x first and scaled by the block maximum once per word: the
// weight is used at its exact fp32 value code * absmax (the reference rounds
// it to bf16 first; the difference is far inside bf16 output rounding).
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Device.cuh"

namespace qlora::cuda {
namespace {

using detail::blockAbsmax;

constexpr int kWarpsPerBlock = 8;
/// Output rows a warp computes: each activation chunk is loaded once and
/// used for Rows weight rows, which cuts the L1 traffic per weight byte; for
/// M = 1 two rows keep more warps in flight.
template <int M> constexpr int rowsPerWarp() { return M == 1 ? 1 : 4; }

__device__ __forceinline__ float bf16Low(uint32_t pair) {
  return __uint_as_float(pair << 16);
}
__device__ __forceinline__ float bf16High(uint32_t pair) {
  return __uint_as_float(pair & 0xffff0000u);
}

template <int M, int kRows = rowsPerWarp<M>()>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemvKernel(const uint16_t *__restrict__ x,
               const __grid_constant__ NF4DeviceWeight w,
               const __grid_constant__ detail::NF4Tables tables,
               uint16_t *__restrict__ y) {
  __shared__ float code[16];
  __shared__ float dynamicMap[256];
  // Both codes of a packed byte with one shared-memory load.
  __shared__ float2 byteCodes[256];
  detail::loadTables(tables, code, dynamicMap);
  __syncthreads();
  for (int i = threadIdx.x; i < 256; i += blockDim.x)
    byteCodes[i] = make_float2(code[i >> 4], code[i & 0xf]);
  __syncthreads();

  const int64_t firstRow =
      (int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32) * kRows;
  const int lane = threadIdx.x % 32;
  const int64_t N = w.rows, K = w.cols;
  if (firstRow >= N)
    return;
  const int rows = int(min(int64_t(kRows), N - firstRow));
  float acc[kRows][M];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m)
      acc[r][m] = 0.0f;

  // A lane takes one packed word (8 codes) per row per step: the weight
  // loads of a warp cover 128 contiguous bytes a row and the activation
  // loads 512, both coalesced. kSteps steps are loaded before any is used.
  constexpr int kSteps = 4;
  const int64_t words = K / 8;
  const uint32_t *packed = reinterpret_cast<const uint32_t *>(w.packed);
  for (int64_t base = lane; base < words; base += 32 * kSteps) {
    uint32_t word[kSteps][kRows];
    float absmax[kSteps][kRows];
    uint4 activations[kSteps][M];
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      int64_t k = base + 32 * s;
      if (k >= words)
        continue;
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        if (r < rows) {
          int64_t index = (firstRow + r) * words + k;
          word[s][r] = __ldg(&packed[index]);
          absmax[s][r] = blockAbsmax(w, (index * 8) >> w.blockShift,
                                     dynamicMap);
        }
#pragma unroll
      for (int m = 0; m < M; ++m)
        activations[s][m] =
            __ldg(reinterpret_cast<const uint4 *>(x + m * K) + k);
    }
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      if (base + 32 * s >= words)
        break;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r >= rows)
          break;
        // A word lies in one block: sum code * x over its 8 elements, then
        // scale once by the block maximum.
        float partial[M];
#pragma unroll
        for (int m = 0; m < M; ++m)
          partial[m] = 0.0f;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          float2 pair = byteCodes[(word[s][r] >> (8 * b)) & 0xffu];
#pragma unroll
          for (int m = 0; m < M; ++m) {
            uint32_t xs[4] = {activations[s][m].x, activations[s][m].y,
                              activations[s][m].z, activations[s][m].w};
            partial[m] = fmaf(pair.x, bf16Low(xs[b]), partial[m]);
            partial[m] = fmaf(pair.y, bf16High(xs[b]), partial[m]);
          }
        }
#pragma unroll
        for (int m = 0; m < M; ++m)
          acc[r][m] = fmaf(absmax[s][r], partial[m], acc[r][m]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r >= rows)
      break;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float sum = acc[r][m];
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2)
        sum += __shfl_xor_sync(0xffffffffu, sum, offset);
      if (lane == 0)
        y[m * N + firstRow + r] = __bfloat16_as_ushort(__float2bfloat16_rn(sum));
    }
  }
}

template <int M>
void launch(const uint16_t *x, const NF4DeviceWeight &w, uint16_t *y,
            cudaStream_t stream) {
  int64_t rowsPerBlock = int64_t(kWarpsPerBlock) * rowsPerWarp<M>();
  int64_t blocks = (w.rows + rowsPerBlock - 1) / rowsPerBlock;
  gemvKernel<M><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
      x, w, detail::hostTables(), y);
}

} // namespace

Status nf4Gemv(const uint16_t *x, int64_t M, const NF4DeviceWeight &weight,
               uint16_t *y, cudaStream_t stream) {
  if (weight.cols % 8 != 0)
    return makeError("nf4Gemv: expects K to be a multiple of 8, got K = {}",
                     weight.cols);
  Expected<NF4DeviceWeight> prepared = detail::prepare(weight);
  if (!prepared)
    return prepared.error().withContext("nf4Gemv");
  const NF4DeviceWeight &w = *prepared;
  switch (M) {
  case 1: launch<1>(x, w, y, stream); break;
  case 2: launch<2>(x, w, y, stream); break;
  case 3: launch<3>(x, w, y, stream); break;
  case 4: launch<4>(x, w, y, stream); break;
  case 5: launch<5>(x, w, y, stream); break;
  case 6: launch<6>(x, w, y, stream); break;
  case 7: launch<7>(x, w, y, stream); break;
  case 8: launch<8>(x, w, y, stream); break;
  default:
    return makeError("nf4Gemv: expects 1 <= M <= 8, got {}", M);
  }
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace qlora::cuda
