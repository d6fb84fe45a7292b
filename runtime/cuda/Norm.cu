//===- Norm.cu - RMSNorm forward and backward on the GPU --------------------===//
//
// One warp per row: the row's reduction is a handful of shuffles, no shared
// memory and no block barrier, and rows of training steps (batch x seq) are
// many. A row is split into a scalar head up to the first 16-byte boundary,
// 16-byte vectors of 8 bf16, and a scalar tail, so that any hidden size
// (4096 + 3 included, whose rows start at every alignment) uses vector loads
// for the activations. The frozen weight is shared by all rows and stays in
// L1/L2; it is read as vectors when its offset is aligned too, else element by
// element. Each pass re-reads the row (L1/L2) instead of holding it in
// registers, so that hidden has no upper bound.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/Bf16.cuh"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/TrainingKernels.h"

#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

namespace qlora::cuda {
namespace {

using detail::bf16ToFloat;
using detail::floatToBf16;
using detail::pack8;
using detail::packBf16;
using detail::unpack8;

constexpr int kWarpsPerBlock = 8;

/// A row as [0, head) scalar, `vectors` 8-element vectors, then a scalar
/// tail up to hidden. With `vectorize` false the whole row is the head.
struct RowSplit {
  int64_t head, vectors;
};

__device__ __forceinline__ RowSplit splitRow(const uint16_t *row,
                                             int64_t hidden, bool vectorize) {
  if (!vectorize)
    return {hidden, 0};
  int64_t misaligned = int64_t((reinterpret_cast<uintptr_t>(row) & 15u) / 2);
  int64_t head = misaligned == 0 ? 0 : min(int64_t(8) - misaligned, hidden);
  return {head, (hidden - head) / 8};
}

/// 8 weight values starting at `w` (16-byte aligned when `aligned`).
__device__ __forceinline__ void loadWeight8(const uint16_t *w, bool aligned,
                                            float *out) {
  if (aligned) {
    unpack8(__ldg(reinterpret_cast<const uint4 *>(w)), out);
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k)
      out[k] = bf16ToFloat(__ldg(w + k));
  }
}

__device__ __forceinline__ float warpSum(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

/// x and y are not __restrict__: y may alias x. Each element is read and
/// written by the same lane, and the shuffle reduction orders every read of
/// the first pass before any write.
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    rmsNormForwardKernel(const uint16_t *x, const uint16_t *__restrict__ weight,
                         int64_t rows, int64_t hidden, float eps, bool vectorize,
                         uint16_t *y, float *__restrict__ rstd) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows)
    return;
  const uint16_t *xr = x + row * hidden;
  uint16_t *yr = y + row * hidden;
  const RowSplit split = splitRow(xr, hidden, vectorize);
  const int64_t tail = split.head + split.vectors * 8;

  // Pass 1: sum of squares (a bf16 square is exact in fp32).
  float sum = 0.0f;
  for (int64_t i = lane; i < split.head; i += 32) {
    float v = bf16ToFloat(xr[i]);
    sum += v * v;
  }
  for (int64_t k = lane; k < split.vectors; k += 32) {
    float v[8];
    unpack8(*reinterpret_cast<const uint4 *>(xr + split.head + 8 * k), v);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      sum += v[j] * v[j];
  }
  for (int64_t i = tail + lane; i < hidden; i += 32) {
    float v = bf16ToFloat(xr[i]);
    sum += v * v;
  }
  sum = warpSum(sum);
  // torch: variance = mean(x^2); x * rsqrt(variance + eps). IEEE sqrt and
  // division (no fast math), as the CPU reference computes 1 / sqrt.
  const float r = 1.0f / sqrtf(sum / float(hidden) + eps);
  if (lane == 0)
    rstd[row] = r;

