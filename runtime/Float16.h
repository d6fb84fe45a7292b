//===- Float16.h - bf16 and fp16 conversions ---------------------------------===//
//
// Bit-level conversions between float and the 16-bit formats that checkpoints
// store. Rounding is round-to-nearest-even, as torch and CUDA's
// __float2bfloat16 / __float2half_rn do, so results match the reference stack
// bit for bit.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <cstring>

namespace qlora {

inline float bitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint32_t floatToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline float bf16ToFloat(uint16_t h) { return bitsToFloat(uint32_t(h) << 16); }

inline uint16_t floatToBf16(float f) {
  uint32_t bits = floatToBits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) // NaN: keep it quiet and signed.
    return uint16_t((bits >> 16) | 0x0040u);
  uint32_t roundingBias = 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t((bits + roundingBias) >> 16);
}

inline float fp16ToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) // inf or NaN
    return bitsToFloat(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0)
      return bitsToFloat(sign);
    // Subnormal: value = mantissa * 2^-24, exact in float.
    float magnitude = float(mantissa) * (1.0f / 16777216.0f);
    return sign ? -magnitude : magnitude;
  }
  return bitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t floatToFp16(float f) {
  uint32_t bits = floatToBits(f);
  uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) // NaN
    return uint16_t(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  if (magnitude >= 0x477ff000u) // rounds to >= 65520: overflow to inf
    return uint16_t(sign | 0x7c00u);
  if (magnitude < 0x38800000u) { // below the smallest normal (2^-14)
    // Scale so that the subnormal step 2^-24 becomes 1 and round to nearest
    // even in float arithmetic, which is exact here.
    float scaled = bitsToFloat(magnitude) * 16777216.0f;
    float rounded = scaled + 8388608.0f - 8388608.0f; // RNE to an integer
    return uint16_t(sign | uint16_t(rounded));
  }
  uint32_t roundingBias = 0xfffu + ((magnitude >> 13) & 1u);
  magnitude += roundingBias;
  return uint16_t(sign | uint16_t((magnitude - 0x38000000u) >> 13));
}

} // namespace qlora
