//===- Attention.cu - Causal GQA flash attention on tensor cores ------------===//
//
// FlashAttention-2 on mma.sync m16n8k16 (bf16 operands, fp32 accumulators),
// with ldmatrix fragment loads from shared memory tiles that cp.async fills.
// Shared-memory rows of a tile hold headDim bf16 plus 16 bytes of padding, so
// the 8 rows an ldmatrix reads fall in distinct banks.
//
// Forward: one CTA of 4 warps per (64-query block, head, batch row); each
// warp owns 16 query rows, keeps its Q fragments in registers and runs the
// online softmax (exp2 of log2-scaled scores) over key blocks of 64, the
// probabilities going from the S accumulators straight into the A fragments
// of P·V. K of the next block loads while P·V runs and V while the next
// QKᵀ runs. Query blocks are launched longest first (causal imbalance).
//
// Backward (FA2's structure):
//  1. the dq accumulator in `scratch` is zeroed;
//  2. D = rowsum(dO o O) per query row, into `scratch`;
//  3. one CTA of 4 warps per (64-key block, kv head, batch row) holds its K
//     and V tiles and walks every query head of the group and every 32-query
//     block at or after its keys (the next block's Q, dO, lse and D load
//     while the current one computes). Each warp owns 16 keys and computes
//     Sᵀ = K Qᵀ and dPᵀ = V dOᵀ, then Pᵀ = exp(Sᵀ scale - lse) and
//     dSᵀ = Pᵀ o (dPᵀ - D) in registers, which feed dV += Pᵀ dO and
//     dK += dSᵀ Q as A fragments. dSᵀ also goes to shared memory, where the
//     4 warps read it back transposed for dQ = dS K (one 16 x headDim/2 tile
//     each) and add it to the fp32 accumulator with atomics. dK and dV stay
//     in registers for the whole CTA and are written once: deterministic.
//     When that leaves too few CTAs to fill the GPU (GQA at small batch x
//     seq), the group's query heads are split over `splits` CTAs, each
//     writing fp32 partial dK and dV to the scratch, and
//  4. a reduction adds the partials in split order (still deterministic);
//  5. dq = bf16(accumulator * scale).
//
// Masking: keys j > i (which covers keys past seq for every real query) get
// probability 0, and so do query rows past seq; tiles past seq are loaded as
// zeros (cp.async with a zero source size) so that nothing reads garbage.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/AsyncCopy.cuh"
#include "runtime/cuda/AttentionKernels.h"
#include "runtime/cuda/Bf16.cuh"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/GridStride.h"

#include <algorithm>
#include <climits>
#include <cstdint>

namespace qlora::cuda {
namespace {

using detail::cpAsync16;
using detail::cpAsyncCommit;
using detail::cpAsyncWait;
using detail::pack8;
using detail::packBf16;
using detail::sharedAddress;
using detail::unpack8;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

//===----------------------------------------------------------------------===//
// PTX wrappers
//===----------------------------------------------------------------------===//

/// Four 8x8 bf16 matrices; lane l gives the address of row l % 8 of matrix
/// l / 8 and receives row l / 4, columns 2 (l % 4) and +1 of each.
__device__ __forceinline__ void ldmatrix(uint32_t (&r)[4],
                                         const uint16_t *pointer) {
  asm volatile(
      "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
      : "r"(sharedAddress(pointer)));
}

/// The same, each matrix transposed: lane l receives column l / 4, rows
/// 2 (l % 4) and +1.
__device__ __forceinline__ void ldmatrixTrans(uint32_t (&r)[4],
                                              const uint16_t *pointer) {
  asm volatile(
      "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
      : "r"(sharedAddress(pointer)));
}

/// c += a · b on one m16n8k16 tile. With g = lane / 4 and t = lane % 4:
/// a = {A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]},
/// b = {B[2t..][g], B[2t+8..][g]}, c = {C[g][2t], C[g][2t+1], C[g+8][2t],
/// C[g+8][2t+1]} (bf16 pairs, the lower column in the low half).
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4],
                                    uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0),
                 "r"(b1));
}

/// Starts copying rows [row0, row0 + kRows) of a tensor slice (row r at
/// base + r * rowStride, D bf16 each) into shared rows of D + 8; rows at or
/// past seq become zeros.
template <int D, int kRows, int kThreads>
__device__ __forceinline__ void loadTile(uint16_t *dst, const uint16_t *base,
                                         int64_t rowStride, int row0,
                                         int seq) {
  constexpr int kChunks = D / 8, kTotal = kRows * kChunks;
  static_assert(kTotal % kThreads == 0, "tile chunks must split evenly");
#pragma unroll
  for (int c0 = 0; c0 < kTotal; c0 += kThreads) {
    const int c = c0 + int(threadIdx.x);
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool valid = row0 + r < seq;
    const uint16_t *src =
        valid ? base + int64_t(row0 + r) * rowStride + col : base;
    cpAsync16(dst + r * (D + 8) + col, src, valid);
  }
}