  // Pass 2: y = weight * (x * r), the CPU's order.
  for (int64_t i = lane; i < split.head; i += 32)
    yr[i] = floatToBf16(bf16ToFloat(__ldg(weight + i)) *
                        (bf16ToFloat(xr[i]) * r));
  const bool weightAligned =
      ((reinterpret_cast<uintptr_t>(weight + split.head)) & 15u) == 0;
  for (int64_t k = lane; k < split.vectors; k += 32) {
    const int64_t i = split.head + 8 * k;
    float v[8], w[8], out[8];
    unpack8(*reinterpret_cast<const uint4 *>(xr + i), v);
    loadWeight8(weight + i, weightAligned, w);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      out[j] = w[j] * (v[j] * r);
    *reinterpret_cast<uint4 *>(yr + i) = pack8(out);
  }
  for (int64_t i = tail + lane; i < hidden; i += 32)
    yr[i] = floatToBf16(bf16ToFloat(__ldg(weight + i)) *
                        (bf16ToFloat(xr[i]) * r));
}

/// With g = weight * dy and r = rstd[row]:
///   dx_i = r g_i - x_i r^3 sum_j(g_j x_j) / hidden.
/// dx may alias dy (same argument as the forward).
/// The common case, rows of at most 8192 aligned elements: each lane keeps
/// its 16-byte vectors of the row in registers, so x is read from memory once
/// and all of a lane's loads are in flight together. Same per-lane order of
/// operations as rmsNormForwardKernel, hence the same bits. y may alias x:
/// a lane reads all of its elements before it writes any.
template <int V>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    rmsNormForwardCachedKernel(const uint16_t *x,
                               const uint16_t *__restrict__ weight,
                               int64_t rows, int64_t hidden, float eps,
                               uint16_t *y,
                               float *__restrict__ rstd) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows)
    return;
  const int64_t vectors = hidden / 8;
  const uint4 *xr = reinterpret_cast<const uint4 *>(x + row * hidden);
  uint4 cache[V];
#pragma unroll
  for (int j = 0; j < V; ++j)
    if (lane + 32 * j < vectors)
      cache[j] = xr[lane + 32 * j];
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    if (lane + 32 * j >= vectors)
      break;
    float v[8];
    unpack8(cache[j], v);
#pragma unroll
    for (int e = 0; e < 8; ++e)
      sum += v[e] * v[e];
  }
  sum = warpSum(sum);
  const float r = 1.0f / sqrtf(sum / float(hidden) + eps);
  if (lane == 0)
    rstd[row] = r;
  const uint4 *wr = reinterpret_cast<const uint4 *>(weight);
  uint4 *yr = reinterpret_cast<uint4 *>(y + row * hidden);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int64_t k = lane + 32 * j;
    if (k >= vectors)
      break;
    float v[8], w[8], out[8];
    unpack8(cache[j], v);
    unpack8(__ldg(&wr[k]), w);
#pragma unroll
    for (int e = 0; e < 8; ++e)
      out[e] = w[e] * (v[e] * r);
    yr[k] = pack8(out);
  }
}

/// The backward's common case, like rmsNormForwardCachedKernel: x and dy of
/// the lane stay in registers between the two passes (read once), with the
/// per-lane operation order of rmsNormBackwardKernel. dx may alias dy.
template <int V>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    rmsNormBackwardCachedKernel(const uint16_t *x,
                                const uint16_t *__restrict__ weight,
                                const uint16_t *dy,
                                const float *__restrict__ rstd, int64_t rows,
                                int64_t hidden, uint16_t *dx) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows)
    return;
  const int64_t vectors = hidden / 8;
  const uint4 *xr = reinterpret_cast<const uint4 *>(x + row * hidden);
  const uint4 *dyr = reinterpret_cast<const uint4 *>(dy + row * hidden);
  const uint4 *wr = reinterpret_cast<const uint4 *>(weight);
  uint4 xs[V], dys[V];
