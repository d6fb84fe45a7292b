//===- NF4.cpp - Blockwise 4-bit NormalFloat quantization -------------------===//
#include "runtime/NF4.h"

#include "runtime/Float16.h"
#include "runtime/Parallel.h"

#include <algorithm>
#include <cmath>

namespace qlora {

int elementSize(ElementType type) {
  return type == ElementType::F32 ? 4 : 2;
}

const char *torchDtypeName(ElementType type) {
  switch (type) {
  case ElementType::BF16:
    return "bfloat16";
  case ElementType::F16:
    return "float16";
  case ElementType::F32:
    return "float32";
  }
  return "unknown";
}

Expected<ElementType> parseTorchDtype(const std::string &name) {
  if (name == "bfloat16" || name == "bf16")
    return ElementType::BF16;
  if (name == "float16" || name == "fp16" || name == "half")
    return ElementType::F16;
  if (name == "float32" || name == "fp32" || name == "float")
    return ElementType::F32;
  return makeError("unknown dtype '{}', expected bfloat16, float16 or float32",
                   name);
}

namespace nf4 {

// bitsandbytes' NF4 table (functional.get_4bit_type("nf4")).
const float kCode[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

namespace {

/// Decision thresholds: the midpoints of neighbouring codes, computed in
/// double and rounded to float, as the bitsandbytes kernel's constants are.
struct Thresholds {
  float value[15];
  Thresholds() {
    for (int i = 0; i < 15; ++i)
      value[i] = float((double(kCode[i]) + double(kCode[i + 1])) / 2.0);
  }
};
const Thresholds kThresholds;

/// Loads up to `count` elements into fp32, zero-filling the rest of `out`
/// (the kernel's loads fill out-of-range lanes with 0).
void loadBlock(const void *input, ElementType type, int64_t first,
               int64_t count, int64_t blockSize, float *out) {
  switch (type) {
  case ElementType::BF16: {
    const uint16_t *src = static_cast<const uint16_t *>(input) + first;
    for (int64_t i = 0; i < count; ++i)
      out[i] = bf16ToFloat(src[i]);
    break;
  }
  case ElementType::F16: {
    const uint16_t *src = static_cast<const uint16_t *>(input) + first;
    for (int64_t i = 0; i < count; ++i)
      out[i] = fp16ToFloat(src[i]);
    break;
  }
  case ElementType::F32:
    std::copy_n(static_cast<const float *>(input) + first, count, out);
    break;
  }
  std::fill(out + count, out + blockSize, 0.0f);
}

/// Branch-free encode: counts the thresholds below x. NaN compares false
/// everywhere and so maps to code 0, as in the CUDA kernel's decision tree.
inline uint8_t encodeFast(float x) {
  uint8_t code = 0;
  for (int i = 0; i < 15; ++i)
    code += x > kThresholds.value[i];
  return code;
}

/// Every supported block size is a multiple of this.
constexpr int kChunk = 32;

/// Encodes kChunk values: the code is the number of thresholds below the
/// scaled value. A fixed trip count and unaliased locals let the 15
/// compare-and-add passes vectorize.
void encodeChunk(const float *__restrict values, float scale,
                 const float *__restrict thresholds,
                 uint8_t *__restrict codes) {
  float scaled[kChunk];
  uint8_t count[kChunk] = {};
  for (int i = 0; i < kChunk; ++i)
    scaled[i] = values[i] * scale;
  for (int t = 0; t < 15; ++t)
    for (int i = 0; i < kChunk; ++i)
      count[i] += scaled[i] > thresholds[t];
  std::copy_n(count, kChunk, codes);
}

void storeOutput(const float *values, int64_t count, ElementType type,
                 void *output, int64_t first) {
  switch (type) {
  case ElementType::BF16: {
    uint16_t *dst = static_cast<uint16_t *>(output) + first;
    for (int64_t i = 0; i < count; ++i)
      dst[i] = floatToBf16(values[i]);
    break;
  }
  case ElementType::F16: {
    uint16_t *dst = static_cast<uint16_t *>(output) + first;
    for (int64_t i = 0; i < count; ++i)
      dst[i] = floatToFp16(values[i]);
    break;
  }
  case ElementType::F32:
    std::copy_n(values, count, static_cast<float *>(output) + first);
    break;
  }
}

} // namespace

bool isSupportedBlockSize(int64_t blockSize) {
  switch (blockSize) {
  case 32:
  case 64:
  case 128:
  case 256:
  case 512:
  case 1024:
  case 2048:
  case 4096:
    return true;
  default:
    return false;
  }
}

uint8_t encode(float normalized) { return encodeFast(normalized); }

void quantize(const void *input, ElementType type, int64_t numElements,
              int64_t blockSize, uint8_t *packed, float *absmax) {
  int64_t blocks = numBlocks(numElements, blockSize);
  // Blocks of an even size start on a byte boundary, so threads never share
  // a packed byte.
  parallelFor(
      0, blocks, std::max<int64_t>(1, 16384 / blockSize),
      [&](int64_t blockBegin, int64_t blockEnd) {
        std::vector<float> values(blockSize);
        std::vector<uint8_t> codes(blockSize);
        float thresholds[15];
        std::copy_n(kThresholds.value, 15, thresholds);
        for (int64_t block = blockBegin; block < blockEnd; ++block) {
          int64_t first = block * blockSize;
          int64_t count = std::min(blockSize, numElements - first);
          loadBlock(input, type, first, count, blockSize, values.data());
          // max |x| on the bit patterns: for non-negative floats the
          // integer order is the float order, and the loop vectorizes. A NaN
          // pattern sorts above +inf, so it surfaces in absmax.
          uint32_t maxBits = 0;
          for (int64_t i = 0; i < blockSize; ++i)
            maxBits = std::max(maxBits, floatToBits(values[i]) & 0x7fffffffu);
          float maxAbs = bitsToFloat(maxBits);
          absmax[block] = maxAbs;
          float scale = 1.0f / maxAbs;
          for (int64_t i = 0; i < blockSize; i += kChunk)
            encodeChunk(values.data() + i, scale, thresholds,
                        codes.data() + i);
          int64_t pairs = (count + 1) / 2;
          uint8_t *out = packed + first / 2;
          for (int64_t p = 0; p < pairs; ++p)
            out[p] = uint8_t(codes[2 * p] << 4 | codes[2 * p + 1]);
        }
      });
}

void dequantize(const uint8_t *packed, const float *absmax,
                int64_t numElements, int64_t blockSize, ElementType type,
                void *output) {
  int64_t blocks = numBlocks(numElements, blockSize);
  parallelFor(0, blocks, std::max<int64_t>(1, 16384 / blockSize),
              [&](int64_t blockBegin, int64_t blockEnd) {
                std::vector<float> values(blockSize);
                for (int64_t block = blockBegin; block < blockEnd; ++block) {
                  int64_t first = block * blockSize;
                  int64_t count = std::min(blockSize, numElements - first);
                  float lut[16];
                  for (int i = 0; i < 16; ++i)
                    lut[i] = kCode[i] * absmax[block];
                  const uint8_t *in = packed + first / 2;
                  for (int64_t i = 0; i + 1 < count; i += 2) {
                    values[i] = lut[in[i / 2] >> 4];
                    values[i + 1] = lut[in[i / 2] & 15];
                  }
                  if (count % 2)
                    values[count - 1] = lut[in[(count - 1) / 2] >> 4];
                  storeOutput(values.data(), count, type, output, first);
                }
              });
}

} // namespace nf4
} // namespace qlora