//===----------------------------------------------------------------------===//
// Forward
//===----------------------------------------------------------------------===//

/// Launch shape of the forward kernel for head dimension D.
template <int D> struct ForwardConfig {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBr = 16 * kWarps; ///< queries per CTA
  static constexpr int kBc = 64;          ///< keys per step
  static constexpr int kStride = D + 8;   ///< bf16 per shared row
  /// Q, K and V tiles.
  static constexpr size_t kSharedBytes =
      size_t(kBr + 2 * kBc) * kStride * sizeof(uint16_t);
};

template <int D>
__global__ void __launch_bounds__(ForwardConfig<D>::kThreads)
    forwardKernel(const uint16_t *__restrict__ q,
                  const uint16_t *__restrict__ k,
                  const uint16_t *__restrict__ v, int seq, int heads,
                  int kvHeads, float scaleLog2, uint16_t *__restrict__ out,
                  float *__restrict__ lse) {
  using C = ForwardConfig<D>;
  constexpr int kStride = C::kStride, kBr = C::kBr, kBc = C::kBc;
  constexpr int kThreads = C::kThreads;
  constexpr int kDimSteps = D / 16; ///< k-steps of QKᵀ
  constexpr int kKeyTiles = kBc / 8; ///< n-tiles of S
  constexpr int kDimTiles = D / 8;   ///< n-tiles of O
  extern __shared__ __align__(16) uint16_t shared[];
  uint16_t *sQ = shared;
  uint16_t *sK = sQ + kBr * kStride;
  uint16_t *sV = sK + kBc * kStride;

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int g = lane >> 2, t = lane & 3;
  const int lr = lane & 7, lm = lane >> 3; // ldmatrix row and matrix
  const int qBlock = int(gridDim.x) - 1 - int(blockIdx.x);
  const int h = int(blockIdx.y), b = int(blockIdx.z);
  const int kvh = h / (heads / kvHeads);
  const int i0 = qBlock * kBr;
  const int64_t qStride = int64_t(heads) * D, kvStride = int64_t(kvHeads) * D;
  const uint16_t *qBase = q + int64_t(b) * seq * qStride + int64_t(h) * D;
  const uint16_t *kBase = k + int64_t(b) * seq * kvStride + int64_t(kvh) * D;
  const uint16_t *vBase = v + int64_t(b) * seq * kvStride + int64_t(kvh) * D;
  // Keys up to the last real query of the block.
  const int keyBlocks = (min(i0 + kBr, seq) + kBc - 1) / kBc;

  loadTile<D, kBr, kThreads>(sQ, qBase, qStride, i0, seq);
  loadTile<D, kBc, kThreads>(sK, kBase, kvStride, 0, seq);
  cpAsyncCommit();
  loadTile<D, kBc, kThreads>(sV, vBase, kvStride, 0, seq);
  cpAsyncCommit();

  uint32_t qFrag[kDimSteps][4];
  float o[kDimTiles][4];
#pragma unroll
  for (int dt = 0; dt < kDimTiles; ++dt)
    o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  // Rows g and g + 8 of the warp's 16: the running max (log2 units of the
  // scaled scores) and this thread's part of the running sum.
  float rowMax[2] = {-INFINITY, -INFINITY}, rowSum[2] = {0.0f, 0.0f};

  for (int jb = 0; jb < keyBlocks; ++jb) {
    const int j0 = jb * kBc;
    cpAsyncWait<1>(); // Q and this K
    __syncthreads();
    if (jb == 0) {
#pragma unroll
      for (int s = 0; s < kDimSteps; ++s)
        ldmatrix(qFrag[s], sQ + (warp * 16 + (lane & 15)) * kStride + s * 16 +
                               (lane >> 4) * 8);
    }

    float sc[kKeyTiles][4];
#pragma unroll
    for (int nt = 0; nt < kKeyTiles; ++nt)
      sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
    for (int s = 0; s < kDimSteps; ++s) {
#pragma unroll
      for (int np = 0; np < kKeyTiles / 2; ++np) {
        uint32_t bk[4];
        ldmatrix(bk, sK + (np * 16 + lr + 8 * (lm >> 1)) * kStride + s * 16 +
                         8 * (lm & 1));
        mma(sc[2 * np], qFrag[s], bk[0], bk[1]);
        mma(sc[2 * np + 1], qFrag[s], bk[2], bk[3]);
      }
    }
    __syncthreads(); // every warp is done with sK
    if (jb + 1 < keyBlocks)
      loadTile<D, kBc, kThreads>(sK, kBase, kvStride, j0 + kBc, seq);
    cpAsyncCommit();

    // Scale into log2 units, mask, and update the online softmax.
    const bool needMask = j0 + kBc - 1 > i0 || j0 + kBc > seq;
#pragma unroll
    for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = sc[nt][e] * scaleLog2;
        if (needMask) {
          const int i = i0 + warp * 16 + g + 8 * (e >> 1);
          const int j = j0 + nt * 8 + 2 * t + (e & 1);
          if (j > i || j >= seq)
            x = -INFINITY;
        }
        sc[nt][e] = x;
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float m = rowMax[r];
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt)
        m = fmaxf(m, fmaxf(sc[nt][2 * r], sc[nt][2 * r + 1]));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
      // A row with no visible key yet keeps zeros (never -inf - -inf).
      const float base = m == -INFINITY ? 0.0f : m;
      const float correction = exp2f(rowMax[r] - base);
      rowMax[r] = m;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float p = exp2f(sc[nt][2 * r + c] - base);
          sc[nt][2 * r + c] = p;
          sum += p;
        }
      }
      rowSum[r] = rowSum[r] * correction + sum;
