//===- Safetensors.h - Reading and writing .safetensors files ---------------===//
//
// The safetensors format: an 8-byte little-endian header length N, N bytes of
// JSON mapping tensor names to {"dtype", "shape", "data_offsets"} (plus an
// optional "__metadata__" object of strings), then the data buffer.
//
// `SafetensorsFile` maps a file read-only and validates the whole header at
// open, so later accesses cannot go out of bounds. `SafetensorsWriter` writes
// the exact layout of the Rust `safetensors` crate (and so of Python's
// `safetensors.torch.save_file`), atomically.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace qlora {

/// Element types of safetensors. The enumerator order is load-bearing: it is
/// the order of the Rust crate's `Dtype` enum (restricted to whole-byte
/// types), and the writer lays tensors out by it, descending.
enum class DType : uint8_t {
  BOOL,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  F64,
  I64,
  U64,
};

/// The header spelling: "BF16", "F32", ...
std::string_view dtypeName(DType dtype);
/// Inverse of dtypeName; nullopt for names the runtime does not know.
std::optional<DType> parseDType(std::string_view name);
/// Bytes per element.
size_t dtypeSize(DType dtype);

/// One tensor of a safetensors header. Offsets are relative to the start of
/// the data buffer, as in the file.
struct TensorInfo {
  std::string name;
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;

  /// Product of the shape (1 for a scalar). Validated at open not to
  /// overflow.
  int64_t numElements() const;
  uint64_t numBytes() const { return end - begin; }
};

/// A read-only view of bytes owned by someone else (a mapping, a writer's
/// caller).
struct ByteSpan {
  const uint8_t *data = nullptr;
  size_t size = 0;
};

/// The largest header the reader accepts, as the Rust crate does; a larger
/// length is a corrupt file, not a model.
constexpr uint64_t kMaxSafetensorsHeaderSize = 100'000'000;

/// A safetensors file, memory-mapped and validated.
class SafetensorsFile {
public:
  /// Maps `path` (read-only, private) and validates the header: sizes, JSON,
  /// entry fields, dtypes, shape × dtype size against the offsets, offsets
  /// inside the data buffer, no overlapping tensors. Gaps in the data buffer
  /// are tolerated. Every error names the file and, where one is at fault,
  /// the tensor.
  static Expected<SafetensorsFile> open(const std::string &path);

  SafetensorsFile(SafetensorsFile &&other) noexcept;
  SafetensorsFile &operator=(SafetensorsFile &&other) noexcept;
  SafetensorsFile(const SafetensorsFile &) = delete;
  SafetensorsFile &operator=(const SafetensorsFile &) = delete;
  ~SafetensorsFile();

  const std::string &path() const { return path_; }
  /// Tensors in data order (by begin offset), which is also the order the
  /// writer produces.
  const std::vector<TensorInfo> &tensors() const { return tensors_; }
  /// Null when there is no such tensor.
  const TensorInfo *find(std::string_view name) const;
  /// Like find, with an error "tensor 'x' not found in <file>".
  Expected<const TensorInfo *> get(std::string_view name) const;
  /// The tensor's bytes inside the mapping; `info` must come from this file.
  ByteSpan data(const TensorInfo &info) const;
  /// The "__metadata__" strings, by key.
  const std::map<std::string, std::string> &metadata() const {
    return metadata_;
  }
  /// The same strings in header order, to re-write a header faithfully.
  const std::vector<std::pair<std::string, std::string>> &
  metadataInOrder() const {
    return metadataInOrder_;
  }
  /// Size of the JSON header N (with its padding).
  uint64_t headerSize() const { return headerSize_; }
  /// Size of the data buffer: the file size minus 8 minus N.
  uint64_t dataSize() const { return dataSize_; }

private:
  SafetensorsFile() = default;
  void release();

  std::string path_;
  void *mapping_ = nullptr;
  size_t mappingSize_ = 0;
  uint64_t headerSize_ = 0;
  uint64_t dataSize_ = 0;
  const uint8_t *dataStart_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::pair<std::string, std::string>> metadataInOrder_;
};

/// Collects tensors and writes a safetensors file in the Rust crate's layout:
/// tensors sorted by dtype descending (enum order above), then by name;
/// a compact JSON header with "__metadata__" first, padded with spaces to a
/// multiple of 8. Re-writing a file read with SafetensorsFile reproduces it
/// byte for byte (for one metadata key; the crate orders several keys by hash).
class SafetensorsWriter {
public:
  /// Copies `size` bytes. Fails on an empty, reserved or duplicate name, a
  /// negative dimension, or a size that is not shape × dtype size.
  Status add(std::string name, DType dtype, std::vector<int64_t> shape,
             const void *bytes, size_t size);
  /// Like add, but keeps only the pointer: the caller keeps the bytes alive
  /// until write() returns. Saves a copy when re-writing a mapped file.
  Status addView(std::string name, DType dtype, std::vector<int64_t> shape,
                 const void *bytes, size_t size);
  /// Sets a "__metadata__" string, replacing the value of an existing key in
  /// place; keys are written in the order they were first set.
  void setMetadata(std::string key, std::string value);

  /// The header JSON as it will be written, padding included.
  std::string headerJson() const;
  /// Writes atomically: a temporary file beside `path`, fsync, rename over
  /// `path`. On failure the temporary file is removed and `path` untouched.
  Status write(const std::string &path) const;

  size_t numTensors() const { return entries_.size(); }
  /// The tensors' names, in the order they were added.
  std::vector<std::string> tensorNames() const;
  /// The bytes of all tensors' data (the header excluded).
  size_t dataBytes() const;

private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> owned;
    const uint8_t *bytes = nullptr;
    size_t size = 0;
  };
  Status addEntry(std::string name, DType dtype, std::vector<int64_t> shape,
                  const void *bytes, size_t size, bool copy);
  /// Entries in file order.
  std::vector<const Entry *> sortedEntries() const;

  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

} // namespace qlora