#pragma unroll
  for (int j = 0; j < V; ++j)
    if (lane + 32 * j < vectors) {
      xs[j] = xr[lane + 32 * j];
      dys[j] = dyr[lane + 32 * j];
    }
  float dot = 0.0f;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    if (lane + 32 * j >= vectors)
      break;
    float xv[8], dv[8], w[8];
    unpack8(xs[j], xv);
    unpack8(dys[j], dv);
    unpack8(__ldg(&wr[lane + 32 * j]), w);
#pragma unroll
    for (int e = 0; e < 8; ++e)
      dot += (w[e] * dv[e]) * xv[e];
  }
  dot = warpSum(dot);
  const float r = __ldg(rstd + row);
  const float c = r * r * r * dot / float(hidden);
  uint4 *dxr = reinterpret_cast<uint4 *>(dx + row * hidden);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int64_t k = lane + 32 * j;
    if (k >= vectors)
      break;
    float xv[8], dv[8], w[8], out[8];
    unpack8(xs[j], xv);
    unpack8(dys[j], dv);
    unpack8(__ldg(&wr[k]), w);
#pragma unroll
    for (int e = 0; e < 8; ++e)
      out[e] = r * (w[e] * dv[e]) - xv[e] * c;
    dxr[k] = pack8(out);
  }
}

__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    rmsNormBackwardKernel(const uint16_t *x,
                          const uint16_t *__restrict__ weight,
                          const uint16_t *dy, const float *__restrict__ rstd,
                          int64_t rows, int64_t hidden, bool vectorize,
                          uint16_t *dx) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows)
    return;
  const uint16_t *xr = x + row * hidden;
  const uint16_t *dyr = dy + row * hidden;
  uint16_t *dxr = dx + row * hidden;
  const RowSplit split = splitRow(xr, hidden, vectorize);
  const int64_t tail = split.head + split.vectors * 8;
  const bool weightAligned =
      ((reinterpret_cast<uintptr_t>(weight + split.head)) & 15u) == 0;

  // Pass 1: sum_j (w_j dy_j) x_j; w_j dy_j is exact in fp32 (bf16 x bf16).
  float dot = 0.0f;
  auto scalarDot = [&](int64_t i) {
    float g = bf16ToFloat(__ldg(weight + i)) * bf16ToFloat(dyr[i]);
    dot += g * bf16ToFloat(xr[i]);
  };
  for (int64_t i = lane; i < split.head; i += 32)
    scalarDot(i);
  for (int64_t k = lane; k < split.vectors; k += 32) {
    const int64_t i = split.head + 8 * k;
    float xv[8], dv[8], w[8];
    unpack8(*reinterpret_cast<const uint4 *>(xr + i), xv);
    unpack8(*reinterpret_cast<const uint4 *>(dyr + i), dv);
    loadWeight8(weight + i, weightAligned, w);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      dot += (w[j] * dv[j]) * xv[j];
  }
  for (int64_t i = tail + lane; i < hidden; i += 32)
    scalarDot(i);
  dot = warpSum(dot);
  const float r = __ldg(rstd + row);
  const float c = r * r * r * dot / float(hidden);

  // Pass 2: dx = r * (w * dy) - x * c, the CPU's order.
  auto scalarDx = [&](int64_t i) {
    float g = bf16ToFloat(__ldg(weight + i)) * bf16ToFloat(dyr[i]);
    dxr[i] = floatToBf16(r * g - bf16ToFloat(xr[i]) * c);
  };
  for (int64_t i = lane; i < split.head; i += 32)
    scalarDx(i);
  for (int64_t k = lane; k < split.vectors; k += 32) {
    const int64_t i = split.head + 8 * k;
    float xv[8], dv[8], w[8], out[8];
    unpack8(*reinterpret_cast<const uint4 *>(xr + i), xv);
    unpack8(*reinterpret_cast<const uint4 *>(dyr + i), dv);
    loadWeight8(weight + i, weightAligned, w);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      out[j] = r * (w[j] * dv[j]) - xv[j] * c;
    *reinterpret_cast<uint4 *>(dxr + i) = pack8(out);
  }
  for (int64_t i = tail + lane; i < hidden; i += 32)
    scalarDx(i);
}

