//===- ByteSize.h - Memory sizes as users write them ------------*- C++ -*-===//
//
// A byte count that flags and the manifest carry: `--max_memory 6.1GiB`,
// `48GB`, `512MiB` or a plain number of bytes, as accelerate's `max_memory`
// takes them (GB is 10^9, GiB is 2^30).
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <string>

namespace qlora {

struct ByteSize {
  int64_t bytes = 0;
  constexpr ByteSize(int64_t bytes = 0) : bytes(bytes) {}
  bool operator==(const ByteSize &other) const { return bytes == other.bytes; }
};

/// Parses "6.1GiB", "48 GB", "512MiB", "4096" (bytes); refuses negative
/// sizes, unknown units and sizes above 2^62 bytes.
Expected<ByteSize> parseByteSize(const std::string &text);

/// "6.10 GiB", "512.00 MiB", "100 B": for messages, not for parsing back.
std::string formatByteSize(int64_t bytes);

} // namespace qlora
