//===- BufferPlan.cpp - The memory plan as data -----------------------------===//
#include "codegen/BufferPlan.h"

#include "codegen/Passes.h"
#include "codegen/Target.h"
#include "dialects/QLoRAOps.h"
#include "dialects/QLoRATypes.h"
#include "runtime/step/StepAbi.h"

#include "mlir/IR/BuiltinAttributes.h"

namespace mlir::qlora {

StringRef slotName(Operation *op) {
  if (auto input = dyn_cast_or_null<InputOp>(op))
    return input.getName();
  if (auto param = dyn_cast_or_null<ParamOp>(op))
    return param.getName();
  if (auto state = dyn_cast_or_null<StateOp>(op))
    return state.getSlot();
  return {};
}

FailureOr<BufferPlan> BufferPlan::read(ModuleOp module) {
  auto list = module->getAttrOfType<ArrayAttr>(kBuffersAttr);
  auto arena = module->getAttrOfType<IntegerAttr>(kArenaBytesAttr);
  auto target = module->getAttrOfType<StringAttr>(kTargetAttr);
  if (!list || !arena || !target)
    return module.emitError()
           << "no memory plan: run qlora-plan-memory first";
  BufferPlan plan;
  plan.target_ = target.str();
  plan.arenaBytes_ = arena.getInt();
  for (Attribute entry : list) {
    auto buffer = dyn_cast<BufferAttr>(entry);
    if (!buffer)
      return module.emitError() << "malformed " << kBuffersAttr << " entry "
                                << entry;
    plan.buffers_.push_back(buffer);
  }
  return plan;
}

BufferAttr BufferPlan::find(StringRef name) const {
  for (BufferAttr buffer : buffers_)
    if (buffer.getName() == name)
      return buffer;
  return {};
}

FailureOr<int64_t> BufferPlan::slotOffset(StringRef name, StringRef part,
                                          Operation *user) const {
  BufferAttr buffer = find(name);
  if (!buffer)
    return user->emitError() << "no planned slot '" << name
                             << "'; run qlora-plan-memory";
  BufferPartAttr found = buffer.getPart(part);
  if (!found)
    return user->emitError() << "slot '" << name << "' has no part '" << part
                             << "' on this target";
  return found.getOffset();
}

FailureOr<int64_t> BufferPlan::offset(Value value, StringRef part,
                                      Operation *user) const {
  Operation *definer = value.getDefiningOp();
  if (StringRef name = slotName(definer); !name.empty())
    return slotOffset(name, part, user);
  auto result = dyn_cast<OpResult>(value);
  auto offsets =
      definer ? definer->getAttrOfType<DenseI64ArrayAttr>(kOffsetsAttr)
              : DenseI64ArrayAttr();
  if (!result || !offsets ||
      result.getResultNumber() >= unsigned(offsets.size()))
    return user->emitError() << "an operand or result has no planned "
                                "offset; run qlora-plan-memory";
  if (part != ::qlora::part::kData)
    return user->emitError() << "a temporary has no part '" << part << "'";
  return offsets[result.getResultNumber()];
}

FailureOr<int64_t> BufferPlan::workspace(Operation *op, unsigned index) const {
  auto offsets = op->getAttrOfType<DenseI64ArrayAttr>(kWorkspacesAttr);
  if (!offsets || index >= unsigned(offsets.size()))
    return op->emitError() << "no planned workspace " << index
                           << "; run qlora-plan-memory with this target";
  return offsets[index];
}

namespace {

FailureOr<::qlora::DType> dtypeOf(Type type) {
  if (type.isF32())
    return ::qlora::DType::F32;
  if (type.isBF16())
    return ::qlora::DType::BF16;
  if (type.isF16())
    return ::qlora::DType::F16;
  if (type.isInteger(32))
    return ::qlora::DType::I32;
  if (type.isInteger(64))
    return ::qlora::DType::I64;
  if (type.isInteger(8))
    return ::qlora::DType::U8;
  return failure();
}

} // namespace

FailureOr<::qlora::StepManifest> buildManifest(ModuleOp module) {
  FailureOr<BufferPlan> plan = BufferPlan::read(module);
  if (failed(plan))
    return failure();
  FailureOr<TargetDescription> target = TargetDescription::get(
      plan->target(), [&] { return module.emitError(); });
  if (failed(target))
    return failure();
  ::qlora::StepManifest manifest;
  manifest.target = target->name().str();
  SmallVector<std::string> archs = target->architectures();
  manifest.architectures.assign(archs.begin(), archs.end());
  manifest.abiVersion = QLORA_STEP_ABI_VERSION;
  manifest.arenaBytes = uint64_t(plan->arenaBytes());
  if (auto host = module->getAttrOfType<IntegerAttr>(kHostArenaBytesAttr))
    manifest.hostArenaBytes = uint64_t(host.getInt());
  if (auto transfers = module->getAttrOfType<IntegerAttr>(kTransfersAttr))
    manifest.transfers = uint64_t(transfers.getInt());
  manifest.entryPoints["train_step"] = "qlora_train_step";
  manifest.entryPoints["apply_gradients"] = "qlora_apply_gradients";
  for (BufferAttr buffer : plan->buffers()) {
    ::qlora::BufferInfo info;
    info.name = buffer.getName().str();
    std::optional<BufferRole> role =
        ::qlora::parseBufferRole(buffer.getRole().str());
    if (!role)
      return module.emitError() << "unknown buffer role '" << buffer.getRole()
                                << "'";
    info.role = *role;
    Type element;
    if (auto nf4 = dyn_cast<NF4Type>(buffer.getType())) {
      info.shape.assign(nf4.getShape().begin(), nf4.getShape().end());
      info.blockSize = nf4.getBlockSize();
      info.doubleQuant = bool(nf4.getDoubleQuant());
      if (info.doubleQuant)
        info.dqBlockSize = nf4.getDoubleQuant().getBlock();
      element = nf4.getElementType();
    } else {
      auto tensor = cast<RankedTensorType>(buffer.getType());
      info.shape.assign(tensor.getShape().begin(), tensor.getShape().end());
      element = tensor.getElementType();
    }
    FailureOr<::qlora::DType> dtype = dtypeOf(element);
    if (failed(dtype))
      return module.emitError() << "no manifest dtype for " << element;
    info.dtype = *dtype;
    for (BufferPartAttr part : buffer.getParts()) {
      FailureOr<::qlora::DType> partType = dtypeOf(part.getElementType());
      if (failed(partType))
        return module.emitError()
               << "no manifest dtype for " << part.getElementType();
      info.parts.push_back({part.getName().str(), *partType,
                            part.getElements(), uint64_t(part.getOffset())});
    }
    manifest.buffers.push_back(std::move(info));
  }
  if (auto kernels = module->getAttrOfType<ArrayAttr>(kKernelsAttr))
    for (Attribute entry : kernels) {
      auto dict = cast<DictionaryAttr>(entry);
      ::qlora::KernelChoice choice;
      choice.entry = dict.getAs<StringAttr>("entry").str();
      choice.op = dict.getAs<StringAttr>("op").str();
      choice.kernel = dict.getAs<StringAttr>("kernel").str();
      if (auto variant = dict.getAs<StringAttr>("variant"))
        choice.variant = variant.str();
      manifest.kernels.push_back(std::move(choice));
    }
  return manifest;
}

} // namespace mlir::qlora
