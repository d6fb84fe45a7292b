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
    {BufferRole::Workspace, "workspace"},
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

std::optional<BufferRole> parseBufferRole(const std::string &name) {
  for (const RoleName &entry : kRoles)
    if (name == entry.name)
      return entry.role;
  return std::nullopt;
}

int64_t BufferInfo::numElements() const {
  int64_t n = 1;
  for (int64_t dim : shape)
    n *= dim;
  return n;
}

const BufferPart *BufferInfo::part(const std::string &partName) const {
  for (const BufferPart &candidate : parts)
    if (candidate.name == partName)
      return &candidate;
  return nullptr;
}

Expected<const BufferPart *>
BufferInfo::getPart(const std::string &partName) const {
  if (const BufferPart *found = part(partName))
    return found;
  return makeError("buffer '{}' has no part '{}'", name, partName);
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
  value.set("target", target);
  json::Value archs = json::Value::array();
  for (const std::string &arch : architectures)
    archs.push(arch);
  value.set("architectures", std::move(archs));
  value.set("abi_version", int64_t(abiVersion));
  value.set("library", library);
  value.set("arena_bytes", int64_t(arenaBytes));
  value.set("host_arena_bytes", int64_t(hostArenaBytes));
  value.set("transfers", int64_t(transfers));
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
    if (buffer.role == BufferRole::NF4) {
      item.set("block_size", buffer.blockSize);
      item.set("double_quant", buffer.doubleQuant);
      if (buffer.doubleQuant)
        item.set("double_quant_block_size", buffer.dqBlockSize);
    }
    json::Value parts = json::Value::array();
    for (const BufferPart &part : buffer.parts) {
      json::Value entry = json::Value::object();
      entry.set("name", part.name);
      entry.set("dtype", std::string(dtypeName(part.dtype)));
      entry.set("elements", part.elements);
      entry.set("offset", int64_t(part.offset));
      parts.push(std::move(entry));
    }
    item.set("parts", std::move(parts));
    list.push(std::move(item));
  }
  value.set("buffers", std::move(list));
  json::Value kernelList = json::Value::array();
  for (const KernelChoice &choice : kernels) {
    json::Value item = json::Value::object();
    item.set("entry", choice.entry);
    item.set("op", choice.op);
    item.set("kernel", choice.kernel);
    if (!choice.variant.empty())
      item.set("variant", choice.variant);
    kernelList.push(std::move(item));
  }
  value.set("kernels", std::move(kernelList));
  return value;
}

namespace {

/// The parts an NF4 buffer needs: codes, and either fp32 maxima or the
/// three double-quantization parts, sized for its shape.
Status checkNF4Parts(const BufferInfo &buffer) {
  int64_t n = buffer.numElements();
  auto expect = [&](const char *name, DType dtype,
                    int64_t elements) -> Status {
    const BufferPart *found = buffer.part(name);
    if (!found || found->dtype != dtype || found->elements != elements)
      return makeError("NF4 buffer '{}' needs a part '{}' of {} {}",
                       buffer.name, name, elements, dtypeName(dtype));
    return Status::ok();
  };
  QLORA_RETURN_IF_ERROR(expect(part::kCodes, DType::U8, nf4::packedBytes(n)));
  int64_t blocks = nf4::numBlocks(n, buffer.blockSize);
  if (buffer.part(part::kAbsmax))
    return expect(part::kAbsmax, DType::F32, blocks);
  if (!buffer.doubleQuant)
    return makeError("NF4 buffer '{}' has no absmax part", buffer.name);
  int64_t groups = (blocks + buffer.dqBlockSize - 1) / buffer.dqBlockSize;
  QLORA_RETURN_IF_ERROR(expect(part::kAbsmaxCodes, DType::U8, blocks));
  QLORA_RETURN_IF_ERROR(expect(part::kAbsmaxScales, DType::F32, groups));
  return expect(part::kAbsmaxOffset, DType::F32, 1);
}

} // namespace

