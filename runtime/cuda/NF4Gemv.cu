//===- NF4Gemv.cu - Small-M products straight from NF4 ----------------------===//
//
// A warp computes kRows output rows: it streams their packed codes once (4
// bytes a lane a step, coalesced) and multiplies them with the M activation
// rows, loaded once per step for all kRows rows (they are small and stay in
// L1/L2). With kWarpsPerRow > 1, that many warps of a block split each
// row's K range and add their partial sums through shared memory, in warp
// order (deterministic). Each packed word lies in one quantization block, so
// the codes are summed against x first and scaled by the block maximum once
// per word: the weight enters at its exact fp32 value code * absmax (the
// reference rounds it to bf16 first; the difference is far inside bf16
// output rounding). The 16 codes sit in shared memory, one per bank, so a
// warp's lookups never conflict. This kernel is the fallback for K that is
// not a multiple of 64; the tensor-core kernel is faster at every M.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Device.cuh"

#include <type_traits>

namespace qlora::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
/// Output rows a warp computes: each activation chunk is loaded once and
/// used for kRows weight rows, which cuts the L1 traffic per weight byte; at
/// M = 1 one row a warp keeps more warps in flight.
template <int M> constexpr int rowsPerWarp() { return M == 1 ? 1 : 4; }

__device__ __forceinline__ float bf16Low(uint32_t pair) {
  return __uint_as_float(pair << 16);
}
__device__ __forceinline__ float bf16High(uint32_t pair) {
  return __uint_as_float(pair & 0xffff0000u);
}

template <int M, int kSteps, int kWarpsPerRow, int kRows = rowsPerWarp<M>()>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemvKernel(const uint16_t *__restrict__ x,
               const __grid_constant__ NF4DeviceWeight w,
               const __grid_constant__ detail::NF4Tables tables,
               uint16_t *__restrict__ y) {
  static_assert(kWarpsPerBlock % kWarpsPerRow == 0,
                "a row's warps must share a block");
  constexpr int kGroups = kWarpsPerBlock / kWarpsPerRow;
  __shared__ float code[16];
  __shared__ float dynamicMap[256];
  __shared__ float partialSums[kWarpsPerRow > 1 ? kWarpsPerBlock : 1]
                              [kRows * M];
  detail::loadTables(tables, code, dynamicMap);
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = warp / kWarpsPerRow, part = warp % kWarpsPerRow;
  const int64_t firstRow = (int64_t(blockIdx.x) * kGroups + group) * kRows;
  const int64_t N = w.rows, K = w.cols;
  // Warps past the last row still reach the block barrier below.
  const int rows = int(max(int64_t(0), min(int64_t(kRows), N - firstRow)));
  float acc[kRows][M];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m)
      acc[r][m] = 0.0f;

  // A lane takes one packed word (8 codes) per row per step: the weight
  // loads of a warp cover 128 contiguous bytes a row and the activation
  // loads 512, both coalesced. kSteps steps are loaded before any is used.
  constexpr int kStride = 32 * kWarpsPerRow;
  const int64_t words = rows > 0 ? K / 8 : 0;
  const uint32_t *packed = reinterpret_cast<const uint32_t *>(w.packed);
  for (int64_t base = part * 32 + lane; base < words;
       base += int64_t(kStride) * kSteps) {
    uint32_t word[kSteps][kRows];
    detail::LoadedAbsmax absmax[kSteps][kRows];
    uint4 activations[kSteps][M];
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      int64_t k = base + kStride * s;
      if (k >= words)
        continue;
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        if (r < rows) {
          int64_t index = (firstRow + r) * words + k;
          word[s][r] = __ldg(&packed[index]);
          absmax[s][r] = detail::loadAbsmax(w, (index * 8) >> w.blockShift);
        }
#pragma unroll
      for (int m = 0; m < M; ++m)
        activations[s][m] =
            __ldg(reinterpret_cast<const uint4 *>(x + m * K) + k);
    }
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      if (base + kStride * s >= words)
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
          const uint32_t byte = (word[s][r] >> (8 * b)) & 0xffu;
          const float high = code[byte >> 4], low = code[byte & 0xfu];
#pragma unroll
          for (int m = 0; m < M; ++m) {
            uint32_t xs[4] = {activations[s][m].x, activations[s][m].y,
                              activations[s][m].z, activations[s][m].w};
            partial[m] = fmaf(high, bf16Low(xs[b]), partial[m]);
            partial[m] = fmaf(low, bf16High(xs[b]), partial[m]);
          }
        }
        const float scale = detail::decodeAbsmax(w, absmax[s][r], dynamicMap);