#pragma unroll
      for (int dt = 0; dt < kDimTiles; ++dt) {
        o[dt][2 * r] *= correction;
        o[dt][2 * r + 1] *= correction;
      }
    }

    cpAsyncWait<1>(); // this V
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      const uint32_t a[4] = {packBf16(sc[2 * kk][0], sc[2 * kk][1]),
                             packBf16(sc[2 * kk][2], sc[2 * kk][3]),
                             packBf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                             packBf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bv[4];
        ldmatrixTrans(bv, sV + (kk * 16 + lr + 8 * (lm & 1)) * kStride +
                              dp * 16 + 8 * (lm >> 1));
        mma(o[2 * dp], a, bv[0], bv[1]);
        mma(o[2 * dp + 1], a, bv[2], bv[3]);
      }
    }
    __syncthreads(); // every warp is done with sV
    if (jb + 1 < keyBlocks)
      loadTile<D, kBc, kThreads>(sV, vBase, kvStride, j0 + kBc, seq);
    cpAsyncCommit();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = rowSum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int i = i0 + warp * 16 + g + 8 * r;
    if (i >= seq)
      continue;
    const float inv = 1.0f / l;
    uint16_t *row = out + (int64_t(b) * seq + i) * qStride + int64_t(h) * D;
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt)
      *reinterpret_cast<uint32_t *>(row + dt * 8 + 2 * t) =
          packBf16(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
    if (t == 0)
      lse[(int64_t(b) * heads + h) * seq + i] = rowMax[r] * kLn2 + logf(l);
  }
}

//===----------------------------------------------------------------------===//
// Backward
//===----------------------------------------------------------------------===//

/// D[b, h, i] = sum_d dO[b, i, h, d] * O[b, i, h, d] over rows
/// (b * seq + i) * heads + h; D / 8 threads per row, 16-byte loads.
template <int D>
__global__ void __launch_bounds__(256)
    rowDotKernel(const uint16_t *__restrict__ out,
                 const uint16_t *__restrict__ dout, int64_t rows, int seq,
                 int heads, float *__restrict__ delta) {
  constexpr int kLanes = D / 8;
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kLanes;
  const int part = int(threadIdx.x) % kLanes;
  float sum = 0.0f;
  if (row < rows) {
    float x[8], y[8];
    unpack8(*reinterpret_cast<const uint4 *>(out + row * D + part * 8), x);
    unpack8(*reinterpret_cast<const uint4 *>(dout + row * D + part * 8), y);
#pragma unroll
    for (int e = 0; e < 8; ++e)
      sum = fmaf(x[e], y[e], sum);
  }
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2)
    sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (row < rows && part == 0) {
    const int64_t h = row % heads, bi = row / heads;
    const int64_t i = bi % seq, b = bi / seq;
    delta[(b * heads + h) * seq + i] = sum;
  }
}

