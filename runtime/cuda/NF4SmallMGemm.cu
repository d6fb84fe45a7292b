//===- NF4SmallMGemm.cu - Small-M products on tensor cores, straight from NF4 ===//
//
// y[M, N] = x[M, K] · Wᵀ for M <= 16 with mma.sync m16n8k16 (bf16 in, fp32
// accumulate). The product is computed transposed, Yᵀ = W · Xᵀ, so that the
// large weight is the 16-row A operand and the few activation rows the
// 8-column B operand. A block owns 16 weight rows and its warps (8 or 16,
// SmallMTiling) split K; the partial tiles are summed in shared memory.
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

using detail::LoadedAbsmax;
using detail::lookupCodePair;

constexpr int kTileRows = 16;

/// Byte `index` (0..7) of `bytes`, zero-extended: one PRMT.
__device__ __forceinline__ uint32_t byteOf(uint2 bytes, int index) {
  return __byte_perm(index < 4 ? bytes.x : bytes.y, 0u, 0x4440u + index % 4);
}

__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4],
                                    const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/// kTiles 8-column tiles of Yᵀ: 1 for M <= 8, 2 for M <= 16; kWarps warps
/// split K, each with kDepth chunks in flight (SmallMTiling). The loop
/// keeps its addresses as per-lane pointers and 32-bit offsets that advance
/// by constants (the host checks that N * K fits), and has no per-load
/// bounds checks: rows past N read row N - 1 and activation columns past M
/// read row M - 1; neither result is stored.
template <int kTiles, int kWarps, int kDepth>
__global__ void __launch_bounds__(kWarps * 32, kWarps == 16 ? 2 : 1)
    smallMKernel(const uint16_t *__restrict__ x, int M,
                 const __grid_constant__ NF4DeviceWeight w,
                 const __grid_constant__ detail::NF4Tables tables,
                 uint16_t *__restrict__ y) {
  __shared__ uint32_t codePairs[detail::kCodePairTableWords];
  __shared__ float dynamicMap[256];
  __shared__ float partial[kWarps][kTileRows][8 * kTiles];
  detail::loadCodePairTable(tables, codePairs);
  detail::loadDynamicMap(tables, dynamicMap);
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const uint32_t N = uint32_t(w.rows), K = uint32_t(w.cols);
  const uint32_t firstRow = blockIdx.x * kTileRows;
  const uint32_t chunks = K / 64;
  const uint32_t begin = chunks * warp / kWarps;
  const int count = int(chunks * (warp + 1) / kWarps - begin);
  const uint32_t laneTable = detail::codePairLaneAddress(codePairs);
  const bool nested = w.absmaxCodes != nullptr;

  // This lane's first chunk, as 32-bit offsets from the kernel's base
  // pointers: its 8 bytes of rows g and g + 8 (uint2 units; a chunk is 4),
  // their first elements (for the block maxima), and its 16 activations of
  // column g of each tile (uint4 units; a chunk is 8).
  uint32_t wordOffset[2], elementOffset[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const uint32_t row = min(firstRow + g + 8 * r, N - 1);
    elementOffset[r] = row * K + begin * 64;
    wordOffset[r] = elementOffset[r] / 16 + t;
  }
  uint32_t actOffset[kTiles];
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) {
    const uint32_t m = min(g + 8 * tile, uint32_t(M - 1));
    actOffset[tile] = (m * K + begin * 64) / 8 + 2 * t;
  }
  const uint2 *packed = reinterpret_cast<const uint2 *>(w.packed);
  const uint4 *activations = reinterpret_cast<const uint4 *>(x);

  uint2 bytes[kDepth][2];
  LoadedAbsmax absmax[kDepth][2];
  uint4 acts[kDepth][kTiles][2];
  auto load = [&](int c, int slot) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      bytes[slot][r] = __ldg(packed + wordOffset[r] + 4 * c);
      const uint32_t block = (elementOffset[r] + 64 * c) >> w.blockShift;
      absmax[slot][r] =
          nested ? LoadedAbsmax{__ldg(w.absmaxCodes + block),
                                __ldg(w.absmaxScales +
                                      (block >> w.dqBlockShift))}
                 : LoadedAbsmax{0u, __ldg(w.absmax + block)};
    }
#pragma unroll
    for (int tile = 0; tile < kTiles; ++tile) {
      acts[slot][tile][0] = __ldg(activations + actOffset[tile] + 8 * c);
      acts[slot][tile][1] = __ldg(activations + actOffset[tile] + 8 * c + 1);
    }
  };
  auto decode = [&](LoadedAbsmax loaded) {
    return nested ? __fadd_rn(__fmul_rn(dynamicMap[loaded.code], loaded.scale),
                              w.offset)
                  : loaded.scale;
  };