#pragma unroll
        for (int m = 0; m < M; ++m)
          acc[r][m] = fmaf(scale, partial[m], acc[r][m]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2)
        acc[r][m] += __shfl_xor_sync(0xffffffffu, acc[r][m], offset);

  if constexpr (kWarpsPerRow > 1) {
    if (lane == 0)
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m)
          partialSums[warp][r * M + m] = acc[r][m];
    __syncthreads();
    if (part != 0)
      return;
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int m = 0; m < M; ++m)
#pragma unroll
        for (int other = 1; other < kWarpsPerRow; ++other)
          acc[r][m] += partialSums[warp + other][r * M + m];
  }
  if (lane != 0)
    return;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r >= rows)
      break;
#pragma unroll
    for (int m = 0; m < M; ++m)
      y[m * N + firstRow + r] =
          __bfloat16_as_ushort(__float2bfloat16_rn(acc[r][m]));
  }
}

template <int M, int kSteps, int kWarpsPerRow>
void launch(const uint16_t *x, const NF4DeviceWeight &w, uint16_t *y,
            cudaStream_t stream) {
  int64_t rowsPerBlock =
      int64_t(kWarpsPerBlock / kWarpsPerRow) * rowsPerWarp<M>();
  int64_t blocks = (w.rows + rowsPerBlock - 1) / rowsPerBlock;
  gemvKernel<M, kSteps, kWarpsPerRow>
      <<<blocks, kWarpsPerBlock * 32, 0, stream>>>(x, w, detail::hostTables(),
                                                   y);
}

/// Eight loaded steps only where the registers allow them: M = 1.
bool supportsSteps(int64_t M, int steps) {
  return steps == 4 || (steps == 8 && M == 1);
}

template <int M>
void launchTiled(const uint16_t *x, const NF4DeviceWeight &w, uint16_t *y,
                 cudaStream_t stream, GemvTiling tiling) {
  auto withWarps = [&](auto steps) {
    constexpr int kSteps = decltype(steps)::value;
    switch (tiling.warpsPerRow) {
    case 1: launch<M, kSteps, 1>(x, w, y, stream); break;
    case 2: launch<M, kSteps, 2>(x, w, y, stream); break;
    default: launch<M, kSteps, 4>(x, w, y, stream); break;
    }
  };
  if constexpr (M == 1) {
    if (tiling.steps == 8)
      return withWarps(std::integral_constant<int, 8>{});
  }
  withWarps(std::integral_constant<int, 4>{});
}

} // namespace

std::vector<GemvTiling> gemvTilings(int64_t M) {
  std::vector<GemvTiling> tilings;
  for (int steps : {4, 8})
    for (int warpsPerRow : {1, 2, 4})
      if (supportsSteps(M, steps))
        tilings.push_back({warpsPerRow, steps});
  return tilings;
}

Status nf4Gemv(const uint16_t *x, int64_t M, const NF4DeviceWeight &weight,
               uint16_t *y, cudaStream_t stream, GemvTiling tiling) {
  if (weight.cols % 8 != 0)
    return makeError("nf4Gemv: expects K to be a multiple of 8, got K = {}",
                     weight.cols);
  if (M < 1 || M > 8)
    return makeError("nf4Gemv: expects 1 <= M <= 8, got {}", M);
  if ((tiling.warpsPerRow != 1 && tiling.warpsPerRow != 2 &&
       tiling.warpsPerRow != 4) ||
      !supportsSteps(M, tiling.steps))
    return makeError("nf4Gemv: no tiling with {} warps per row and {} steps "
                     "at M = {} (warps per row: 1, 2 or 4; steps: 4, or 8 "
                     "at M = 1)",
                     tiling.warpsPerRow, tiling.steps, M);
  Expected<NF4DeviceWeight> prepared = detail::prepare(weight);
  if (!prepared)
    return prepared.error().withContext("nf4Gemv");
  const NF4DeviceWeight &w = *prepared;
  switch (M) {
  case 1: launchTiled<1>(x, w, y, stream, tiling); break;
  case 2: launchTiled<2>(x, w, y, stream, tiling); break;
  case 3: launchTiled<3>(x, w, y, stream, tiling); break;
  case 4: launchTiled<4>(x, w, y, stream, tiling); break;
  case 5: launchTiled<5>(x, w, y, stream, tiling); break;
  case 6: launchTiled<6>(x, w, y, stream, tiling); break;
  case 7: launchTiled<7>(x, w, y, stream, tiling); break;
  default: launchTiled<8>(x, w, y, stream, tiling); break;
  }
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace qlora::cuda