/// Launch shape of the dK / dV / dQ kernel for head dimension D.
template <int D> struct BackwardConfig {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBc = 16 * kWarps; ///< keys per CTA
  static constexpr int kBr = 32;          ///< queries per step
  static constexpr int kStride = D + 8;   ///< bf16 per Q / K / V / dO row
  static constexpr int kDsStride = kBr + 8; ///< bf16 per dSᵀ row
  /// K, V; two stages of Q and dO; dSᵀ; two stages of lse and D.
  static constexpr size_t kSharedBytes =
      size_t(2 * kBc + 4 * kBr) * kStride * sizeof(uint16_t) +
      size_t(kBc) * kDsStride * sizeof(uint16_t) + 4 * kBr * sizeof(float);
};

__device__ __forceinline__ void addPair(float *target, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2 *>(target), make_float2(x, y));
#else
  atomicAdd(target, x);
  atomicAdd(target + 1, y);
#endif
}

template <int D>
__global__ void __launch_bounds__(BackwardConfig<D>::kThreads)
    backwardKernel(const uint16_t *__restrict__ q,
                   const uint16_t *__restrict__ k,
                   const uint16_t *__restrict__ v,
                   const uint16_t *__restrict__ dout,
                   const float *__restrict__ lse,
                   const float *__restrict__ delta, int seq, int heads,
                   int kvHeads, int splits, float scaleLog2, float scale,
                   float *__restrict__ dqAccum, float *__restrict__ dkvPartial,
                   uint16_t *__restrict__ dk, uint16_t *__restrict__ dv) {
  using C = BackwardConfig<D>;
  constexpr int kStride = C::kStride, kDsStride = C::kDsStride;
  constexpr int kBr = C::kBr, kBc = C::kBc, kThreads = C::kThreads;
  constexpr int kDimSteps = D / 16;    ///< k-steps of K Qᵀ and V dOᵀ
  constexpr int kQueryTiles = kBr / 8; ///< n-tiles of Sᵀ
  constexpr int kDimTiles = D / 8;     ///< n-tiles of dK and dV
  constexpr int kHalfTiles = D / 16;   ///< n-tiles of a warp's dQ part
  extern __shared__ __align__(16) uint16_t shared[];
  uint16_t *sK = shared;
  uint16_t *sV = sK + kBc * kStride;
  uint16_t *sQ = sV + kBc * kStride;       // [2][kBr * kStride]
  uint16_t *sdO = sQ + 2 * kBr * kStride;  // [2][kBr * kStride]
  uint16_t *sdsT = sdO + 2 * kBr * kStride; // [kBc][kDsStride]
  float *sLse = reinterpret_cast<float *>(sdsT + kBc * kDsStride); // [2][kBr]
  float *sDelta = sLse + 2 * kBr;                                   // [2][kBr]

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int g = lane >> 2, t = lane & 3;
  const int lr = lane & 7, lm = lane >> 3;
  // blockIdx.y = kv head * splits + split: the split takes query heads
  // [split * headsPerSplit, (split + 1) * headsPerSplit) of the group.
  const int kvh = int(blockIdx.y) / splits, split = int(blockIdx.y) % splits;
  const int b = int(blockIdx.z);
  const int headsPerSplit = heads / kvHeads / splits;
  const int firstHead = kvh * (heads / kvHeads) + split * headsPerSplit;
  const int j0 = int(blockIdx.x) * kBc;
  const int iStart = (j0 / kBr) * kBr; // queries before see none of the keys
  const int qSteps = (seq - iStart + kBr - 1) / kBr;
  const int steps = headsPerSplit * qSteps;
  const int64_t qStride = int64_t(heads) * D, kvStride = int64_t(kvHeads) * D;
  const int64_t qBatch = int64_t(b) * seq * qStride;
  const int64_t kvSlice = int64_t(b) * seq * kvStride + int64_t(kvh) * D;

  // Step s covers query head firstHead + s / qSteps, queries from
  // iStart + (s % qSteps) * kBr.
  auto loadStep = [&](int step, int stage) {
    const int h = firstHead + step / qSteps;
    const int i0 = iStart + (step % qSteps) * kBr;
    loadTile<D, kBr, kThreads>(sQ + stage * kBr * kStride,
                               q + qBatch + int64_t(h) * D, qStride, i0, seq);
    loadTile<D, kBr, kThreads>(sdO + stage * kBr * kStride,
                               dout + qBatch + int64_t(h) * D, qStride, i0,
                               seq);
    if (int(threadIdx.x) < kBr) {
      const int i = i0 + int(threadIdx.x);
      const int64_t index = (int64_t(b) * heads + h) * seq + i;
      sLse[stage * kBr + threadIdx.x] = i < seq ? lse[index] * kLog2e : 0.0f;
      sDelta[stage * kBr + threadIdx.x] = i < seq ? delta[index] : 0.0f;
    }
  };

  loadTile<D, kBc, kThreads>(sK, k + kvSlice, kvStride, j0, seq);
  loadTile<D, kBc, kThreads>(sV, v + kvSlice, kvStride, j0, seq);
  loadStep(0, 0);
  cpAsyncCommit();

  float dkAcc[kDimTiles][4], dvAcc[kDimTiles][4];
#pragma unroll
  for (int dt = 0; dt < kDimTiles; ++dt) {
#pragma unroll
    for (int e = 0; e < 4; ++e)
      dkAcc[dt][e] = dvAcc[dt][e] = 0.0f;
  }

  for (int step = 0; step < steps; ++step) {
    const int stage = step & 1;
    const int h = firstHead + step / qSteps;
    const int i0 = iStart + (step % qSteps) * kBr;
    cpAsyncWait<0>();
    // Also: every warp is done with the other stage and with sdsT.
    __syncthreads();
    if (step + 1 < steps)
      loadStep(step + 1, stage ^ 1);
    cpAsyncCommit();
    const uint16_t *sQs = sQ + stage * kBr * kStride;
    const uint16_t *sdOs = sdO + stage * kBr * kStride;
    const float *lseS = sLse + stage * kBr, *deltaS = sDelta + stage * kBr;

    // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ on this warp's 16 keys.
    float st[kQueryTiles][4], dpt[kQueryTiles][4];
#pragma unroll
    for (int nt = 0; nt < kQueryTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e)
        st[nt][e] = dpt[nt][e] = 0.0f;
    }
#pragma unroll
    for (int s = 0; s < kDimSteps; ++s) {
      uint32_t ak[4], av[4];
      const int aOffset =
          (warp * 16 + (lane & 15)) * kStride + s * 16 + (lane >> 4) * 8;
      ldmatrix(ak, sK + aOffset);
      ldmatrix(av, sV + aOffset);
#pragma unroll
      for (int np = 0; np < kQueryTiles / 2; ++np) {
        uint32_t bq[4], bo[4];
        const int bOffset =
            (np * 16 + lr + 8 * (lm >> 1)) * kStride + s * 16 + 8 * (lm & 1);
        ldmatrix(bq, sQs + bOffset);
        ldmatrix(bo, sdOs + bOffset);
        mma(st[2 * np], ak, bq[0], bq[1]);
        mma(st[2 * np + 1], ak, bq[2], bq[3]);
        mma(dpt[2 * np], av, bo[0], bo[1]);
        mma(dpt[2 * np + 1], av, bo[2], bo[3]);
      }
    }

    // Pᵀ = exp(Sᵀ scale - lse) and dSᵀ = Pᵀ o (dPᵀ - D), in place.
    const bool needMask = i0 < j0 + kBc - 1 || i0 + kBr > seq;
#pragma unroll
    for (int nt = 0; nt < kQueryTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int il = nt * 8 + 2 * t + (e & 1);
        float p = exp2f(fmaf(st[nt][e], scaleLog2, -lseS[il]));
        float ds = p * (dpt[nt][e] - deltaS[il]);
        if (needMask) {
          const int j = j0 + warp * 16 + g + 8 * (e >> 1);
          if (j > i0 + il || i0 + il >= seq)
            p = ds = 0.0f;
        }
        st[nt][e] = p;
        dpt[nt][e] = ds;
      }
    }

    // dV += Pᵀ dO and dK += dSᵀ Q (the scale is applied at the end).
