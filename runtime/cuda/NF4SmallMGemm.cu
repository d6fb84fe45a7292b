//===- NF4SmallMGemm.cu - Small-M products on tensor cores, straight from NF4 ===//
//
// y[M, N] = x[M, K] · Wᵀ for M <= 16 with mma.sync m16n8k16 (bf16 in, fp32
// accumulate). The product is computed transposed, Yᵀ = W · Xᵀ, so that the
// large weight is the 16-row A operand and the few activation rows the
// 8-column B operand. A block owns 16 weight rows and its warps (8 or 16,
// SmallMTiling) split K; the partial tiles are summed in shared memory.
//
// The weight is read once, at its packed size, in whole 128-byte lines
// staged in shared memory (see the kernel), and each lane reads there only
// the bytes its own fragments use. A dot product does not care in which
// order it meets its k, so the mma's k order is permuted to fit the
// packing: for each 64-element chunk (one quantization block or part of
// one), lane t of a row's four reads the 8 contiguous bytes 8t..8t+7
// (codes 16t..16t+15), and mma j of the chunk takes bytes 8t+2j and 8t+2j+1
// as its logical k 2t..2t+1 and 2t+8..2t+9. The activation fragment follows
// the same permutation: codes 16t+4j..16t+4j+3 of the chunk.
//
// A byte becomes the bf16 pair of its two codes with one conflict-free
// shared-memory lookup (NF4Device.cuh); the block maximum multiplies the
// fp32 tile once per chunk, after its four mmas. So the weight enters as
// bf16(code) * absmax, within one bf16 rounding of the reference's
// bf16(code * absmax).
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/AsyncCopy.cuh"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Device.cuh"

#include <cuda_bf16.h>

#include <type_traits>

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

/// Chunks (of 64 codes, 512 bytes for the tile's 16 rows) a warp copies per
/// stage; each warp double-buffers its stages.
constexpr int kStageChunks = 4;
constexpr int kStageBytesPerWarp = kTileRows * kStageChunks * 32;

template <int kWarps> constexpr int stageBytes() {
  return kWarps * 2 * kStageBytesPerWarp;
}

