//===- Manifest.cpp - What a compiled training step needs from its host -----===//
#include "runtime/train/Manifest.h"

#include "runtime/Checkpoint.h"
#include "runtime/NF4.h"

namespace qlora {
namespace {

struct RoleName {
  BufferRole role;
  const char *name;
};
constexpr RoleName kRoles[] = {
    {BufferRole::Input, "input"},         {BufferRole::Output, "output"},
    {BufferRole::Frozen, "frozen"},       {BufferRole::NF4, "nf4"},
    {BufferRole::Trainable, "trainable"}, {BufferRole::State, "state"},
};

json::Value shapeJson(const std::vector<int64_t> &shape) {
  json::Value array = json::Value::array();
  for (int64_t dim : shape)
    array.push(dim);
  return array;
}

} // namespace

const char *bufferRoleName(BufferRole role) {
  for (const RoleName &entry : kRoles)
    if (entry.role == role)
      return entry.name;
  return "unknown";
}

int64_t BufferInfo::numElements() const {
  int64_t n = 1;
  for (int64_t dim : shape)
    n *= dim;
  return n;
}

const BufferInfo *StepManifest::find(const std::string &name) const {
  for (const BufferInfo &buffer : buffers)
    if (buffer.name == name)
      return &buffer;
  return nullptr;
}

Expected<const BufferInfo *>
StepManifest::get(const std::string &name) const {
  if (const BufferInfo *buffer = find(name))
    return buffer;
  return makeError("the compiled step has no buffer '{}'", name);
}

json::Value StepManifest::toJson() const {
  json::Value value = json::Value::object();
  value.set("format", kManifestFormat);
  value.set("backend", backend);
  value.set("library", library);
  value.set("arena_bytes", int64_t(arenaBytes));
  value.set("batch_size", batchSize);
  value.set("seq_len", seqLen);
  value.set("model", model);
  value.set("options", options.toJson());
  json::Value entries = json::Value::object();
  for (const auto &[role, symbol] : entryPoints)
    entries.set(role, symbol);
  value.set("entry_points", std::move(entries));
  json::Value list = json::Value::array();
  for (const BufferInfo &buffer : buffers) {
    json::Value item = json::Value::object();
    item.set("name", buffer.name);
    item.set("role", bufferRoleName(buffer.role));
    item.set("dtype", std::string(dtypeName(buffer.dtype)));
    item.set("shape", shapeJson(buffer.shape));
    item.set("offset", int64_t(buffer.offset));
    item.set("bytes", int64_t(buffer.bytes));
    if (buffer.role == BufferRole::NF4) {
      item.set("block_size", buffer.blockSize);
      item.set("absmax_offset", int64_t(buffer.absmaxOffset));
      item.set("double_quant", buffer.doubleQuant);
    }
    list.push(std::move(item));
  }
  value.set("buffers", std::move(list));
  return value;
}

Expected<StepManifest> StepManifest::fromJson(const json::Value &value,
                                              const std::string &where) {
  auto fail = [&](const std::string &message) {
    return makeError("{}: {}", where, message);
  };
  if (!value.isObject())
    return fail("expects a JSON object");
  Expected<std::string> format = value.getString("format");
  if (!format || *format != kManifestFormat)
    return fail(fmt::format("expects format '{}', got '{}'", kManifestFormat,
                            format ? *format : std::string("none")));
  StepManifest manifest;
  Expected<std::string> backend = value.getString("backend");
  Expected<std::string> library = value.getString("library");
  Expected<int64_t> arena = value.getInt("arena_bytes");
  Expected<int64_t> batch = value.getInt("batch_size");
  Expected<int64_t> seq = value.getInt("seq_len");
  for (const Status &status : {backend.status(), library.status(),
                               arena.status(), batch.status(), seq.status()})
    if (!status)
      return fail(status.message());
  manifest.backend = *backend;
  manifest.library = *library;
  manifest.arenaBytes = uint64_t(*arena);
  manifest.batchSize = *batch;
  manifest.seqLen = *seq;
  const json::Value *model = value.find("model");
  if (!model || !model->isObject())
    return fail("expects an object 'model'");
  manifest.model = *model;
  const json::Value *options = value.find("options");
  if (!options)
    return fail("expects an object 'options'");
  Expected<StepOptions> parsed = StepOptions::fromJson(*options);
  if (!parsed)
    return fail(parsed.message());
  manifest.options = parsed.take();
  const json::Value *entries = value.find("entry_points");
  if (!entries || !entries->isObject())
    return fail("expects an object 'entry_points'");
  for (const auto &[role, symbol] : entries->asObject()) {
    if (!symbol.isString())
      return fail("entry point '" + role + "' must be a string");
    manifest.entryPoints[role] = symbol.asString();
  }
  const json::Value *list = value.find("buffers");
  if (!list || !list->isArray())
    return fail("expects an array 'buffers'");
  for (const json::Value &item : list->asArray()) {
    if (!item.isObject())
      return fail("every buffer must be an object");
    BufferInfo buffer;
    Expected<std::string> name = item.getString("name");
    Expected<std::string> role = item.getString("role");
    Expected<std::string> dtype = item.getString("dtype");
    Expected<int64_t> offset = item.getInt("offset");
    Expected<int64_t> bytes = item.getInt("bytes");
    for (const Status &status : {name.status(), role.status(), dtype.status(),
                                 offset.status(), bytes.status()})
      if (!status)
        return fail("buffer: " + status.message());
    buffer.name = *name;
    bool knownRole = false;
    for (const RoleName &entry : kRoles)
      if (*role == entry.name) {
        buffer.role = entry.role;
        knownRole = true;
      }
    if (!knownRole)
      return fail("buffer '" + *name + "': unknown role '" + *role + "'");
    std::optional<DType> parsed = parseDType(*dtype);
    if (!parsed)
      return fail("buffer '" + *name + "': unknown dtype '" + *dtype + "'");
    buffer.dtype = *parsed;
    const json::Value *shape = item.find("shape");
    if (!shape || !shape->isArray())
      return fail("buffer '" + *name + "': expects a shape array");
    for (const json::Value &dim : shape->asArray()) {
      if (!dim.isInt() || dim.asInt() < 0)
        return fail("buffer '" + *name + "': bad shape");
      buffer.shape.push_back(dim.asInt());
    }
    if (*offset < 0 || *bytes < 0 ||
        uint64_t(*offset) + uint64_t(*bytes) > manifest.arenaBytes)
      return fail("buffer '" + *name + "' lies outside the arena");
    buffer.offset = uint64_t(*offset);
    buffer.bytes = uint64_t(*bytes);
    int64_t n = buffer.numElements();
    if (buffer.role == BufferRole::NF4) {
      Expected<int64_t> block = item.getInt("block_size");
      Expected<int64_t> absmax = item.getInt("absmax_offset");
      if (!block || !absmax || !nf4::isSupportedBlockSize(*block))
        return fail("buffer '" + *name + "': bad NF4 block size or absmax");
      buffer.blockSize = *block;
      if (const json::Value *dq = item.find("double_quant"))
        buffer.doubleQuant = dq->isBool() && dq->asBool();
      buffer.absmaxOffset = uint64_t(*absmax);
      if (buffer.bytes != uint64_t(nf4::packedBytes(n)) ||
          buffer.absmaxOffset + 4 * uint64_t(nf4::numBlocks(n, *block)) >
              manifest.arenaBytes)
        return fail("buffer '" + *name + "': NF4 sizes do not match");
    } else if (buffer.bytes != uint64_t(n) * dtypeSize(buffer.dtype)) {
      return fail("buffer '" + *name + "': shape and dtype need " +
                  std::to_string(uint64_t(n) * dtypeSize(buffer.dtype)) +
                  " bytes, got " + std::to_string(buffer.bytes));
    }
    manifest.buffers.push_back(std::move(buffer));
  }
  return manifest;
}

Expected<StepManifest> StepManifest::read(const std::string &path) {
  Expected<json::Value> value = readJsonFile(path);
  if (!value)
    return value.error();
  return fromJson(*value, path);
}

} // namespace qlora