#pragma unroll
    for (int kq = 0; kq < kBr / 16; ++kq) {
      const uint32_t ap[4] = {packBf16(st[2 * kq][0], st[2 * kq][1]),
                              packBf16(st[2 * kq][2], st[2 * kq][3]),
                              packBf16(st[2 * kq + 1][0], st[2 * kq + 1][1]),
                              packBf16(st[2 * kq + 1][2], st[2 * kq + 1][3])};
      const uint32_t ad[4] = {packBf16(dpt[2 * kq][0], dpt[2 * kq][1]),
                              packBf16(dpt[2 * kq][2], dpt[2 * kq][3]),
                              packBf16(dpt[2 * kq + 1][0], dpt[2 * kq + 1][1]),
                              packBf16(dpt[2 * kq + 1][2], dpt[2 * kq + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bo[4], bq[4];
        const int offset =
            (kq * 16 + lr + 8 * (lm & 1)) * kStride + dp * 16 + 8 * (lm >> 1);
        ldmatrixTrans(bo, sdOs + offset);
        ldmatrixTrans(bq, sQs + offset);
        mma(dvAcc[2 * dp], ap, bo[0], bo[1]);
        mma(dvAcc[2 * dp + 1], ap, bo[2], bo[3]);
        mma(dkAcc[2 * dp], ad, bq[0], bq[1]);
        mma(dkAcc[2 * dp + 1], ad, bq[2], bq[3]);
      }
    }

    // dSᵀ to shared memory: dQ needs it across the 4 warps' keys.
#pragma unroll
    for (int nt = 0; nt < kQueryTiles; ++nt) {
      uint16_t *row = sdsT + (warp * 16 + g) * kDsStride + nt * 8 + 2 * t;
      *reinterpret_cast<uint32_t *>(row) =
          packBf16(dpt[nt][0], dpt[nt][1]);
      *reinterpret_cast<uint32_t *>(row + 8 * kDsStride) =
          packBf16(dpt[nt][2], dpt[nt][3]);
    }
    __syncthreads();

    // dQ = dS K: warp w takes queries 16 (w % 2).. and half w / 2 of the
    // head dimension, over the CTA's 64 keys.
    const int mt = warp & 1, half = warp >> 1;
    float dqAcc[kHalfTiles][4];
#pragma unroll
    for (int nt = 0; nt < kHalfTiles; ++nt)
      dqAcc[nt][0] = dqAcc[nt][1] = dqAcc[nt][2] = dqAcc[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t a[4];
      ldmatrixTrans(a, sdsT + (kk * 16 + lr + 8 * (lm >> 1)) * kDsStride +
                           mt * 16 + 8 * (lm & 1));
#pragma unroll
      for (int dp = 0; dp < kHalfTiles / 2; ++dp) {
        uint32_t bk[4];
        ldmatrixTrans(bk, sK + (kk * 16 + lr + 8 * (lm & 1)) * kStride +
                              half * (D / 2) + dp * 16 + 8 * (lm >> 1));
        mma(dqAcc[2 * dp], a, bk[0], bk[1]);
        mma(dqAcc[2 * dp + 1], a, bk[2], bk[3]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int i = i0 + mt * 16 + g + 8 * r;
      if (i >= seq)
        continue;
      float *row = dqAccum + qBatch + int64_t(i) * qStride + int64_t(h) * D +
                   half * (D / 2) + 2 * t;
#pragma unroll
      for (int nt = 0; nt < kHalfTiles; ++nt)
        addPair(row + nt * 8, dqAcc[nt][2 * r], dqAcc[nt][2 * r + 1]);
    }
  }

  // One split: dK and dV in bf16. Several: this split's fp32 partials, dK
  // unscaled, at [split][dk or dv][dk's layout] (the reduction scales).
  const int64_t partialStride = int64_t(gridDim.z) * seq * kvStride;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int j = j0 + warp * 16 + g + 8 * r;
    if (j >= seq)
      continue;
    const int64_t offset = kvSlice + int64_t(j) * kvStride + 2 * t;
    if (dkvPartial) {
      float *pk = dkvPartial + 2 * split * partialStride + offset;
      float *pv = pk + partialStride;
#pragma unroll
      for (int dt = 0; dt < kDimTiles; ++dt) {
        *reinterpret_cast<float2 *>(pk + dt * 8) =
            make_float2(dkAcc[dt][2 * r], dkAcc[dt][2 * r + 1]);
        *reinterpret_cast<float2 *>(pv + dt * 8) =
            make_float2(dvAcc[dt][2 * r], dvAcc[dt][2 * r + 1]);
      }
      continue;
    }
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt) {
      *reinterpret_cast<uint32_t *>(dk + offset + dt * 8) =
          packBf16(dkAcc[dt][2 * r] * scale, dkAcc[dt][2 * r + 1] * scale);
      *reinterpret_cast<uint32_t *>(dv + offset + dt * 8) =
          packBf16(dvAcc[dt][2 * r], dvAcc[dt][2 * r + 1]);
    }
  }
}

