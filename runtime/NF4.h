//===- NF4.h - Blockwise 4-bit NormalFloat quantization ---------------------===//
//
// Bit-identical to bitsandbytes' quantize_4bit / dequantize_4bit (quant_type
// "nf4") on the CPU:
//   * elements are flattened row-major and cut into blocks of `blockSize`; the
//     last block may be partial;
//   * absmax is the block's max |x| in fp32; elements are scaled by the fp32
//     reciprocal 1/absmax and mapped to the nearest NF4 code by the midpoints
//     of the code table (an all-zero block gives NaN, which maps to code 0);
//   * two codes per byte, the first element in the high nibble; an odd
//     element count pads the last low nibble with the code of 0.0;
//   * dequantization is code[q] * absmax in fp32, rounded to the output type.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace qlora {

/// Element types that NF4 tensors quantize from and dequantize to.
enum class ElementType { BF16, F16, F32 };

/// Bytes per element of `type`.
int elementSize(ElementType type);
/// torch's name for `type`: "bfloat16", "float16", "float32".
const char *torchDtypeName(ElementType type);
/// Parses torch's names (also "bf16", "fp16", "fp32"); fails on anything else.
Expected<ElementType> parseTorchDtype(const std::string &name);

namespace nf4 {

/// The 16 NF4 code values, in code order.
extern const float kCode[16];

/// Block sizes that bitsandbytes accepts for 4-bit quantization.
bool isSupportedBlockSize(int64_t blockSize);

/// Number of quantization blocks for `numElements` elements.
inline int64_t numBlocks(int64_t numElements, int64_t blockSize) {
  return (numElements + blockSize - 1) / blockSize;
}
/// Number of packed bytes for `numElements` 4-bit codes.
inline int64_t packedBytes(int64_t numElements) {
  return (numElements + 1) / 2;
}

/// Maps a value already scaled into [-1, 1] to its NF4 code.
uint8_t encode(float normalized);

/// Quantizes `numElements` values of `type` at `input`. Writes
/// packedBytes(numElements) bytes to `packed` and numBlocks(...) fp32 block
/// maxima to `absmax`. Multi-threaded.
void quantize(const void *input, ElementType type, int64_t numElements,
              int64_t blockSize, uint8_t *packed, float *absmax);

/// Inverse of quantize: writes numElements values of `type` to `output`.
void dequantize(const uint8_t *packed, const float *absmax,
                int64_t numElements, int64_t blockSize, ElementType type,
                void *output);

} // namespace nf4
} // namespace qlora
