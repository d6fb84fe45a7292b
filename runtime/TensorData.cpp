//===- TensorData.cpp - Reading checkpoint tensors as numbers ---------------===//
#include "runtime/TensorData.h"

#include "runtime/Float16.h"

#include <cstring>
#include <filesystem>
#include <fstream>

namespace qlora {

Expected<ElementType> floatElementType(const TensorInfo &info) {
  switch (info.dtype) {
  case DType::BF16:
    return ElementType::BF16;
  case DType::F16:
    return ElementType::F16;
  case DType::F32:
    return ElementType::F32;
  default:
    return makeError("tensor '{}': expects dtype BF16, F16 or F32, got {}",
                     info.name, dtypeName(info.dtype));
  }
}

float loadFloat(const uint8_t *data, ElementType type, int64_t index) {
  uint16_t half;
  float value;
  switch (type) {
  case ElementType::BF16:
    std::memcpy(&half, data + 2 * index, 2);
    return bf16ToFloat(half);
  case ElementType::F16:
    std::memcpy(&half, data + 2 * index, 2);
    return fp16ToFloat(half);
  case ElementType::F32:
    std::memcpy(&value, data + 4 * index, 4);
    return value;
  }
  return 0.0f;
}

Status copyAsFloats(const TensorInfo &info, ByteSpan bytes, float *out,
                    const std::string &where) {
  Expected<ElementType> type = floatElementType(info);
  if (!type)
    return type.error().withContext(where);
  for (int64_t i = 0; i < info.numElements(); ++i)
    out[i] = loadFloat(bytes.data, *type, i);
  return Status::ok();
}

Status writeFileAtomically(const std::string &path, const std::string &text) {
  std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out)
      return makeError("{}: cannot write", temporary);
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error)
    return makeError("{}: cannot rename into place: {}", path,
                     error.message());
  return Status::ok();
}

} // namespace qlora