/// dk = bf16(scale * sum of the splits' partial dK), dv likewise unscaled,
/// the splits added in order; 4 elements per thread.
__global__ void __launch_bounds__(256)
    reduceSplitsKernel(const float *__restrict__ partials, int splits,
                       int64_t elements, float scale,
                       uint16_t *__restrict__ dk, uint16_t *__restrict__ dv) {
  const int64_t quads = elements / 4;
  for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
       index < quads; index += int64_t(gridDim.x) * blockDim.x) {
    float4 k = make_float4(0, 0, 0, 0), v = make_float4(0, 0, 0, 0);
    for (int split = 0; split < splits; ++split) {
      const float4 *pk = reinterpret_cast<const float4 *>(
          partials + 2 * int64_t(split) * elements);
      const float4 *pv = reinterpret_cast<const float4 *>(
          partials + (2 * int64_t(split) + 1) * elements);
      float4 a = pk[index], c = pv[index];
      k = make_float4(k.x + a.x, k.y + a.y, k.z + a.z, k.w + a.w);
      v = make_float4(v.x + c.x, v.y + c.y, v.z + c.z, v.w + c.w);
    }
    reinterpret_cast<uint2 *>(dk)[index] =
        make_uint2(packBf16(k.x * scale, k.y * scale),
                   packBf16(k.z * scale, k.w * scale));
    reinterpret_cast<uint2 *>(dv)[index] =
        make_uint2(packBf16(v.x, v.y), packBf16(v.z, v.w));
  }
}