/// Whether every row of the given tensors starts at the same offset from a
/// 16-byte boundary, so that one head length serves all of them.
bool sameAlignment(std::initializer_list<const void *> pointers) {
  uintptr_t first = reinterpret_cast<uintptr_t>(*pointers.begin()) & 15u;
  for (const void *p : pointers)
    if ((reinterpret_cast<uintptr_t>(p) & 15u) != first ||
        (reinterpret_cast<uintptr_t>(p) & 1u) != 0)
      return false;
  return true;
}

int64_t blocksFor(int64_t rows) {
  return (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
}

bool allAligned16(std::initializer_list<const void *> pointers) {
  for (const void *p : pointers)
    if ((reinterpret_cast<uintptr_t>(p) & 15u) != 0)
      return false;
  return true;
}

/// 16-byte vectors each lane holds when a warp caches a whole row.
int64_t cachedVectorsPerLane(int64_t hidden) { return (hidden / 8 + 31) / 32; }

/// Calls `launch(std::integral_constant<int, N>{})` with the smallest N of
/// 4, 8, 16, ... up to MaxN that holds `perLane` vectors: a cached kernel's
/// registers grow with N, so the smallest that fits.
template <int N, int MaxN, typename Launch>
void withCachedVectors(int64_t perLane, Launch launch) {
  if constexpr (N < MaxN) {
    if (perLane > N)
      return withCachedVectors<2 * N, MaxN>(perLane, launch);
  }
  launch(std::integral_constant<int, N>{});
}

} // namespace

Status rmsNormForward(const uint16_t *x, const uint16_t *weight, int64_t rows,
                      int64_t hidden, float eps, uint16_t *y, float *rstd,
                      cudaStream_t stream) {
  if (rows <= 0 || hidden <= 0)
    return Status::ok();
  constexpr int kMaxCached = 32;
  int64_t perLane = cachedVectorsPerLane(hidden);
  if (hidden % 8 == 0 && perLane <= kMaxCached &&
      allAligned16({x, y, weight})) {
    withCachedVectors<4, kMaxCached>(perLane, [&](auto vectors) {
      rmsNormForwardCachedKernel<decltype(vectors)::value>
          <<<blocksFor(rows), kWarpsPerBlock * 32, 0, stream>>>(
              x, weight, rows, hidden, eps, y, rstd);
    });
  } else {
    rmsNormForwardKernel<<<blocksFor(rows), kWarpsPerBlock * 32, 0, stream>>>(
        x, weight, rows, hidden, eps, sameAlignment({x, y}), y, rstd);
  }
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status rmsNormBackward(const uint16_t *x, const uint16_t *weight,
                       const uint16_t *dy, const float *rstd, int64_t rows,
                       int64_t hidden, uint16_t *dx, cudaStream_t stream) {
  if (rows <= 0 || hidden <= 0)
    return Status::ok();
  // The backward caches x and dy, twice the registers: up to 16 vectors.
  constexpr int kMaxCached = 16;
  int64_t perLane = cachedVectorsPerLane(hidden);
  if (hidden % 8 == 0 && perLane <= kMaxCached &&
      allAligned16({x, dy, dx, weight})) {
    withCachedVectors<4, kMaxCached>(perLane, [&](auto vectors) {
      rmsNormBackwardCachedKernel<decltype(vectors)::value>
          <<<blocksFor(rows), kWarpsPerBlock * 32, 0, stream>>>(
              x, weight, dy, rstd, rows, hidden, dx);
    });
  } else {
    rmsNormBackwardKernel<<<blocksFor(rows), kWarpsPerBlock * 32, 0, stream>>>(
        x, weight, dy, rstd, rows, hidden, sameAlignment({x, dy, dx}), dx);
  }
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace qlora::cuda
