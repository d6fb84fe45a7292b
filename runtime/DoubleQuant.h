//===- DoubleQuant.h - 8-bit coding of NF4 block constants ------------------===//
//
// bitsandbytes' double quantization (compress_statistics=True) stores the fp32
// absmax of each NF4 block as an 8-bit code:
//   offset = mean(absmax)                 (torch's CUDA summation order)
//   codes  = quantize_blockwise(absmax - offset, blocksize=256) with the
//            signed dynamic map; each 256-block keeps its own fp32 scale;
//   absmax = map[code] * scale + offset   when dequantizing.
// Everything here is bit-identical to bitsandbytes.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <vector>

namespace qlora {
namespace dq {

/// bitsandbytes' signed dynamic 8-bit map (create_dynamic_map(signed=True)),
/// 256 sorted values in [-1, 1].
extern const float kDynamicMap[256];

/// Maps a value scaled into [-1, 1] to the nearest map entry, with the
/// binary search and midpoint rule of bitsandbytes' dQuantize.
uint8_t encodeDynamic(float normalized);

/// Blockwise 8-bit quantization with the dynamic map: one fp32 scale (block
/// max |x|) per `blockSize` values.
void quantizeBlockwise(const float *input, int64_t numElements,
                       int64_t blockSize, uint8_t *codes, float *scales);

/// Inverse of quantizeBlockwise: map[code] * scale, in fp32.
void dequantizeBlockwise(const uint8_t *codes, const float *scales,
                         int64_t numElements, int64_t blockSize,
                         float *output);

/// The double-quantized form of a vector of NF4 block maxima.
struct DoubleQuantized {
  std::vector<uint8_t> codes; ///< one per NF4 block
  std::vector<float> scales;  ///< one per `blockSize` codes
  float offset = 0.0f;        ///< subtracted mean of the maxima
  int64_t blockSize = 256;
};

/// Double-quantizes `absmax` (n >= 1 values) as bitsandbytes does.
DoubleQuantized quantizeAbsmax(const float *absmax, int64_t n,
                               int64_t blockSize = 256);

/// Recovers the fp32 block maxima: map[code] * scale + offset.
std::vector<float> dequantizeAbsmax(const DoubleQuantized &state);

} // namespace dq
} // namespace qlora