/// dq = bf16(accumulator * scale), 8 elements per thread.
__global__ void __launch_bounds__(256)
    dqConvertKernel(const float *__restrict__ accumulator, int64_t vectors,
                    float scale, uint16_t *__restrict__ dq) {
  for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
       index < vectors; index += int64_t(gridDim.x) * blockDim.x) {
    const float4 lo = reinterpret_cast<const float4 *>(accumulator)[2 * index];
    const float4 hi =
        reinterpret_cast<const float4 *>(accumulator)[2 * index + 1];
    const float values[8] = {lo.x * scale, lo.y * scale, lo.z * scale,
                             lo.w * scale, hi.x * scale, hi.y * scale,
                             hi.z * scale, hi.w * scale};
    reinterpret_cast<uint4 *>(dq)[index] = pack8(values);
  }
}

//===----------------------------------------------------------------------===//
// Host side
//===----------------------------------------------------------------------===//

/// The shape checks both entries share.
Status checkShape(const char *name, int64_t batch, int64_t seq, int64_t heads,
                  int64_t kvHeads, int64_t headDim) {
  if (headDim != 64 && headDim != 128)
    return makeError("{}: expects headDim 64 or 128, got {}", name, headDim);
  if (kvHeads <= 0 || heads <= 0 || heads % kvHeads != 0)
    return makeError("{}: expects heads to be a positive multiple of kvHeads, "
                     "got heads {} and kvHeads {}",
                     name, heads, kvHeads);
  if (batch < 0 || seq < 0)
    return makeError("{}: expects batch >= 0 and seq >= 0, got batch {} and "
                     "seq {}",
                     name, batch, seq);
  // Grid y and z, and int query / key indices in the kernels.
  if (heads > 65535 || batch > 65535 || seq > INT_MAX - 256)
    return makeError("{}: expects heads and batch of at most 65535 and seq "
                     "below 2^31, got heads {}, batch {}, seq {}",
                     name, heads, batch, seq);
  return Status::ok();
}

Status checkAligned(const char *name,
                    std::initializer_list<const void *> pointers) {
  for (const void *pointer : pointers)
    if (!detail::aligned16({pointer}))
      return makeError("{}: expects 16-byte aligned tensors, got {}", name,
                       pointer);
  return Status::ok();
}

template <int D>
Status launchForward(const uint16_t *q, const uint16_t *k, const uint16_t *v,
                     int64_t batch, int64_t seq, int64_t heads,
                     int64_t kvHeads, float scale, uint16_t *out, float *lse,
                     cudaStream_t stream) {
  using C = ForwardConfig<D>;
  auto kernel = forwardKernel<D>;
  QLORA_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           int(C::kSharedBytes)));
  const dim3 grid(unsigned((seq + C::kBr - 1) / C::kBr), unsigned(heads),
                  unsigned(batch));
  kernel<<<grid, C::kThreads, C::kSharedBytes, stream>>>(
      q, k, v, int(seq), int(heads), int(kvHeads), scale * kLog2e, out, lse);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

static_assert(BackwardConfig<64>::kBc == kAttentionBackwardKeyBlock &&
                  BackwardConfig<128>::kBc == kAttentionBackwardKeyBlock,
              "Workspaces.h sizes the backward by this key block");

/// `requested`, or the default where it is 0; an error unless it divides
/// the group.
Expected<int64_t> resolveSplits(const char *name, int64_t batch, int64_t seq,
                                int64_t heads, int64_t kvHeads,
                                int64_t requested) {
  const int64_t splits =
      requested == 0 ? attentionBackwardSplits(batch, seq, heads, kvHeads)
                     : requested;
  if (splits < 1 || (heads / kvHeads) % splits != 0)
    return makeError("{}: splits must divide the {} query heads of a kv "
                     "head, got {}",
                     name, heads / kvHeads, splits);
  return splits;
}

