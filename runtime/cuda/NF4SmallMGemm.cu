//===- NF4SmallMGemm.cu - Small-M products on tensor cores, straight from NF4 ===//
//
// y[M, N] = x[M, K] · Wᵀ for M <= 16 with mma.sync m16n8k16 (bf16 in, fp32
// accumulate). The product is computed transposed, Yᵀ = W · Xᵀ, so that the
// large weight is the 16-row A operand and the few activation rows the
// 8-column B operand. A block of four warps owns 16 weight rows and splits K
// four ways; each thread decodes the NF4 bytes of its A fragments in
// registers (one byte is the bf16 pair the fragment wants), so the weight is
// read from DRAM once, at its packed size. The partial tiles are summed in
// shared memory.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Device.cuh"

#include <cuda_bf16.h>

namespace qlora::cuda {
namespace {

using detail::blockAbsmax;
using detail::decodePair;

constexpr int kWarps = 8;
constexpr int kTileRows = 16;

__device__ __forceinline__ uint32_t byteOf(uint32_t word, int index) {
  return (word >> (8 * index)) & 0xffu;
}

__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4],
                                    const uint32_t (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]),
                 "r"(b[1]));
}

/// kTiles 8-column tiles of Yᵀ: 1 for M <= 8, 2 for M <= 16.
template <int kTiles>
__global__ void __launch_bounds__(kWarps * 32)
    smallMKernel(const uint16_t *__restrict__ x, int M,
                 const __grid_constant__ NF4DeviceWeight w,
                 const __grid_constant__ detail::NF4Tables tables,
               uint16_t *__restrict__ y) {
  __shared__ float dynamicMap[256];
  __shared__ float2 byteCodes[256];
  __shared__ float partial[kWarps][kTileRows][16];
  detail::loadByteTables(tables, byteCodes, dynamicMap);
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const int64_t N = w.rows, K = w.cols;
  const int64_t firstRow = int64_t(blockIdx.x) * kTileRows;
  const int64_t rows[2] = {firstRow + g, firstRow + g + 8};
  const int64_t chunks = K / 64;
  const int64_t begin = chunks * warp / kWarps;
  const int64_t end = chunks * (warp + 1) / kWarps;

  // Loads run kDepth chunks ahead of the tensor-core work, so that each
  // warp keeps several DRAM requests in flight.
  constexpr int kDepth = 4;
  uint4 bytes[kDepth][2][2];
  float absmax[kDepth][2];
  auto load = [&](int64_t c, int slot) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (c < end && rows[r] < N) {
        const uint4 *source = reinterpret_cast<const uint4 *>(
            w.packed + (rows[r] * K + c * 64) / 2);
        bytes[slot][r][0] = __ldg(source);
        bytes[slot][r][1] = __ldg(source + 1);
        absmax[slot][r] =
            blockAbsmax(w, (rows[r] * K + c * 64) >> w.blockShift, dynamicMap);
      } else {
        // Code 7 is 0.0: rows past N contribute nothing.
        bytes[slot][r][0] = bytes[slot][r][1] =
            make_uint4(0x77777777u, 0x77777777u, 0x77777777u, 0x77777777u);
        absmax[slot][r] = 0.0f;
      }
    }
  };
#pragma unroll
  for (int d = 0; d < kDepth; ++d)
    load(begin + d, d);

  float acc[kTiles][4] = {};
  for (int64_t c0 = begin; c0 < end; c0 += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      const int64_t c = c0 + d;
      if (c >= end)
        break;
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        // Byte 8s + t holds A[row][2t..2t+1] of k-step s, byte 8s + t + 4
        // holds A[row][2t+8..2t+9].
        const uint4 &half0 = bytes[d][0][s / 2], &half1 = bytes[d][1][s / 2];
        uint32_t first0 = (s % 2 == 0) ? half0.x : half0.z;
        uint32_t second0 = (s % 2 == 0) ? half0.y : half0.w;
        uint32_t first1 = (s % 2 == 0) ? half1.x : half1.z;
        uint32_t second1 = (s % 2 == 0) ? half1.y : half1.w;
        uint32_t a[4] = {
            decodePair(byteCodes, byteOf(first0, t), absmax[d][0]),
            decodePair(byteCodes, byteOf(first1, t), absmax[d][1]),
            decodePair(byteCodes, byteOf(second0, t), absmax[d][0]),
            decodePair(byteCodes, byteOf(second1, t), absmax[d][1])};
        const int64_t k = c * 64 + s * 16 + 2 * t;
#pragma unroll
        for (int tile = 0; tile < kTiles; ++tile) {
          int m = g + 8 * tile;
          uint32_t b[2] = {0u, 0u};
          if (m < M) {
            const uint32_t *row = reinterpret_cast<const uint32_t *>(x + m * K);
            b[0] = __ldg(&row[k / 2]);
            b[1] = __ldg(&row[(k + 8) / 2]);
          }
          mma(acc[tile], a, b);
        }
      }
      // This slot is used: refill it kDepth chunks ahead.
      load(c + kDepth, d);
    }
  }
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) {
    int m = 8 * tile + 2 * t;
    partial[warp][g][m] = acc[tile][0];
    partial[warp][g][m + 1] = acc[tile][1];
    partial[warp][g + 8][m] = acc[tile][2];
    partial[warp][g + 8][m + 1] = acc[tile][3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kTileRows * 16; i += blockDim.x) {
    int row = i % kTileRows, m = i / kTileRows;
    if (m >= M || firstRow + row >= N)
      continue;
    float sum = 0.0f;
#pragma unroll
    for (int part = 0; part < kWarps; ++part)
      sum += partial[part][row][m];
    y[m * N + firstRow + row] =
        __bfloat16_as_ushort(__float2bfloat16_rn(sum));
  }
}

} // namespace

Status nf4MatmulSmallM(const uint16_t *x, int64_t M,
                       const NF4DeviceWeight &weight, uint16_t *y,
                       cudaStream_t stream) {
  if (M < 1 || M > 16)
    return makeError("nf4MatmulSmallM: expects 1 <= M <= 16, got {}", M);
  if (weight.cols % 64 != 0 || weight.blockSize % 64 != 0)
    return makeError("nf4MatmulSmallM: expects K and the block size to be "
                     "multiples of 64, got K = {} and block {}",
                     weight.cols, weight.blockSize);
  Expected<NF4DeviceWeight> prepared = detail::prepare(weight);
  if (!prepared)
    return prepared.error().withContext("nf4MatmulSmallM");
  int64_t blocks = (weight.rows + kTileRows - 1) / kTileRows;
  if (M <= 8)
    smallMKernel<1><<<blocks, kWarps * 32, 0, stream>>>(
        x, int(M), *prepared, detail::hostTables(), y);
  else
    smallMKernel<2><<<blocks, kWarps * 32, 0, stream>>>(
        x, int(M), *prepared, detail::hostTables(), y);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace qlora::cuda
