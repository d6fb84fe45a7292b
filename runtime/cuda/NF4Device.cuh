//===- NF4Device.cuh - Device-side NF4 decoding shared by the kernels -------===//
//
// Private to runtime/cuda: the NF4 table and the dynamic map in constant
// memory, and the block-maximum decoding with the exact fp32 operation order
// of the CPU reference (no contraction into FMA: bit-identical results).
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/cuda/NF4Kernels.h"

#include <cuda_bf16.h>
#include <cstdint>

namespace qlora::cuda::detail {

/// The NF4 code values, bitsandbytes' signed dynamic map and the code
/// pairs. Kernels take them by value (2 KiB of parameter space) and copy
/// them into shared memory, which keeps every kernel in its own translation unit. Kernel
/// parameters that device functions take by reference are declared
/// __grid_constant__: otherwise each thread gets a local-memory copy.
struct NF4Tables {
  float code[16];
  float dynamicMap[256];
  /// Each byte's two codes rounded to bf16, the high nibble's (which comes
  /// first) in the low half.
  uint32_t codePairs[256];
};

/// The CPU reference's tables (NF4Tables.cu).
const NF4Tables &hostTables();

/// A copy of `weight` with the block shifts set; fails unless both block
/// sizes are powers of two.
Expected<NF4DeviceWeight> prepare(const NF4DeviceWeight &weight);

/// Copies `tables` into shared memory; call before __syncthreads().
__device__ __forceinline__ void loadTables(const NF4Tables &tables,
                                           float *code, float *dynamicMap) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) {
    dynamicMap[i] = tables.dynamicMap[i];
    if (i < 16)
      code[i] = tables.code[i];
  }
}

/// Fills the dynamic map and, for kernels that decode a packed byte at a
/// time, both code values of every byte value (high nibble first, as
/// bitsandbytes packs them) straight from `tables`: one barrier. Call before
/// __syncthreads().
__device__ __forceinline__ void loadByteTables(const NF4Tables &tables,
                                               float2 *byteCodes,
                                               float *dynamicMap) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) {
    dynamicMap[i] = tables.dynamicMap[i];
    byteCodes[i] = make_float2(tables.code[i >> 4], tables.code[i & 0xf]);
  }
}

/// The bf16 pair of one packed byte (the high nibble's element in the low
/// half, as it comes first), each code * absmax rounded to nearest even:
/// the reference's values for finite block maxima.
__device__ __forceinline__ uint32_t decodePair(const float2 *byteCodes,
                                               uint32_t byte, float absmax) {
  float2 codes = byteCodes[byte];
  __nv_bfloat162 pair = __floats2bfloat162_rn(__fmul_rn(codes.x, absmax),
                                              __fmul_rn(codes.y, absmax));
  return *reinterpret_cast<uint32_t *>(&pair);
}

/// A block maximum as loaded, before its double-quant decoding: kernels
/// that load ahead keep these in flight and decode them when they use them.
/// (Decoding in the load would make the load wait for its code byte: one
/// DRAM round trip a chunk, which bounded the small-M kernels.)
struct LoadedAbsmax {
  uint32_t code; // the 8-bit code; unused without double quant
  float scale;   // its group's scale, or the fp32 maximum itself
};

/// `Index`: int64_t, or uint32_t in kernels that check that their offsets
/// fit (32-bit address arithmetic is half the instructions).
template <typename Index>
__device__ __forceinline__ LoadedAbsmax loadAbsmax(const NF4DeviceWeight &w,
                                                   Index block) {
  if (w.absmaxCodes == nullptr)
    return {0u, __ldg(&w.absmax[block])};
  return {__ldg(&w.absmaxCodes[block]),
          __ldg(&w.absmaxScales[block >> w.dqBlockShift])};
}

/// fp32 block maximum as dq::dequantizeAbsmax computes it: map[code] *
/// scale + offset, rounded after each operation.
__device__ __forceinline__ float decodeAbsmax(const NF4DeviceWeight &w,
                                              LoadedAbsmax loaded,
                                              const float *dynamicMap) {
  if (w.absmaxCodes == nullptr)
    return loaded.scale;
  const float offset = w.offsetOnDevice ? __ldg(w.offsetOnDevice) : w.offset;
  return __fadd_rn(__fmul_rn(dynamicMap[loaded.code], loaded.scale), offset);
}

/// fp32 block maximum `block`, loaded and decoded at once.
__device__ __forceinline__ float blockAbsmax(const NF4DeviceWeight &w,
                                             int64_t block,
                                             const float *dynamicMap) {
  return decodeAbsmax(w, loadAbsmax(w, block), dynamicMap);
}

/// Rounds a finite float to bf16 (nearest, ties to even) with integer
/// operations, which run at full rate where the F2F conversion does not; the
/// result is __float2bfloat16_rn's for every finite input.
__device__ __forceinline__ uint32_t roundToBf16Bits(float value) {
  uint32_t bits = __float_as_uint(value);
  return (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
}

/// The float value of `value` rounded to bf16.
__device__ __forceinline__ float roundToBf16(float value) {
  return __uint_as_float(roundToBf16Bits(value) << 16);
}

/// bf16 bit pattern of code[q] * absmax, round to nearest even.
__device__ __forceinline__ uint16_t decodeBf16(const float *code, uint32_t q,
                                               float absmax) {
  return uint16_t(roundToBf16Bits(__fmul_rn(code[q], absmax)));
}

/// Copies the dynamic map alone, for kernels that decode with the code pair
/// table; call before __syncthreads().
__device__ __forceinline__ void loadDynamicMap(const NF4Tables &tables,
                                               float *dynamicMap) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x)
    dynamicMap[i] = tables.dynamicMap[i];
}

/// The code pair table: for each packed byte, its two code values rounded
/// to bf16 (the high nibble's, which comes first, in the low half), stored
/// once per lane, entry e of lane l at word 32e + l. A warp's 32 lookups
/// then hit 32 distinct banks whatever the bytes: one shared-memory
/// wavefront per two codes. (A table with one copy of each entry costs 3-4
/// wavefronts a lookup for random bytes, which bounded the decoding kernels.)
/// 32 KiB.
constexpr int kCodePairTableWords = 256 * 32;

/// Fills the code pair table; call before __syncthreads(). Each warp writes
/// whole entries, so a warp's reads of `tables` are uniform.
__device__ __forceinline__ void loadCodePairTable(const NF4Tables &tables,
                                                  uint32_t *table) {
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int entry = threadIdx.x / 32; entry < 256; entry += warps)
    table[entry * 32 + lane] = tables.codePairs[entry];
}

/// The shared-memory address of the calling lane's copy of entry 0.
__device__ __forceinline__ uint32_t codePairLaneAddress(const uint32_t *table) {
  return uint32_t(__cvta_generic_to_shared(table + threadIdx.x % 32));
}

/// The bf16 code pair of `byte` from the lane's copy (`laneAddress` from
/// codePairLaneAddress): one LEA and one LDS. (Indexing the array instead
/// compiles to four integer instructions before the load.) Volatile: the
/// table is read only after the barrier that follows its filling.
__device__ __forceinline__ uint32_t lookupCodePair(uint32_t laneAddress,
                                                   uint32_t byte) {
  uint32_t pair;
  asm volatile("ld.shared.b32 %0, [%1];\n"
               : "=r"(pair)
               : "r"(laneAddress + (byte << 7)));
  return pair;
}

} // namespace qlora::cuda::detail