/// kTiles 8-column tiles of Yᵀ: 1 for M <= 8, 2 for M <= 16; kWarps warps
/// split K (SmallMTiling). Each warp copies its chunks of the 16 rows into
/// shared memory with cp.async, a stage of 4 chunks at a time and two
/// stages ahead, so its bytes are in flight without holding registers;
/// stage 0 and 1 are issued before the tables are filled. The block maxima
/// of a stage are loaded two per lane into registers, decoded into shared
/// memory when the stage arrives, and read from there by the four lanes of
/// each row. Addresses are 32-bit offsets from the kernel's base pointers
/// (the host checks that N * K fits); rows past N read row N - 1 and
/// activation columns past M read row M - 1; neither result is stored.
template <int kTiles, int kWarps>
__global__ void __launch_bounds__(kWarps * 32, kWarps == 16 ? 2 : 1)
    smallMKernel(const uint16_t *__restrict__ x, int M,
                 const __grid_constant__ NF4DeviceWeight w,
                 const __grid_constant__ detail::NF4Tables tables,
                 uint16_t *__restrict__ y) {
  extern __shared__ __align__(16) uint8_t stageMemory[];
  __shared__ uint32_t codePairs[detail::kCodePairTableWords];
  __shared__ float dynamicMap[256];
  __shared__ float scales[kWarps][2][kTileRows][kStageChunks];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const uint32_t N = uint32_t(w.rows), K = uint32_t(w.cols);
  const uint32_t firstRow = blockIdx.x * kTileRows;
  const uint32_t chunks = K / 64;
  const uint32_t begin = chunks * warp / kWarps;
  const int count = int(chunks * (warp + 1) / kWarps - begin);
  const int stages = (count + kStageChunks - 1) / kStageChunks;
  uint8_t *warpStages = stageMemory + warp * 2 * kStageBytesPerWarp;

  // A stage holds each of the 16 rows' 128 contiguous bytes (4 chunks), so
  // that every cp.async instruction reads whole 128-byte lines: lane L
  // copies 16-byte piece L % 8 of rows L / 8, 4 + L / 8, 8 + L / 8 and
  // 12 + L / 8. In shared memory chunk i of row r sits in 32-byte slot
  // i ^ (r % 4) of the row's 128 bytes, so that the fragment reads of rows
  // g = 0..3 (one half-warp) fall in distinct banks.
  const int piece = lane % 8;
  uint32_t copyByte[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const uint32_t row = min(firstRow + 4 * q + lane / 8, N - 1);
    copyByte[q] = (row * K + begin * 64) / 2 + 16 * piece;
  }
  // The block maxima: lane L loads those of row L / 2 for chunks
  // 2 (L % 2) and 2 (L % 2) + 1 of each stage.
  const uint32_t absmaxElement =
      min(firstRow + lane / 2, N - 1) * K + begin * 64;
  LoadedAbsmax pending[2][2];

  auto issue = [&](int stage, auto bufferConstant) {
    constexpr int buffer = decltype(bufferConstant)::value;
    const bool valid = stage * kStageChunks + piece / 2 < count;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int row = 4 * q + lane / 8;
      uint8_t *target = warpStages + buffer * kStageBytesPerWarp + row * 128 +
                        ((piece / 2) ^ (row % 4)) * 32 + 16 * (piece % 2);
      detail::cpAsync16(target,
                        w.packed + copyByte[q] + (valid ? stage * 128 : 0),
                        valid);
    }
    detail::cpAsyncCommit();
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int c = min(stage * kStageChunks + 2 * (lane % 2) + i, count - 1);
      pending[buffer][i] =
          detail::loadAbsmax(w, (absmaxElement + 64 * c) >> w.blockShift);
    }
  };
  if (stages > 0)
    issue(0, std::integral_constant<int, 0>{});
  if (stages > 1)
    issue(1, std::integral_constant<int, 1>{});
  else
    detail::cpAsyncCommit(); // an empty group keeps the waits uniform

  detail::loadCodePairTable(tables, codePairs);
  detail::loadDynamicMap(tables, dynamicMap);
  __syncthreads();
  const uint32_t laneTable = detail::codePairLaneAddress(codePairs);

  // This lane's 16 activations of column g of each tile, a chunk ahead.
  const uint4 *activations = reinterpret_cast<const uint4 *>(x);
  uint32_t actOffset[kTiles];
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) {
    const uint32_t m = min(g + 8 * tile, uint32_t(M - 1));
    actOffset[tile] = (m * K + begin * 64) / 8 + 2 * t;
  }
  uint4 next[kTiles][2];
  auto loadActivations = [&](int c) {
#pragma unroll
    for (int tile = 0; tile < kTiles; ++tile) {
      next[tile][0] = __ldg(activations + actOffset[tile] + 8 * c);
      next[tile][1] = __ldg(activations + actOffset[tile] + 8 * c + 1);
    }
  };
  if (count > 0)
    loadActivations(0);

  float acc[kTiles][4] = {};
  auto consume = [&](int stage, auto bufferConstant) {
    constexpr int buffer = decltype(bufferConstant)::value;
    // This lane's copies of the stage have landed; the warp's, after the
    // barrier. Its block maxima are decoded for the four lanes of a row.
    detail::cpAsyncWait<1>();
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      scales[warp][buffer][lane / 2][2 * (lane % 2) + i] =
          detail::decodeAbsmax(w, pending[buffer][i], dynamicMap);
    }
    __syncwarp();
    const uint8_t *stageBase = warpStages + buffer * kStageBytesPerWarp + 8 * t;
