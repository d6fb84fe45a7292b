//===- NF4FusedGemm.cu - Large-M NF4 forward, dequantized in the main loop --===//
//
// y[M, N] = x[M, K] · Wᵀ on Hopper's warpgroup MMA (wgmma, sm_90a) with the
// NF4 weight decoded into shared memory tile by tile, never written to
// global memory: the alternative to dequantize-into-scratch + cuBLAS that
// issue 4 asks to be measured. A CTA of two warpgroups owns a 128 x 128
// tile of y and walks K in steps of 64 (one quantization block a row when
// the block size is a multiple of 64):
//  - x's 128 x 64 tile arrives by cp.async, and each thread decodes 32 NF4
//    codes of W's 128 x 64 tile (16 packed bytes, one block maximum) into
//    bf16, both stored K-major with the 128-byte swizzle wgmma reads;
//  - each warpgroup multiplies its 64 rows of x with the whole W tile
//    (four m64n128k16 steps), asynchronously, while all threads load and
//    decode the next K step into the other of two stages.
// The weight is rounded to bf16 exactly as the reference dequantization
// does, accumulation is fp32, y is rounded once.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/AsyncCopy.cuh"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Device.cuh"

#include <cuda_bf16.h>

namespace qlora::cuda {
namespace {

using detail::blockAbsmax;
using detail::cpAsync16;
using detail::cpAsyncCommit;
using detail::cpAsyncWait;
using detail::decodePair;
using detail::sharedAddress;

constexpr int kTile = 128;  ///< rows of x and of W a CTA owns
constexpr int kTileK = 64;  ///< K per step: 128 bytes of bf16 a row
constexpr int kThreads = 256;
constexpr int kStages = 2;
constexpr int kTileBytes = kTile * kTileK * 2; ///< 16 KiB, x and W alike
/// Two stages of x and W, plus slack to align the first tile to 1024 bytes
/// (the swizzle pattern repeats every 8 rows of 128 bytes).
constexpr size_t kSharedBytes = size_t(kStages) * 2 * kTileBytes + 1024;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

/// Byte offset of 16-byte chunk `chunk` (0..7) of row `row` in a tile of
/// 128-byte rows with the 128-byte swizzle.
__device__ __forceinline__ uint32_t swizzled(int row, int chunk) {
  return uint32_t(row) * 128u + (uint32_t(chunk ^ (row & 7)) << 4);
}

/// wgmma's shared-memory matrix descriptor for a K-major, 128-byte-swizzled
/// operand starting at `address`: 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t descriptor(uint32_t address) {
  return uint64_t((address & 0x3ffffu) >> 4) | (uint64_t(1) << 16) |
         (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

/// D[64 x 128] (+)= A[64 x 16] · B[16 x 128] for this warpgroup, both
/// operands K-major in 128-byte-swizzled shared memory; D is overwritten
/// when `accumulate` is 0.
__device__ __forceinline__ void wgmma64x128x16(float (&d)[64], uint64_t a,
                                               uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, "
      "%40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]),
        "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b), "r"(accumulate));
}

__device__ __forceinline__ void wgmmaFence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmmaCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void wgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/// Makes this thread's ordinary shared-memory stores visible to wgmma.
__device__ __forceinline__ void fenceProxyAsync() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

#endif

__global__ void __launch_bounds__(kThreads, 1)
    fusedKernel(const uint16_t *__restrict__ x, int64_t M,
                const __grid_constant__ NF4DeviceWeight w,
                const __grid_constant__ detail::NF4Tables tables,
                uint16_t *__restrict__ y) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __shared__ float dynamicMap[256];
  __shared__ float2 byteCodes[256];
  extern __shared__ uint8_t dynamicShared[];
  detail::loadByteTables(tables, byteCodes, dynamicMap);

  // The tiles, from the first 1024-byte boundary of the dynamic memory.
  uint8_t *tiles =
      dynamicShared + ((1024u - sharedAddress(dynamicShared)) & 1023u);
  auto xTile = [&](int stage) { return tiles + stage * 2 * kTileBytes; };
  auto wTile = [&](int stage) { return xTile(stage) + kTileBytes; };

  const int64_t N = w.rows, K = w.cols;
  const int64_t tileN = int64_t(blockIdx.x) * kTile;
  const int64_t tileM = int64_t(blockIdx.y) * kTile;
  const int tid = int(threadIdx.x);
  const int64_t steps = K / kTileK;

  // Thread tid decodes W row tid / 2, codes 32 (tid % 2) .. + 31 of a step.
  const int wRow = tid / 2, wHalf = tid % 2;
  const bool wValid = tileN + wRow < N;
  auto loadStep = [&](int64_t step, int stage) {
    const int64_t k0 = step * kTileK;
    // x: 128 rows x 8 chunks of 16 bytes, 4 chunks a thread.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int chunkId = tid + i * kThreads;
      const int row = chunkId / 8, chunk = chunkId % 8;
      const bool valid = tileM + row < M;
      const uint16_t *source = x + (valid ? (tileM + row) * K : 0) + k0 +
                               chunk * 8;
      cpAsync16(xTile(stage) + swizzled(row, chunk), source, valid);
    }
    cpAsyncCommit();
    // W: 16 packed bytes -> 32 bf16 = 4 chunks.
    uint4 packed = make_uint4(0x77777777u, 0x77777777u, 0x77777777u,
                              0x77777777u); // code 7 is 0.0
    float absmax = 0.0f;
    if (wValid) {
      const int64_t element = (tileN + wRow) * K + k0 + wHalf * 32;
      packed = __ldg(reinterpret_cast<const uint4 *>(w.packed + element / 2));
      absmax = blockAbsmax(w, element >> w.blockShift, dynamicMap);
    }
    const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
    uint8_t *tile = wTile(stage);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint4 out;
      out.x = decodePair(byteCodes, words[i] & 0xffu, absmax);
      out.y = decodePair(byteCodes, (words[i] >> 8) & 0xffu, absmax);
      out.z = decodePair(byteCodes, (words[i] >> 16) & 0xffu, absmax);
      out.w = decodePair(byteCodes, words[i] >> 24, absmax);
      *reinterpret_cast<uint4 *>(tile + swizzled(wRow, wHalf * 4 + i)) = out;
    }
  };