#pragma unroll
  for (int d = 0; d < kDepth; ++d)
    if (d < count)
      load(d, d);

  float acc[kTiles][4] = {};
  for (int c0 = 0; c0 < count; c0 += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      if (c0 + d >= count)
        break;
      float chunk[kTiles][4] = {};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        uint32_t a[4] = {
            lookupCodePair(laneTable, byteOf(bytes[d][0], 2 * j)),
            lookupCodePair(laneTable, byteOf(bytes[d][1], 2 * j)),
            lookupCodePair(laneTable, byteOf(bytes[d][0], 2 * j + 1)),
            lookupCodePair(laneTable, byteOf(bytes[d][1], 2 * j + 1))};
#pragma unroll
        for (int tile = 0; tile < kTiles; ++tile) {
          const uint4 &low = acts[d][tile][0], &high = acts[d][tile][1];
          const uint32_t words[8] = {low.x,  low.y,  low.z,  low.w,
                                     high.x, high.y, high.z, high.w};
          uint32_t b[2] = {words[2 * j], words[2 * j + 1]};
          mma(chunk[tile], a, b);
        }
      }
      const float scale0 = decode(absmax[d][0]), scale1 = decode(absmax[d][1]);
#pragma unroll
      for (int tile = 0; tile < kTiles; ++tile) {
        acc[tile][0] = fmaf(scale0, chunk[tile][0], acc[tile][0]);
        acc[tile][1] = fmaf(scale0, chunk[tile][1], acc[tile][1]);
        acc[tile][2] = fmaf(scale1, chunk[tile][2], acc[tile][2]);
        acc[tile][3] = fmaf(scale1, chunk[tile][3], acc[tile][3]);
      }
      // This slot is used: refill it kDepth chunks ahead.
      if (c0 + d + kDepth < count)
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
  for (int i = threadIdx.x; i < kTileRows * 8 * kTiles; i += blockDim.x) {
    int row = i % kTileRows, m = i / kTileRows;
    if (m >= M || firstRow + row >= N)
      continue;
    float sum = 0.0f;
#pragma unroll
    for (int part = 0; part < kWarps; ++part)
      sum += partial[part][row][m];
    y[int64_t(m) * N + firstRow + row] =
        __bfloat16_as_ushort(__float2bfloat16_rn(sum));
  }
}

} // namespace

Status nf4MatmulSmallM(const uint16_t *x, int64_t M,
                       const NF4DeviceWeight &weight, uint16_t *y,
                       cudaStream_t stream, SmallMTiling tiling) {
  if (!((tiling.warps == 8 && tiling.depth == 4) ||
        (tiling.warps == 16 && tiling.depth == 2)))
    return makeError("nf4MatmulSmallM: no tiling with {} warps and depth {} "
                     "(known: 8 warps at depth 4, 16 at depth 2)",
                     tiling.warps, tiling.depth);
  if (M < 1 || M > 16)
    return makeError("nf4MatmulSmallM: expects 1 <= M <= 16, got {}", M);
  if (weight.cols % 64 != 0 || weight.blockSize % 64 != 0)
    return makeError("nf4MatmulSmallM: expects K and the block size to be "
                     "multiples of 64, got K = {} and block {}",
                     weight.cols, weight.blockSize);
  if (weight.rows * weight.cols >= (int64_t(1) << 32) ||
      M * weight.cols >= (int64_t(1) << 32))
    return makeError("nf4MatmulSmallM: a {}x{} weight at M = {} has more "
                     "elements than 32-bit offsets reach",
                     weight.rows, weight.cols, M);
  Expected<NF4DeviceWeight> prepared = detail::prepare(weight);
  if (!prepared)
    return prepared.error().withContext("nf4MatmulSmallM");
  const int64_t blocks = (weight.rows + kTileRows - 1) / kTileRows;
  auto launch = [&](auto kernel, int warps) {
    kernel<<<blocks, warps * 32, 0, stream>>>(x, int(M), *prepared,
                                             detail::hostTables(), y);
  };
  // Two activation tiles take the registers of the wide tiling: M > 8
  // runs 8 warps whichever tiling is asked.
  if (M > 8)
    launch(smallMKernel<2, 8, 4>, 8);
  else if (tiling.warps == 16)
    launch(smallMKernel<1, 16, 2>, 16);
  else
    launch(smallMKernel<1, 8, 4>, 8);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace qlora::cuda
