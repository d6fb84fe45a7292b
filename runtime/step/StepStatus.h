//===- StepStatus.h - Data errors a cuda step records for its host ----------===//
//
// Kernels of a cuda step never stop the stream: a token id outside the
// vocabulary or a label that is neither a token nor the ignore index is
// recorded in the step's `status` slot (kStatusWords int32 in the arena),
// which the host resets before an optimizer step and reads once after it.
// Each word keeps the smallest flat position where its error occurred
// (atomicMin), kStatusNone where none did.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>

namespace qlora::step_status {

constexpr int64_t kStatusWords = 4;
/// The byte the host fills the status with: every word reads kStatusNone.
constexpr int kResetByte = 0x7f;
constexpr int32_t kStatusNone = 0x7f7f7f7f;

/// Word indices.
constexpr int kBadTokenPosition = 0; ///< index into input_ids
constexpr int kBadLabelPosition = 1; ///< index into labels (after the shift)

} // namespace qlora::step_status
