//===- Safetensors.cpp - Validating reader and atomic writer ----------------===//
//
// The reader checks every header field once, at open, so that data() is a
// plain pointer computation afterwards. The writer reproduces the Rust
// crate's layout (dtype descending, then name) and header form (compact
// serde_json, "__metadata__" first, space padding to 8 bytes).
//
//===----------------------------------------------------------------------===//
#include "runtime/Safetensors.h"

#include "runtime/Json.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace qlora {

//===----------------------------------------------------------------------===//
// DType
//===----------------------------------------------------------------------===//

namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  size_t size;
};

// Indexed by the enumerator value.
constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1},       {DType::U8, "U8", 1},
    {DType::I8, "I8", 1},           {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E8M0, "F8_E8M0", 1},
    {DType::I16, "I16", 2},         {DType::U16, "U16", 2},
    {DType::F16, "F16", 2},         {DType::BF16, "BF16", 2},
    {DType::I32, "I32", 4},         {DType::U32, "U32", 4},
    {DType::F32, "F32", 4},         {DType::F64, "F64", 8},
    {DType::I64, "I64", 8},         {DType::U64, "U64", 8},
};

std::string formatShape(const std::vector<int64_t> &shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i)
      out += ", ";
    out += std::to_string(shape[i]);
  }
  out += "]";
  return out;
}

/// Multiplies the dims and the element size; false on overflow of uint64.
bool shapeBytes(const std::vector<int64_t> &shape, size_t elementSize,
                uint64_t &bytes) {
  uint64_t n = 1;
  for (int64_t dim : shape) {
    if (dim < 0 || __builtin_mul_overflow(n, uint64_t(dim), &n))
      return false;
  }
  return !__builtin_mul_overflow(n, uint64_t(elementSize), &bytes);
}

std::string errnoText(int err) { return std::strerror(err); }

} // namespace

std::string_view dtypeName(DType dtype) {
  size_t index = size_t(dtype);
  return index < std::size(kDTypes) ? kDTypes[index].name : "?";
}

std::optional<DType> parseDType(std::string_view name) {
  for (const DTypeEntry &entry : kDTypes)
    if (entry.name == name)
      return entry.dtype;
  return std::nullopt;
}

size_t dtypeSize(DType dtype) {
  size_t index = size_t(dtype);
  return index < std::size(kDTypes) ? kDTypes[index].size : 0;
}

int64_t TensorInfo::numElements() const {
  int64_t n = 1;
  for (int64_t dim : shape)
    n *= dim;
  return n;
}

//===----------------------------------------------------------------------===//
// SafetensorsFile
//===----------------------------------------------------------------------===//

SafetensorsFile::SafetensorsFile(SafetensorsFile &&other) noexcept {
  *this = std::move(other);
}

SafetensorsFile &SafetensorsFile::operator=(SafetensorsFile &&other) noexcept {
  if (this == &other)
    return *this;
  release();
  path_ = std::move(other.path_);
  mapping_ = std::exchange(other.mapping_, nullptr);
  mappingSize_ = std::exchange(other.mappingSize_, 0);
  headerSize_ = std::exchange(other.headerSize_, 0);
  dataSize_ = std::exchange(other.dataSize_, 0);
  dataStart_ = std::exchange(other.dataStart_, nullptr);
  tensors_ = std::move(other.tensors_);
  index_ = std::move(other.index_);
  metadata_ = std::move(other.metadata_);
  metadataInOrder_ = std::move(other.metadataInOrder_);
  return *this;
}

SafetensorsFile::~SafetensorsFile() { release(); }

void SafetensorsFile::release() {
  if (mapping_)
    ::munmap(mapping_, mappingSize_);
  mapping_ = nullptr;
  mappingSize_ = 0;
  dataStart_ = nullptr;
}

