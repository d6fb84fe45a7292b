//===- TensorData.h - Reading checkpoint tensors as numbers -----------------===//
//
// The conversions every reader of checkpoints needs: which float tensors can
// be quantized, and their values as fp32. One place, so that the quantizer,
// the trainer and the adapter reader agree on dtypes and errors.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/NF4.h"
#include "runtime/Safetensors.h"

#include <string>

namespace qlora {

/// The NF4 input type of a BF16, F16 or F32 tensor; an error naming the
/// tensor for any other dtype.
Expected<ElementType> floatElementType(const TensorInfo &info);

/// Element `index` of float data of `type`, widened to fp32 (exactly).
float loadFloat(const uint8_t *data, ElementType type, int64_t index);

/// Writes the tensor's numElements() values to `out` as fp32; `where` names
/// the file in errors.
Status copyAsFloats(const TensorInfo &info, ByteSpan bytes, float *out,
                    const std::string &where);

/// Writes `text` to `path` through a temporary file renamed into place, so
/// that readers never see half a file and a failure leaves the old one.
Status writeFileAtomically(const std::string &path, const std::string &text);

} // namespace qlora