  __syncthreads(); // the byte tables
  loadStep(0, 0);
  cpAsyncWait<0>();
  fenceProxyAsync();
  __syncthreads();

  const int warpgroup = tid / 128;
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i)
    acc[i] = 0.0f;
  for (int64_t step = 0; step < steps; ++step) {
    const int stage = int(step % kStages);
    wgmmaFence();
#pragma unroll
    for (int ks = 0; ks < kTileK / 16; ++ks) {
      // Each 16-wide K slice is 32 bytes further into the swizzled rows.
      const uint64_t a = descriptor(sharedAddress(xTile(stage)) +
                                    warpgroup * 64 * 128 + ks * 32);
      const uint64_t b = descriptor(sharedAddress(wTile(stage)) + ks * 32);
      wgmma64x128x16(acc, a, b, (step > 0 || ks > 0) ? 1 : 0);
    }
    wgmmaCommit();
    if (step + 1 < steps) {
      // The other stage was read by the previous step's MMAs: wait for
      // this warpgroup's, then for everyone's.
      wgmmaWait<1>();
      __syncthreads();
      loadStep(step + 1, stage ^ 1);
      cpAsyncWait<0>();
      fenceProxyAsync();
      __syncthreads();
    }
  }
  wgmmaWait<0>();

  // The accumulator layout of m64n128: warp w of the warpgroup holds rows
  // 16w + g and 16w + g + 8, columns 8j + 2t and 8j + 2t + 1 of tile j.
  const int lane = tid % 32, warp = (tid / 32) % 4;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t m = tileM + warpgroup * 64 + warp * 16 + g + 8 * half;
    if (m >= M)
      continue;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int64_t n = tileN + 8 * j + 2 * t;
      const float lo = acc[4 * j + 2 * half], hi = acc[4 * j + 2 * half + 1];
      if (n + 1 < N && (N % 2) == 0) {
        __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
        *reinterpret_cast<__nv_bfloat162 *>(y + m * N + n) = pair;
      } else {
        if (n < N)
          y[m * N + n] = __bfloat16_as_ushort(__float2bfloat16_rn(lo));
        if (n + 1 < N)
          y[m * N + n + 1] = __bfloat16_as_ushort(__float2bfloat16_rn(hi));
      }
    }
  }
#else
  __trap(); // built without sm_90a: nf4MatmulFused refuses to launch
#endif
}

} // namespace

bool haveFusedNF4Matmul() {
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor,
                             device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor,
                             device) != cudaSuccess)
    return false;
  cudaFuncAttributes attributes;
  if (cudaFuncGetAttributes(&attributes, fusedKernel) != cudaSuccess)
    return false;
  // sm_90a code runs on compute capability 9.0 only.
  return major == 9 && minor == 0 && attributes.binaryVersion == 90;
}

Status nf4MatmulFused(const uint16_t *x, int64_t M,
                      const NF4DeviceWeight &weight, uint16_t *y,
                      cudaStream_t stream) {
  const int64_t N = weight.rows, K = weight.cols;
  if (M < 1 || K % kTileK != 0 || weight.blockSize % kTileK != 0)
    return makeError("nf4MatmulFused: expects M >= 1, and K and the block "
                     "size multiples of 64, got M = {}, K = {}, block {}",
                     M, K, weight.blockSize);
  if ((reinterpret_cast<uintptr_t>(x) & 15u) != 0 ||
      (reinterpret_cast<uintptr_t>(weight.packed) & 15u) != 0)
    return makeError("nf4MatmulFused: expects x and the packed codes 16-byte "
                     "aligned");
  if ((N + kTile - 1) / kTile > INT32_MAX || (M + kTile - 1) / kTile > 65535)
    return makeError("nf4MatmulFused: M = {} or N = {} too large", M, N);
  if (!haveFusedNF4Matmul())
    return makeError("nf4MatmulFused: needs a Hopper GPU (compute "
                     "capability 9.0) and a build with sm_90a");
  Expected<NF4DeviceWeight> prepared = detail::prepare(weight);
  if (!prepared)
    return prepared.error().withContext("nf4MatmulFused");
  QLORA_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      fusedKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
      int(kSharedBytes)));
  const dim3 grid(unsigned((N + kTile - 1) / kTile),
                  unsigned((M + kTile - 1) / kTile));
  fusedKernel<<<grid, kThreads, kSharedBytes, stream>>>(
      x, M, *prepared, detail::hostTables(), y);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace qlora::cuda