namespace {

/// Validates one header entry and fills `info`; errors are prefixed with
/// "<file>: tensor '<name>': " by the caller.
Status parseEntry(const json::Value &entry, uint64_t dataSize,
                  TensorInfo &info) {
  if (!entry.isObject())
    return makeError("expected an object with dtype, shape and data_offsets, "
                     "got {}",
                     json::kindName(entry.kind()));
  for (const json::Member &member : entry.asObject())
    if (member.first != "dtype" && member.first != "shape" &&
        member.first != "data_offsets")
      return makeError("unexpected key '{}' (expected only dtype, shape and "
                       "data_offsets)",
                       member.first);

  const json::Value *dtype = entry.find("dtype");
  if (!dtype)
    return makeError("missing 'dtype'");
  if (!dtype->isString())
    return makeError("'dtype' must be a string, got {}",
                     json::kindName(dtype->kind()));
  std::optional<DType> parsed = parseDType(dtype->asString());
  if (!parsed)
    return makeError("unknown dtype '{}'", dtype->asString());
  info.dtype = *parsed;

  const json::Value *shape = entry.find("shape");
  if (!shape)
    return makeError("missing 'shape'");
  if (!shape->isArray())
    return makeError("'shape' must be an array, got {}",
                     json::kindName(shape->kind()));
  for (const json::Value &dim : shape->asArray()) {
    if (!dim.isInt())
      return makeError("'shape' must hold integers, got {}",
                       json::kindName(dim.kind()));
    if (dim.asInt() < 0)
      return makeError("negative dimension {} in shape", dim.asInt());
    info.shape.push_back(dim.asInt());
  }

  const json::Value *offsets = entry.find("data_offsets");
  if (!offsets)
    return makeError("missing 'data_offsets'");
  if (!offsets->isArray() || offsets->size() != 2 || !(*offsets)[0].isInt() ||
      !(*offsets)[1].isInt())
    return makeError("'data_offsets' must be an array of two integers, got {}",
                     json::writeCompact(*offsets));
  int64_t begin = (*offsets)[0].asInt();
  int64_t end = (*offsets)[1].asInt();
  if (begin < 0 || end < 0)
    return makeError("negative data_offsets [{}, {}]", begin, end);
  if (begin > end)
    return makeError("data_offsets [{}, {}] end before they begin", begin, end);
  info.begin = uint64_t(begin);
  info.end = uint64_t(end);

  uint64_t bytes = 0;
  if (!shapeBytes(info.shape, dtypeSize(info.dtype), bytes))
    return makeError("shape {} × {} overflows 64 bits", formatShape(info.shape),
                     dtypeName(info.dtype));
  if (bytes != info.end - info.begin)
    return makeError("shape {} × {} needs {} bytes, data_offsets span {}",
                     formatShape(info.shape), dtypeName(info.dtype), bytes,
                     info.end - info.begin);
  if (info.end > dataSize)
    return makeError("data_offsets [{}, {}] run past the end of the data "
                     "buffer ({} bytes); is the file truncated?",
                     info.begin, info.end, dataSize);
  return Status::ok();
}

} // namespace

