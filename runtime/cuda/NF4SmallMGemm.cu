//===- NF4SmallMGemm.cu - Small-M products on tensor cores, straight from NF4 ===//
//
// y[M, N] = x[M, K] · Wᵀ for M <= 16 with mma.sync m16n8k16 (bf16 in, fp32
// accumulate). The product is computed transposed, Yᵀ = W · Xᵀ, so that the
// large weight is the 16-row A operand and the few activation rows the
// 8-column B operand. A block of eight warps owns 16 weight rows and splits
// K eight ways; the partial tiles are summed in shared memory.
//
// The weight is read once, at its packed size, and each lane loads only the
// bytes its own fragments use. A dot product does not care in which order
// it meets its k, so the mma's k order is permuted to fit the packing: for
// each 64-element chunk (one quantization block or part of one), lane t of
// a row's four loads the 8 contiguous bytes 8t..8t+7 (codes 16t..16t+15),
// and mma j of the chunk takes bytes 8t+2j and 8t+2j+1 as its logical k
// 2t..2t+1 and 2t+8..2t+9. The activation fragment follows the same
// permutation: codes 16t+4j..16t+4j+3 of the chunk.
//
// A byte becomes the bf16 pair of its two codes with one conflict-free
// shared-memory lookup (NF4Device.cuh); the block maximum multiplies the
// fp32 tile once per chunk, after its four mmas. So the weight enters as
// bf16(code) * absmax, within one bf16 rounding of the reference's
// bf16(code * absmax).
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Device.cuh"

#include <cuda_bf16.h>

namespace qlora::cuda {
namespace {

using detail::decodeAbsmax;
using detail::LoadedAbsmax;
using detail::loadAbsmax;
using detail::lookupCodePair;

constexpr int kWarps = 8;
constexpr int kTileRows = 16;
/// Chunks whose loads are in flight ahead of the tensor-core work.
constexpr int kDepth = 4;

__device__ __forceinline__ uint32_t byteOf(uint2 bytes, int index) {
  uint32_t word = index < 4 ? bytes.x : bytes.y;
  return (word >> (8 * (index % 4))) & 0xffu;
}

__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4],
                                    const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
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
  __shared__ uint32_t codePairs[detail::kCodePairTableWords];
  __shared__ float dynamicMap[256];
  __shared__ float partial[kWarps][kTileRows][16];
  detail::loadCodePairTable(tables, codePairs);
  detail::loadDynamicMap(tables, dynamicMap);
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const int64_t N = w.rows, K = w.cols;
  const int64_t firstRow = int64_t(blockIdx.x) * kTileRows;
  const int64_t rows[2] = {firstRow + g, firstRow + g + 8};
  const int64_t chunks = K / 64;
  const int64_t begin = chunks * warp / kWarps;
  const int64_t end = chunks * (warp + 1) / kWarps;

  // Per slot: this lane's 8 bytes of rows g and g + 8, their block maxima,
  // and its 16 activations (two uint4) of column g of each tile.
  uint2 bytes[kDepth][2];
  LoadedAbsmax absmax[kDepth][2];
  uint4 acts[kDepth][kTiles][2];
  auto load = [&](int64_t c, int slot) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (c < end && rows[r] < N) {
        const int64_t first = rows[r] * K + c * 64;
        bytes[slot][r] =
            __ldg(reinterpret_cast<const uint2 *>(w.packed + first / 2) + t);
        absmax[slot][r] = loadAbsmax(w, first >> w.blockShift);
      } else {
        // Rows past N (and chunks past the end) contribute nothing.
        bytes[slot][r] = make_uint2(0x77777777u, 0x77777777u);
        absmax[slot][r] = {0u, 0.0f};
      }
    }
#pragma unroll
    for (int tile = 0; tile < kTiles; ++tile) {
      const int m = g + 8 * tile;
      if (c < end && m < M) {
        const uint4 *source =
            reinterpret_cast<const uint4 *>(x + m * K + c * 64 + 16 * t);
        acts[slot][tile][0] = __ldg(source);
        acts[slot][tile][1] = __ldg(source + 1);
      } else {
        acts[slot][tile][0] = acts[slot][tile][1] = make_uint4(0, 0, 0, 0);
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
      if (c0 + d >= end)
        break;
      float chunk[kTiles][4] = {};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        uint32_t a[4] = {lookupCodePair(codePairs, byteOf(bytes[d][0], 2 * j)),
                         lookupCodePair(codePairs, byteOf(bytes[d][1], 2 * j)),
                         lookupCodePair(codePairs,
                                        byteOf(bytes[d][0], 2 * j + 1)),
                         lookupCodePair(codePairs,
                                        byteOf(bytes[d][1], 2 * j + 1))};
#pragma unroll
        for (int tile = 0; tile < kTiles; ++tile) {
          const uint4 &low = acts[d][tile][0], &high = acts[d][tile][1];
          const uint32_t words[8] = {low.x,  low.y,  low.z,  low.w,
                                     high.x, high.y, high.z, high.w};
          uint32_t b[2] = {words[2 * j], words[2 * j + 1]};
          mma(chunk[tile], a, b);
        }
      }
      const float scale0 = decodeAbsmax(w, absmax[d][0], dynamicMap);
      const float scale1 = decodeAbsmax(w, absmax[d][1], dynamicMap);
#pragma unroll
      for (int tile = 0; tile < kTiles; ++tile) {
        acc[tile][0] = fmaf(scale0, chunk[tile][0], acc[tile][0]);
        acc[tile][1] = fmaf(scale0, chunk[tile][1], acc[tile][1]);
        acc[tile][2] = fmaf(scale1, chunk[tile][2], acc[tile][2]);
        acc[tile][3] = fmaf(scale1, chunk[tile][3], acc[tile][3]);
      }
      // This slot is used: refill it kDepth chunks ahead.
      load(c0 + d + kDepth, d);
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