template <int D>
Status launchBackward(const uint16_t *q, const uint16_t *k, const uint16_t *v,
                      const uint16_t *out, const float *lse,
                      const uint16_t *dout, int64_t batch, int64_t seq,
                      int64_t heads, int64_t kvHeads, float scale,
                      int64_t splits, float *dqAccum, float *delta,
                      float *dkvPartial, uint16_t *dq, uint16_t *dk,
                      uint16_t *dv, cudaStream_t stream) {
  using C = BackwardConfig<D>;
  const int64_t rows = batch * seq * heads;
  QLORA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
      dqAccum, 0, size_t(rows) * D * sizeof(float), stream));

  constexpr int64_t kRowThreads = 256;
  const int64_t dotBlocks = (rows * (D / 8) + kRowThreads - 1) / kRowThreads;
  rowDotKernel<D><<<unsigned(dotBlocks), kRowThreads, 0, stream>>>(
      out, dout, rows, int(seq), int(heads), delta);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());

  auto kernel = backwardKernel<D>;
  QLORA_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           int(C::kSharedBytes)));
  const dim3 grid(unsigned((seq + C::kBc - 1) / C::kBc),
                  unsigned(kvHeads * splits), unsigned(batch));
  kernel<<<grid, C::kThreads, C::kSharedBytes, stream>>>(
      q, k, v, dout, lse, delta, int(seq), int(heads), int(kvHeads),
      int(splits), scale * kLog2e, scale, dqAccum,
      splits > 1 ? dkvPartial : nullptr, dk, dv);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());

  if (splits > 1) {
    const int64_t elements = batch * seq * kvHeads * D;
    const int64_t blocks =
        std::min<int64_t>((elements / 4 + 255) / 256, int64_t(1) << 16);
    reduceSplitsKernel<<<unsigned(blocks), 256, 0, stream>>>(
        dkvPartial, int(splits), elements, scale, dk, dv);
    QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }

  const int64_t vectors = rows * D / 8;
  const int64_t convertBlocks =
      std::min<int64_t>((vectors + 255) / 256, int64_t(1) << 16);
  dqConvertKernel<<<unsigned(convertBlocks), 256, 0, stream>>>(
      dqAccum, vectors, scale, dq);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace

Status attentionForward(const uint16_t *q, const uint16_t *k,
                        const uint16_t *v, int64_t batch, int64_t seq,
                        int64_t heads, int64_t kvHeads, int64_t headDim,
                        float scale, uint16_t *out, float *lse,
                        cudaStream_t stream) {
  const char *name = "attentionForward";
  QLORA_RETURN_IF_ERROR(checkShape(name, batch, seq, heads, kvHeads, headDim));
  QLORA_RETURN_IF_ERROR(checkAligned(name, {q, k, v, out}));
  if (batch == 0 || seq == 0)
    return Status::ok();
  if (headDim == 64)
    return launchForward<64>(q, k, v, batch, seq, heads, kvHeads, scale, out,
                             lse, stream);
  return launchForward<128>(q, k, v, batch, seq, heads, kvHeads, scale, out,
                            lse, stream);
}

Status attentionBackward(const uint16_t *q, const uint16_t *k,
                         const uint16_t *v, const uint16_t *out,
                         const float *lse, const uint16_t *dout, int64_t batch,
                         int64_t seq, int64_t heads, int64_t kvHeads,
                         int64_t headDim, float scale, void *scratch,
                         uint16_t *dq, uint16_t *dk, uint16_t *dv,
                         cudaStream_t stream, int64_t requestedSplits) {
  const char *name = "attentionBackward";
  QLORA_RETURN_IF_ERROR(checkShape(name, batch, seq, heads, kvHeads, headDim));
  Expected<int64_t> splits =
      resolveSplits(name, batch, seq, heads, kvHeads, requestedSplits);
  if (!splits)
    return splits.error();
  QLORA_RETURN_IF_ERROR(
      checkAligned(name, {q, k, v, out, dout, scratch, dq, dk, dv}));
  if (batch == 0 || seq == 0)
    return Status::ok();
  float *dqAccum = static_cast<float *>(scratch);
  float *delta = dqAccum + batch * seq * heads * headDim;
  float *dkvPartial =
      dqAccum + attentionBackwardPartialsOffset(batch, seq, heads, headDim);
  if (headDim == 64)
    return launchBackward<64>(q, k, v, out, lse, dout, batch, seq, heads,
                              kvHeads, scale, *splits, dqAccum, delta,
                              dkvPartial, dq, dk, dv, stream);
  return launchBackward<128>(q, k, v, out, lse, dout, batch, seq, heads,
                             kvHeads, scale, *splits, dqAccum, delta,
                             dkvPartial, dq, dk, dv, stream);
}

} // namespace qlora::cuda