Expected<SafetensorsFile> SafetensorsFile::open(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return makeError("{}: cannot open: {}", path, errnoText(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return makeError("{}: cannot stat: {}", path, errnoText(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return makeError("{}: not a regular file", path);
  }
  uint64_t fileSize = uint64_t(st.st_size);
  if (fileSize < 8) {
    ::close(fd);
    return makeError("{}: file is {} bytes, too short for the 8-byte header "
                     "length of a safetensors file",
                     path, fileSize);
  }
  void *mapping =
      ::mmap(nullptr, size_t(fileSize), PROT_READ, MAP_PRIVATE, fd, 0);
  int mapErr = errno;
  ::close(fd);
  if (mapping == MAP_FAILED)
    return makeError("{}: cannot mmap {} bytes: {}", path, fileSize,
                     errnoText(mapErr));

  SafetensorsFile file;
  file.path_ = path;
  file.mapping_ = mapping;
  file.mappingSize_ = size_t(fileSize);
  const uint8_t *bytes = static_cast<const uint8_t *>(mapping);

  uint64_t headerSize = 0;
  for (int i = 7; i >= 0; --i)
    headerSize = (headerSize << 8) | bytes[i];
  if (headerSize > kMaxSafetensorsHeaderSize)
    return makeError("{}: header length {} exceeds the limit of {} bytes; not "
                     "a safetensors file?",
                     path, headerSize, kMaxSafetensorsHeaderSize);
  if (headerSize > fileSize - 8)
    return makeError("{}: header length {} runs past the end of the file ({} "
                     "bytes); is the file truncated?",
                     path, headerSize, fileSize);
  file.headerSize_ = headerSize;
  file.dataSize_ = fileSize - 8 - headerSize;
  file.dataStart_ = bytes + 8 + headerSize;

  std::string_view headerText(reinterpret_cast<const char *>(bytes + 8),
                              size_t(headerSize));
  Expected<json::Value> header = json::parse(headerText);
  if (!header)
    return makeError("{}: invalid JSON header: {}", path, header.message());
  if (!header->isObject())
    return makeError("{}: header is a JSON {}, expected an object", path,
                     json::kindName(header->kind()));

  for (json::Member &member : header->asObject()) {
    const std::string &name = member.first;
    if (name == "__metadata__") {
      if (!member.second.isObject())
        return makeError("{}: __metadata__ must be an object of strings, got "
                         "{}",
                         path, json::kindName(member.second.kind()));
      for (const json::Member &entry : member.second.asObject()) {
        if (!entry.second.isString())
          return makeError("{}: __metadata__ key '{}' must be a string, got "
                           "{}",
                           path, entry.first,
                           json::kindName(entry.second.kind()));
        file.metadata_[entry.first] = entry.second.asString();
        file.metadataInOrder_.emplace_back(entry.first,
                                           entry.second.asString());
      }
      continue;
    }
    TensorInfo info;
    info.name = name;
    Status status = parseEntry(member.second, file.dataSize_, info);
    if (!status)
      return status.error().withContext(
          fmt::format("{}: tensor '{}'", path, name));
    file.tensors_.push_back(std::move(info));
  }

  // Data order; ties (empty tensors) by name so the order is deterministic.
  std::sort(file.tensors_.begin(), file.tensors_.end(),
            [](const TensorInfo &a, const TensorInfo &b) {
              if (a.begin != b.begin)
                return a.begin < b.begin;
              if (a.end != b.end)
                return a.end < b.end;
              return a.name < b.name;
            });
  // Overlaps between tensors that hold bytes; an empty tensor overlaps
  // nothing.
  const TensorInfo *reach = nullptr; // the non-empty tensor ending last
  for (const TensorInfo &info : file.tensors_) {
    if (info.begin == info.end)
      continue;
    if (reach && info.begin < reach->end)
      return makeError("{}: tensor '{}' (data_offsets [{}, {}]) overlaps "
                       "tensor '{}' (data_offsets [{}, {}])",
                       path, info.name, info.begin, info.end, reach->name,
                       reach->begin, reach->end);
    if (!reach || info.end > reach->end)
      reach = &info;
  }

  file.index_.reserve(file.tensors_.size());
  for (size_t i = 0; i < file.tensors_.size(); ++i)
    file.index_.emplace(file.tensors_[i].name, i);
  return Expected<SafetensorsFile>(std::move(file));
}

const TensorInfo *SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Expected<const TensorInfo *>
SafetensorsFile::get(std::string_view name) const {
  if (const TensorInfo *info = find(name))
    return info;
  return makeError("tensor '{}' not found in {}", name, path_);
}

ByteSpan SafetensorsFile::data(const TensorInfo &info) const {
  assert(info.end <= dataSize_ && "TensorInfo from another file?");
  return ByteSpan{dataStart_ + info.begin, size_t(info.end - info.begin)};
}

//===----------------------------------------------------------------------===//
// SafetensorsWriter
//===----------------------------------------------------------------------===//

Status SafetensorsWriter::addEntry(std::string name, DType dtype,
                                   std::vector<int64_t> shape,
                                   const void *bytes, size_t size, bool copy) {
  if (name.empty())
    return makeError("cannot add a tensor with an empty name");
  if (name == "__metadata__")
    return makeError("cannot add a tensor named '__metadata__': the name is "
                     "reserved for the header metadata");
  if (index_.count(name))
    return makeError("tensor '{}' added twice", name);
  for (int64_t dim : shape)
    if (dim < 0)
      return makeError("tensor '{}': negative dimension in shape {}", name,
                       formatShape(shape));
  uint64_t expected = 0;
  if (!shapeBytes(shape, dtypeSize(dtype), expected))
    return makeError("tensor '{}': shape {} × {} overflows 64 bits", name,
                     formatShape(shape), dtypeName(dtype));
  if (expected != size)
    return makeError("tensor '{}': shape {} × {} needs {} bytes, got {}", name,
                     formatShape(shape), dtypeName(dtype), expected, size);
  if (size && !bytes)
    return makeError("tensor '{}': null data for {} bytes", name, size);

  Entry entry;
  entry.name = name;
  entry.dtype = dtype;
  entry.shape = std::move(shape);
  entry.size = size;
  if (copy) {
    const uint8_t *src = static_cast<const uint8_t *>(bytes);
    entry.owned.assign(src, src + size);
    entry.bytes = entry.owned.data();
  } else {
    entry.bytes = static_cast<const uint8_t *>(bytes);
  }
  index_.emplace(std::move(name), entries_.size());
  entries_.push_back(std::move(entry));
  return Status::ok();
}

Status SafetensorsWriter::add(std::string name, DType dtype,
                              std::vector<int64_t> shape, const void *bytes,
                              size_t size) {
  return addEntry(std::move(name), dtype, std::move(shape), bytes, size,
                  /*copy=*/true);
}

Status SafetensorsWriter::addView(std::string name, DType dtype,
                                  std::vector<int64_t> shape,
                                  const void *bytes, size_t size) {
  return addEntry(std::move(name), dtype, std::move(shape), bytes, size,
                  /*copy=*/false);
}

void SafetensorsWriter::setMetadata(std::string key, std::string value) {
  for (auto &entry : metadata_)
    if (entry.first == key) {
      entry.second = std::move(value);
      return;
    }
  metadata_.emplace_back(std::move(key), std::move(value));
}

std::vector<const SafetensorsWriter::Entry *>
SafetensorsWriter::sortedEntries() const {
  std::vector<const Entry *> sorted;
  sorted.reserve(entries_.size());
  for (const Entry &entry : entries_)
    sorted.push_back(&entry);
  // The Rust crate: dtype descending (wider alignment first), then name.
  std::sort(sorted.begin(), sorted.end(), [](const Entry *a, const Entry *b) {
    if (a->dtype != b->dtype)
      return a->dtype > b->dtype;
    return a->name < b->name;
  });
  return sorted;
}

std::vector<std::string> SafetensorsWriter::tensorNames() const {
  std::vector<std::string> names;
  for (const Entry &entry : entries_)
    names.push_back(entry.name);
  return names;
}

size_t SafetensorsWriter::dataBytes() const {
  size_t total = 0;
  for (const Entry &entry : entries_)
    total += entry.size;
  return total;
}

std::string SafetensorsWriter::headerJson() const {
  json::Value header = json::Value::object();
  if (!metadata_.empty()) {
    json::Value metadata = json::Value::object();
    for (const auto &entry : metadata_)
      metadata.set(entry.first, json::Value(entry.second));
    header.set("__metadata__", std::move(metadata));
  }
  uint64_t offset = 0;
  for (const Entry *entry : sortedEntries()) {
    json::Value shape = json::Value::array();
    for (int64_t dim : entry->shape)
      shape.push(json::Value(dim));
    json::Value offsets = json::Value::array();
    offsets.push(json::Value(offset));
    offsets.push(json::Value(offset + entry->size));
    offset += entry->size;
    json::Value info = json::Value::object();
    info.set("dtype", json::Value(std::string(dtypeName(entry->dtype))));
    info.set("shape", std::move(shape));
    info.set("data_offsets", std::move(offsets));
    header.asObject().emplace_back(entry->name, std::move(info));
  }
  std::string text = json::writeCompact(header);
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

namespace {

/// Writes all of `size` bytes, retrying on short writes and EINTR.
bool writeAll(int fd, const void *data, size_t size) {
  const char *p = static_cast<const char *>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, std::min<size_t>(size, size_t(1) << 30));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    p += n;
    size -= size_t(n);
  }
  return true;
}

/// Gathers small writes into larger ones.
class BufferedFd {
public:
  explicit BufferedFd(int fd) : fd_(fd) {}
  bool write(const void *data, size_t size) {
    if (buffer_.size() + size > kCapacity && !flush())
      return false;
    if (size >= kCapacity)
      return writeAll(fd_, data, size);
    const char *p = static_cast<const char *>(data);
    buffer_.append(p, size);
    return true;
  }
  bool flush() {
    bool ok = writeAll(fd_, buffer_.data(), buffer_.size());
    buffer_.clear();
    return ok;
  }

private:
  static constexpr size_t kCapacity = size_t(1) << 22;
  int fd_;
  std::string buffer_;
};

std::atomic<uint64_t> tempCounter{0};

} // namespace

Status SafetensorsWriter::write(const std::string &path) const {
  std::string header = headerJson();
  std::string tempPath =
      fmt::format("{}.tmp.{}.{}", path, long(::getpid()), tempCounter++);
  int fd = ::open(tempPath.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                  0666);
  if (fd < 0)
    return makeError("{}: cannot create temporary file {}: {}", path, tempPath,
                     errnoText(errno));
  auto fail = [&](const char *what, int err) -> Status {
    if (fd >= 0)
      ::close(fd);
    ::unlink(tempPath.c_str());
    return makeError("{}: {} {} failed: {}", path, what, tempPath,
                     errnoText(err));
  };

  uint8_t lengthBytes[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    lengthBytes[i] = uint8_t(n >> (8 * i));
  BufferedFd out(fd);
  bool ok = out.write(lengthBytes, 8) && out.write(header.data(), header.size());
  for (const Entry *entry : sortedEntries()) {
    if (!ok)
      break;
    ok = out.write(entry->bytes, entry->size);
  }
  ok = ok && out.flush();
  if (!ok)
    return fail("writing", errno);
  if (::fsync(fd) != 0)
    return fail("fsync of", errno);
  int closeResult = ::close(fd);
  fd = -1;
  if (closeResult != 0)
    return fail("closing", errno);
  if (::rename(tempPath.c_str(), path.c_str()) != 0)
    return fail("renaming", errno);

  // Make the rename durable too; a failure here loses nothing already
  // written, so it is not reported.
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (dir.empty())
    dir = "/";
  int dirFd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd >= 0) {
    (void)::fsync(dirFd);
    ::close(dirFd);
  }
  return Status::ok();
}

} // namespace qlora