Expected<StepManifest> StepManifest::fromJson(const json::Value &value,
                                              const std::string &where) {
  auto fail = [&](const std::string &message) {
    return makeError("{}: {}", where, message);
  };
  if (!value.isObject())
    return fail("expects a JSON object");
  Expected<std::string> format = value.getString("format");
  if (!format || *format != kManifestFormat)
    return fail(fmt::format("expects format '{}', got '{}'; recompile the "
                            "step with this version's qlora-compile",
                            kManifestFormat,
                            format ? *format : std::string("none")));
  StepManifest manifest;
  Expected<std::string> target = value.getString("target");
  Expected<std::string> library = value.getString("library");
  Expected<int64_t> abi = value.getInt("abi_version");
  Expected<int64_t> arena = value.getInt("arena_bytes");
  Expected<int64_t> batch = value.getInt("batch_size");
  Expected<int64_t> seq = value.getInt("seq_len");
  for (const Status &status :
       {target.status(), library.status(), abi.status(), arena.status(),
        batch.status(), seq.status()})
    if (!status)
      return fail(status.message());
  if (*target != "cpu" && *target != "cuda")
    return fail("expects target cpu or cuda, got '" + *target + "'");
  manifest.target = *target;
  manifest.library = *library;
  manifest.abiVersion = uint32_t(*abi);
  manifest.arenaBytes = uint64_t(*arena);
  manifest.batchSize = *batch;
  manifest.seqLen = *seq;
  // Offloading came with ABI 3; earlier steps have none.
  for (auto [key, field] : {std::pair<const char *, uint64_t *>{
                                "host_arena_bytes", &manifest.hostArenaBytes},
                            {"transfers", &manifest.transfers}}) {
    if (!value.find(key))
      continue;
    Expected<int64_t> number = value.getInt(key);
    if (!number || *number < 0)
      return fail(std::string("expects ") + key + " to be an integer >= 0");
    *field = uint64_t(*number);
  }
  if (const json::Value *archs = value.find("architectures")) {
    if (!archs->isArray())
      return fail("expects an array 'architectures'");
    for (const json::Value &arch : archs->asArray()) {
      if (!arch.isString())
        return fail("every architecture must be a string");
      manifest.architectures.push_back(arch.asString());
    }
  }
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
    for (const Status &status : {name.status(), role.status(), dtype.status()})
      if (!status)
        return fail("buffer: " + status.message());
    buffer.name = *name;
    std::optional<BufferRole> parsedRole = parseBufferRole(*role);
    if (!parsedRole)
      return fail("buffer '" + *name + "': unknown role '" + *role + "'");
    buffer.role = *parsedRole;
    std::optional<DType> parsedType = parseDType(*dtype);
    if (!parsedType)
      return fail("buffer '" + *name + "': unknown dtype '" + *dtype + "'");
    buffer.dtype = *parsedType;
    const json::Value *shape = item.find("shape");
    if (!shape || !shape->isArray())
      return fail("buffer '" + *name + "': expects a shape array");
    for (const json::Value &dim : shape->asArray()) {
      if (!dim.isInt() || dim.asInt() < 0)
        return fail("buffer '" + *name + "': bad shape");
      buffer.shape.push_back(dim.asInt());
    }
    const json::Value *parts = item.find("parts");
    if (!parts || !parts->isArray() || parts->asArray().empty())
      return fail("buffer '" + *name + "': expects a non-empty parts array");
    for (const json::Value &entry : parts->asArray()) {
      BufferPart part;
      Expected<std::string> partName = entry.getString("name");
      Expected<std::string> partType = entry.getString("dtype");
      Expected<int64_t> elements = entry.getInt("elements");
      Expected<int64_t> offset = entry.getInt("offset");
      for (const Status &status : {partName.status(), partType.status(),
                                   elements.status(), offset.status()})
        if (!status)
          return fail("buffer '" + *name + "': part: " + status.message());
      std::optional<DType> type = parseDType(*partType);
      if (!type)
        return fail("buffer '" + *name + "': unknown dtype '" + *partType +
                    "'");
      part.name = *partName;
      part.dtype = *type;
      part.elements = *elements;
      if (*offset < 0 || *elements < 0 ||
          uint64_t(*offset) + part.bytes() > manifest.arenaBytes)
        return fail("buffer '" + *name + "': part '" + *partName +
                    "' lies outside the arena");
      part.offset = uint64_t(*offset);
      buffer.parts.push_back(std::move(part));
    }
    if (buffer.role == BufferRole::NF4) {
      Expected<int64_t> block = item.getInt("block_size");
      if (!block || !nf4::isSupportedBlockSize(*block))
        return fail("buffer '" + *name + "': bad NF4 block size");
      buffer.blockSize = *block;
      if (const json::Value *dq = item.find("double_quant"))
        buffer.doubleQuant = dq->isBool() && dq->asBool();
      if (const json::Value *dqBlock = item.find("double_quant_block_size")) {
        if (!dqBlock->isInt() || dqBlock->asInt() <= 0)
          return fail("buffer '" + *name + "': bad double_quant_block_size");
        buffer.dqBlockSize = dqBlock->asInt();
      }
      if (Status checked = checkNF4Parts(buffer); !checked)
        return fail(checked.message());
    } else if (const BufferPart *data = buffer.part(part::kData);
               !data || data->elements != buffer.numElements()) {
      return fail("buffer '" + *name + "': expects a 'data' part of " +
                  std::to_string(buffer.numElements()) + " elements");
    }
    manifest.buffers.push_back(std::move(buffer));
  }
  if (const json::Value *kernelList = value.find("kernels")) {
    if (!kernelList->isArray())
      return fail("expects an array 'kernels'");
    for (const json::Value &item : kernelList->asArray()) {
      KernelChoice choice;
      Expected<std::string> entry = item.getString("entry");
      Expected<std::string> op = item.getString("op");
      Expected<std::string> kernel = item.getString("kernel");
      if (!entry || !op || !kernel)
        return fail("every kernel choice needs an entry, an op and a kernel");
      choice.entry = *entry;
      choice.op = *op;
      choice.kernel = *kernel;
      if (const json::Value *variant = item.find("variant");
          variant && variant->isString())
        choice.variant = variant->asString();
      manifest.kernels.push_back(std::move(choice));
    }
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
