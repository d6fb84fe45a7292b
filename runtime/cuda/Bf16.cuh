//===- Bf16.cuh - bf16 loads, stores and packing for the CUDA kernels -------===//
//
// Private to runtime/cuda. bf16 tensors travel as uint16_t bit patterns; these
// helpers widen them to fp32 and round back (nearest even, NaN kept), one
// value or 16-byte vectors of 8 at a time.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cuda_bf16.h>
#include <cstdint>

namespace qlora::cuda::detail {

__device__ __forceinline__ float bf16ToFloat(uint16_t bits) {
  return __uint_as_float(uint32_t(bits) << 16);
}

/// Round to nearest even, NaN kept (F2F conversion).
__device__ __forceinline__ uint16_t floatToBf16(float value) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(value));
}

/// Two floats as a bf16 pair, `lo` in the low half (the lower address).
__device__ __forceinline__ uint32_t packBf16(float lo, float hi) {
  __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t *>(&pair);
}

/// The 8 bf16 of a 16-byte vector as floats, in memory order.
__device__ __forceinline__ void unpack8(uint4 v, float *out) {
  uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    out[2 * k] = __uint_as_float(words[k] << 16);
    out[2 * k + 1] = __uint_as_float(words[k] & 0xffff0000u);
  }
}

/// 8 floats as a 16-byte vector of bf16.
__device__ __forceinline__ uint4 pack8(const float *in) {
  return make_uint4(packBf16(in[0], in[1]), packBf16(in[2], in[3]),
                    packBf16(in[4], in[5]), packBf16(in[6], in[7]));
}

} // namespace qlora::cuda::detail
