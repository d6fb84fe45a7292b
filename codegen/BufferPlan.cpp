//===- BufferPlan.cpp - The memory plan as data -----------------------------===//
#include "codegen/BufferPlan.h"

#include "codegen/Passes.h"
#include "runtime/NF4.h"

#include "mlir/IR/BuiltinAttributes.h"

namespace mlir::qlora {

FailureOr<uint64_t> cpuTensorBytes(Type type) {
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor || !tensor.hasStaticShape())
    return failure();
  Type element = tensor.getElementType();
  uint64_t width = 0;
  if (isa<FloatType>(element) || element.isInteger(32))
    width = 4;
  else if (element.isInteger(64))
    width = 8;
  else
    return failure();
  return uint64_t(tensor.getNumElements()) * width;
}

static int64_t numElements(NF4Type type) {
  int64_t n = 1;
  for (int64_t dim : type.getShape())
    n *= dim;
  return n;
}

uint64_t nf4PackedBytes(NF4Type type) {
  return uint64_t(::qlora::nf4::packedBytes(numElements(type)));
}

uint64_t nf4AbsmaxBytes(NF4Type type) {
  return 4 * uint64_t(
                 ::qlora::nf4::numBlocks(numElements(type), type.getBlockSize()));
}

ArrayAttr plannedBuffersToAttr(Builder &builder,
                               const std::vector<PlannedBuffer> &buffers) {
  SmallVector<Attribute> entries;
  for (const PlannedBuffer &buffer : buffers) {
    SmallVector<NamedAttribute> fields = {
        builder.getNamedAttr("name", builder.getStringAttr(buffer.name)),
        builder.getNamedAttr(
            "role", builder.getStringAttr(::qlora::bufferRoleName(buffer.role))),
        builder.getNamedAttr("type", TypeAttr::get(buffer.type)),
        builder.getNamedAttr("offset",
                             builder.getI64IntegerAttr(int64_t(buffer.offset))),
        builder.getNamedAttr("bytes",
                             builder.getI64IntegerAttr(int64_t(buffer.bytes)))};
    if (buffer.role == BufferRole::NF4)
      fields.push_back(builder.getNamedAttr(
          "absmax_offset", builder.getI64IntegerAttr(int64_t(buffer.absmaxOffset))));
    entries.push_back(builder.getDictionaryAttr(fields));
  }
  return builder.getArrayAttr(entries);
}

FailureOr<std::vector<PlannedBuffer>> readPlannedBuffers(ModuleOp module) {
  auto list = module->getAttrOfType<ArrayAttr>(kBuffersAttr);
  if (!list)
    return module.emitError()
           << "no memory plan: run qlora-plan-memory first";
  std::vector<PlannedBuffer> buffers;
  for (Attribute entry : list) {
    auto dict = dyn_cast<DictionaryAttr>(entry);
    auto name = dict ? dict.getAs<StringAttr>("name") : nullptr;
    auto role = dict ? dict.getAs<StringAttr>("role") : nullptr;
    auto type = dict ? dict.getAs<TypeAttr>("type") : nullptr;
    auto offset = dict ? dict.getAs<IntegerAttr>("offset") : nullptr;
    auto bytes = dict ? dict.getAs<IntegerAttr>("bytes") : nullptr;
    if (!name || !role || !type || !offset || !bytes)
      return module.emitError() << "malformed " << kBuffersAttr << " entry";
    PlannedBuffer buffer;
    buffer.name = name.str();
    buffer.type = type.getValue();
    buffer.offset = uint64_t(offset.getInt());
    buffer.bytes = uint64_t(bytes.getInt());
    bool known = false;
    for (BufferRole candidate :
         {BufferRole::Input, BufferRole::Output, BufferRole::Frozen,
          BufferRole::NF4, BufferRole::Trainable, BufferRole::State})
      if (role.getValue() == ::qlora::bufferRoleName(candidate)) {
        buffer.role = candidate;
        known = true;
      }
    if (!known)
      return module.emitError() << "unknown buffer role " << role;
    if (auto absmax = dict.getAs<IntegerAttr>("absmax_offset"))
      buffer.absmaxOffset = uint64_t(absmax.getInt());
    buffers.push_back(std::move(buffer));
  }
  return buffers;
}

FailureOr<ArrayRef<int64_t>> plannedOffsets(Operation *op) {
  auto offsets = op->getAttrOfType<DenseI64ArrayAttr>(kOffsetsAttr);
  if (!offsets)
    return op->emitError() << "no planned offsets: run qlora-plan-memory";
  return offsets.asArrayRef();
}

FailureOr<::qlora::StepManifest> buildManifest(ModuleOp module) {
  FailureOr<std::vector<PlannedBuffer>> planned = readPlannedBuffers(module);
  if (failed(planned))
    return failure();
  auto arena = module->getAttrOfType<IntegerAttr>(kArenaBytesAttr);
  if (!arena)
    return module.emitError() << "no " << kArenaBytesAttr;
  ::qlora::StepManifest manifest;
  manifest.backend = "cpu";
  manifest.arenaBytes = uint64_t(arena.getInt());
  manifest.entryPoints["train_step"] = "qlora_train_step";
  manifest.entryPoints["apply_gradients"] = "qlora_apply_gradients";
  for (const PlannedBuffer &buffer : *planned) {
    ::qlora::BufferInfo info;
    info.name = buffer.name;
    info.role = buffer.role;
    info.offset = buffer.offset;
    info.bytes = buffer.bytes;
    if (auto nf4 = dyn_cast<NF4Type>(buffer.type)) {
      info.dtype = ::qlora::DType::U8;
      info.shape.assign(nf4.getShape().begin(), nf4.getShape().end());
      info.blockSize = nf4.getBlockSize();
      info.absmaxOffset = buffer.absmaxOffset;
      info.doubleQuant = bool(nf4.getDoubleQuant());
    } else {
      auto tensor = cast<RankedTensorType>(buffer.type);
      info.shape.assign(tensor.getShape().begin(), tensor.getShape().end());
      Type element = tensor.getElementType();
      info.dtype = element.isInteger(32)   ? ::qlora::DType::I32
                   : element.isInteger(64) ? ::qlora::DType::I64
                                           : ::qlora::DType::F32;
    }
    manifest.buffers.push_back(std::move(info));
  }
  return manifest;
}

} // namespace mlir::qlora