#pragma unroll
    for (int i = 0; i < kStageChunks; ++i) {
      const int c = stage * kStageChunks + i;
      if (c >= count)
        break;
      uint4 acts[kTiles][2];
#pragma unroll
      for (int tile = 0; tile < kTiles; ++tile)
        acts[tile][0] = next[tile][0], acts[tile][1] = next[tile][1];
      if (c + 1 < count)
        loadActivations(c + 1);
      // Rows g and g + 8 share their slot swizzle (8 is a multiple of 4).
      const int slot = (i ^ (g % 4)) * 32;
      const uint2 row0 =
          *reinterpret_cast<const uint2 *>(stageBase + g * 128 + slot);
      const uint2 row1 =
          *reinterpret_cast<const uint2 *>(stageBase + (g + 8) * 128 + slot);
      float chunk[kTiles][4] = {};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        uint32_t a[4] = {lookupCodePair(laneTable, byteOf(row0, 2 * j)),
                         lookupCodePair(laneTable, byteOf(row1, 2 * j)),
                         lookupCodePair(laneTable, byteOf(row0, 2 * j + 1)),
                         lookupCodePair(laneTable, byteOf(row1, 2 * j + 1))};
#pragma unroll
        for (int tile = 0; tile < kTiles; ++tile) {
          const uint4 &low = acts[tile][0], &high = acts[tile][1];
          const uint32_t words[8] = {low.x,  low.y,  low.z,  low.w,
                                     high.x, high.y, high.z, high.w};
          uint32_t b[2] = {words[2 * j], words[2 * j + 1]};
          mma(chunk[tile], a, b);
        }
      }
      const float scale0 = scales[warp][buffer][g][i];
      const float scale1 = scales[warp][buffer][g + 8][i];
#pragma unroll
      for (int tile = 0; tile < kTiles; ++tile) {
        acc[tile][0] = fmaf(scale0, chunk[tile][0], acc[tile][0]);
        acc[tile][1] = fmaf(scale0, chunk[tile][1], acc[tile][1]);
        acc[tile][2] = fmaf(scale1, chunk[tile][2], acc[tile][2]);
        acc[tile][3] = fmaf(scale1, chunk[tile][3], acc[tile][3]);
      }
    }
    // Every lane is done with this buffer: refill it two stages ahead.
    __syncwarp();
    if (stage + 2 < stages)
      issue(stage + 2, bufferConstant);
    else
      detail::cpAsyncCommit();
  };
  for (int stage = 0; stage < stages; stage += 2) {
    consume(stage, std::integral_constant<int, 0>{});
    if (stage + 1 < stages)
      consume(stage + 1, std::integral_constant<int, 1>{});
  }

  // The partial tiles go where the code pair table was.
  __syncthreads();
  float(*partial)[kTileRows][8 * kTiles] =
      reinterpret_cast<float(*)[kTileRows][8 * kTiles]>(codePairs);
  static_assert(sizeof(float) * kWarps * kTileRows * 8 * kTiles <=
                    sizeof(codePairs),
                "the partial tiles fit in the code pair table");
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

/// Launches one instantiation, raising its dynamic shared-memory limit once.
template <int kTiles, int kWarps>
Status launchSmallM(const uint16_t *x, int64_t M, const NF4DeviceWeight &w,
                    uint16_t *y, cudaStream_t stream) {
  static const cudaError_t raised = cudaFuncSetAttribute(
      smallMKernel<kTiles, kWarps>,
      cudaFuncAttributeMaxDynamicSharedMemorySize, stageBytes<kWarps>());
  QLORA_CUDA_RETURN_IF_ERROR(raised);
  const int64_t blocks = (w.rows + kTileRows - 1) / kTileRows;
  smallMKernel<kTiles, kWarps>
      <<<blocks, kWarps * 32, stageBytes<kWarps>(), stream>>>(
          x, int(M), w, detail::hostTables(), y);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace

Status nf4MatmulSmallM(const uint16_t *x, int64_t M,
                       const NF4DeviceWeight &weight, uint16_t *y,
                       cudaStream_t stream, SmallMTiling tiling) {
  if (tiling.warps != 8 && tiling.warps != 16)
    return makeError("nf4MatmulSmallM: no tiling with {} warps (known: 8, "
                     "16)",
                     tiling.warps);
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
  // Two activation tiles take the registers of 16 warps: M > 8 runs 8
  // warps whichever tiling is asked.
  if (M > 8)
    return launchSmallM<2, 8>(x, M, *prepared, y, stream);
  if (tiling.warps == 16)
    return launchSmallM<1, 16>(x, M, *prepared, y, stream);
  return launchSmallM<1, 8>(x, M, *prepared, y, stream);
}

} // namespace qlora::cuda
