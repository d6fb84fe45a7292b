//===- MemoryPlan.cpp - The static arena plan of a training step ---------===//
//
// Assigns every buffer of the entry functions a static offset in one arena:
// named slots first (inputs, parameters, state, the loss, the target's own),
// each with the parts its target stores it as, then temporaries and the
// kernels' workspaces by lifetime through ArenaAllocator. A value that only
// feeds the write of a slot is computed in that slot when nothing reads the
// slot's old value afterwards. qlora-plan-memory writes the plan;
// qlora-rematerialize sizes candidate steps with it.
//
//===----------------------------------------------------------------------===//
#include "codegen/MemoryPlan.h"

#include "codegen/ArenaAllocator.h"
#include "codegen/BufferPlan.h"
#include "codegen/KernelLowering.h"
#include "codegen/Passes.h"

#include "dialects/QLoRAOps.h"
#include "dialects/QLoRATypes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringMap.h"

#include <map>

namespace mlir::qlora {
namespace {

/// Every part starts on this boundary: cudaMalloc's, so that the kernels'
/// vector accesses see the alignment they would on their own allocations.
constexpr uint64_t kAlignment = 256;

uint64_t alignUp(uint64_t bytes) {
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

uint64_t partBytes(const StoragePart &part) {
  return uint64_t(part.elements) *
         uint64_t(BufferPartAttr::elementBytes(part.elementType));
}

/// A named slot with the type it is read or written with.
struct Slot {
  BufferRole role;
  Type type;
  Operation *firstUse;
};

/// The operand a result may be written over when that operand dies at the
/// op: the kernels of both targets compute the loss gradient row by row in
/// place (the logits are as large as the vocabulary times the tokens).
Value overwritableOperand(Operation *op, unsigned result) {
  if (auto grad = dyn_cast<CrossEntropyGradOp>(op))
    return result == 0 ? grad.getLogits() : Value();
  return Value();
}

/// Ops whose kernels read each element before writing it, so that a result
/// may share the bytes of an operand.
bool isElementwiseInPlace(Operation *op) {
  return isa<AddOp, MulOp, FillOp, AdamWOp, FusedElementwiseOp>(op);
}

class MemoryPlanner {
public:
  MemoryPlanner(const TargetDescription &description,
                ArrayRef<std::string> entryPoints, bool annotate)
      : description(description), entryPoints(entryPoints),
        annotate(annotate), lowerings(kernelLowerings(description)) {}

  FailureOr<ArenaSizes> plan(ModuleOp module) {
    SmallVector<func::FuncOp> entries;
    if (failed(collectEntries(module, entries)))
      return failure();
    std::map<std::string, Slot> slots;
    for (func::FuncOp func : entries)
      if (failed(collectSlots(func, slots)))
        return failure();
    for (const TargetDescription::RequiredSlot &required :
         description.requiredSlots(module.getContext()))
      slots[required.name] = Slot{required.role, required.type, module};

    // Persistent slots, grouped by role so that a dump of the arena reads in
    // order: inputs, outputs, frozen weights, NF4 weights, adapters, state,
    // workspaces.
    Builder builder(module.getContext());
    SmallVector<Attribute> buffers;
    llvm::StringMap<BufferAttr> byName;
    uint64_t cursor = 0;
    for (BufferRole role :
         {BufferRole::Input, BufferRole::Output, BufferRole::Frozen,
          BufferRole::NF4, BufferRole::Trainable, BufferRole::State,
          BufferRole::Workspace}) {
      for (auto &[name, slot] : slots) {
        if (slot.role != role)
          continue;
        FailureOr<SmallVector<StoragePart>> storage =
            description.storage(slot.type, role);
        if (failed(storage)) {
          slot.firstUse->emitError()
              << "qlora-plan-memory: cannot store slot '" << name
              << "' of type " << slot.type << " on " << description.name();
          return failure();
        }
        SmallVector<BufferPartAttr> parts;
        for (const StoragePart &part : *storage) {
          parts.push_back(BufferPartAttr::get(module.getContext(), part.name,
                                              part.elementType, part.elements,
                                              int64_t(cursor)));
          cursor = alignUp(cursor + partBytes(part));
        }
        BufferAttr buffer =
            BufferAttr::get(module.getContext(), name,
                            ::qlora::bufferRoleName(role), slot.type, parts);
        byName[name] = buffer;
        buffers.push_back(buffer);
      }
    }
    uint64_t persistentBytes = cursor;

    // Temporaries: the entry functions never run at the same time, so each
    // plans from the same base and the region is the largest plan.
    uint64_t temporaryBytes = 0, peakLive = 0;
    std::string peakOp;
    for (func::FuncOp func : entries) {
      FailureOr<FunctionPlan> planned =
          planFunction(func, byName, persistentBytes);
      if (failed(planned))
        return failure();
      if (planned->regionBytes > temporaryBytes) {
        temporaryBytes = planned->regionBytes;
        peakOp = planned->peakOp;
      }
      peakLive = std::max(peakLive, planned->peakLiveBytes);
    }
    FailureOr<std::pair<uint64_t, int64_t>> host = planHost(entries);
    if (failed(host))
      return failure();
    ArenaSizes sizes{persistentBytes, temporaryBytes, peakLive, host->first,
                     peakOp};
    if (annotate) {
      if (host->first || host->second) {
        module->setAttr(kHostArenaBytesAttr,
                        builder.getI64IntegerAttr(int64_t(host->first)));
        module->setAttr(kTransfersAttr, builder.getI64IntegerAttr(host->second));
      }
      module->setAttr(kTargetAttr, builder.getStringAttr(description.name()));
      module->setAttr(kArenaBytesAttr,
                      builder.getI64IntegerAttr(int64_t(sizes.arenaBytes())));
      module->setAttr(kBuffersAttr, builder.getArrayAttr(buffers));
    }
    return sizes;
  }

private:
  const TargetDescription &description;
  ArrayRef<std::string> entryPoints;
  bool annotate;
  KernelLoweringSet lowerings;

  /// The host arena: one slot per offloaded activation, in the order of
  /// their first offload. Returns its size and the number of transfers.
  FailureOr<std::pair<uint64_t, int64_t>>
  planHost(MutableArrayRef<func::FuncOp> entries) {
    if (entries.empty())
      return std::make_pair(uint64_t(0), int64_t(0));
    Builder builder(entries.front().getContext());
    llvm::StringMap<uint64_t> offsets;
    uint64_t cursor = 0;
    int64_t transfers = 0;
    for (func::FuncOp func : entries) {
      // A wait must follow the copy it waits for, in the same function.
      llvm::DenseSet<int64_t> started;
      for (Operation &op : func.getBody().front()) {
        int64_t waited = -1;
        if (auto wait = dyn_cast<OffloadWaitOp>(op))
          waited = wait.getTransfer();
        else if (auto wait = dyn_cast<ReloadWaitOp>(op))
          waited = wait.getTransfer();
        if (waited >= 0 && !started.contains(waited))
          return op.emitError() << "qlora-plan-memory: waits for transfer "
                                << waited << " before it starts";
        StringRef name;
        Type type;
        int64_t transfer = -1;
        if (auto offload = dyn_cast<OffloadOp>(op)) {
          name = offload.getSlot();
          type = offload.getValue().getType();
          transfer = offload.getTransfer();
        } else if (auto reload = dyn_cast<ReloadOp>(op)) {
          name = reload.getSlot();
          type = reload.getType();
          transfer = reload.getTransfer();
        } else {
          continue;
        }
        started.insert(transfer);
        FailureOr<SmallVector<StoragePart>> storage =
            description.storage(type, std::nullopt);
        if (failed(storage) || storage->size() != 1)
          return op.emitError() << "qlora-plan-memory: cannot offload a "
                                   "value of type "
                                << type;
        auto [it, inserted] = offsets.try_emplace(name, cursor);
        if (inserted)
          cursor = alignUp(cursor + partBytes(storage->front()));
        transfers = std::max(transfers, transfer + 1);
        if (annotate)
          op.setAttr(kHostOffsetAttr,
                     builder.getI64IntegerAttr(int64_t(it->second)));
      }
    }
    return std::make_pair(cursor, transfers);
  }

  LogicalResult collectEntries(ModuleOp module,
                               SmallVectorImpl<func::FuncOp> &entries) {
    SmallVector<std::string> names(entryPoints.begin(), entryPoints.end());
    if (names.empty())
      names = {kTrainStepFunction.str(), kApplyGradientsFunction.str()};
    for (const std::string &name : names) {
      auto func = module.lookupSymbol<func::FuncOp>(name);
      if (!func)
        return module.emitError()
               << "qlora-plan-memory: no entry function @" << name
               << " (run qlora-build-train-step first)";
      if (!func.getBody().hasOneBlock())
        return func.emitError()
               << "qlora-plan-memory: expects a single block";
      entries.push_back(func);
    }
    return success();
  }

  LogicalResult addSlot(std::map<std::string, Slot> &slots, StringRef name,
                        BufferRole role, Type type, Operation *op) {
    auto [it, inserted] = slots.emplace(name.str(), Slot{role, type, op});
    if (inserted)
      return success();
    Slot &slot = it->second;
    if (slot.type != type)
      return op->emitError() << "qlora-plan-memory: slot '" << name
                             << "' is used with type " << type
                             << " here and " << slot.type << " elsewhere";
    // A trainable parameter stays trainable when it is also assigned.
    if (slot.role == BufferRole::State && role == BufferRole::Trainable)
      slot.role = role;
    return success();
  }

  LogicalResult collectSlots(func::FuncOp func,
                             std::map<std::string, Slot> &slots) {
    for (Operation &op : func.getBody().front()) {
      LogicalResult result = success();
      if (auto input = dyn_cast<InputOp>(op))
        result = addSlot(slots, input.getName(), BufferRole::Input,
                         input.getType(), &op);
      else if (auto param = dyn_cast<ParamOp>(op))
        result = addSlot(slots, param.getName(),
                         param.getTrainable()
                             ? BufferRole::Trainable
                             : (isa<NF4Type>(param.getType())
                                    ? BufferRole::NF4
                                    : BufferRole::Frozen),
                         param.getType(), &op);
      else if (auto state = dyn_cast<StateOp>(op))
        result = addSlot(slots, state.getSlot(), BufferRole::State,
                         state.getType(), &op);
      else if (auto assign = dyn_cast<AssignOp>(op))
        result = addSlot(slots, assign.getSlot(), BufferRole::State,
                         assign.getValue().getType(), &op);
      else if (isa<LoraOp, LoraLinearOp, LoraGradOp>(op) &&
               op.getAttrOfType<FloatAttr>("dropout") &&
               op.getAttrOfType<FloatAttr>("dropout").getValueAsDouble() != 0)
        result = addSlot(slots, ::qlora::slot::kDropoutSeed,
                         BufferRole::Input,
                         RankedTensorType::get(
                             {}, IntegerType::get(op.getContext(), 32)),
                         &op);
      else if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        if (ret.getNumOperands() > 1)
          return ret.emitError() << "qlora-plan-memory: an entry function "
                                    "returns at most the loss";
        if (ret.getNumOperands() == 1)
          result = addSlot(slots, ::qlora::slot::kLoss, BufferRole::Output,
                           ret.getOperand(0).getType(), &op);
      }
      if (failed(result))
        return failure();
    }
    return success();
  }

  /// Results of `func` that are computed directly in the slot they are
  /// written to (AssignOp), mapped to that slot's data offset: the result's
  /// only use is the write, its op is elementwise, and no op after it reads
  /// the slot's old value.
  llvm::DenseMap<Value, int64_t>
  inPlaceResults(func::FuncOp func,
                 const llvm::StringMap<BufferAttr> &slots,
                 const llvm::DenseMap<Operation *, int64_t> &position) {
    llvm::DenseMap<Value, int64_t> inPlace;
    Block &body = func.getBody().front();
    for (auto assign : body.getOps<AssignOp>()) {
      Value value = assign.getValue();
      Operation *definer = value.getDefiningOp();
      if (!definer || !isElementwiseInPlace(definer) || !value.hasOneUse())
        continue;
      auto slot = slots.find(assign.getSlot());
      if (slot == slots.end())
        continue;
      BufferPartAttr data = slot->second.getPart(::qlora::part::kData);
      if (!data || data.getElementType() !=
                       cast<RankedTensorType>(value.getType()).getElementType())
        continue;
      int64_t at = position.lookup(definer);
      bool readLater = false;
      for (Operation &reader : body) {
        if (slotName(&reader) != assign.getSlot())
          continue;
        for (Operation *user : reader.getResult(0).getUsers())
          readLater |= position.lookup(user) > at;
      }
      // Two results of one op must not land in one slot.
      bool taken = false;
      for (Value other : definer->getResults())
        taken |= other != value && inPlace.lookup(other) == data.getOffset() &&
                 inPlace.count(other);
      if (!readLater && !taken)
        inPlace[value] = data.getOffset();
    }
    return inPlace;
  }

  struct FunctionPlan {
    uint64_t regionBytes;   ///< temporaries and workspaces
    uint64_t peakLiveBytes; ///< at the peak
    std::string peakOp;     ///< "qlora.swiglu_grad at loc(...)"
  };

  /// Plans the temporaries and workspaces of `func`.
  FailureOr<FunctionPlan>
  planFunction(func::FuncOp func, const llvm::StringMap<BufferAttr> &slots,
               uint64_t base) {
    Builder builder(func.getContext());
    llvm::DenseMap<Operation *, int64_t> position;
    int64_t index = 0;
    for (Operation &op : func.getBody().front())
      position[&op] = index++;
    llvm::DenseMap<Value, int64_t> inPlace =
        inPlaceResults(func, slots, position);

    ArenaAllocator allocator(kAlignment);
    llvm::DenseMap<Value, size_t> temporaryOf;
    auto lastUse = [&](Value value) {
      int64_t last = -1;
      for (Operation *user : value.getUsers())
        last = std::max(last, position.lookup(user));
      return last;
    };
    struct Pending {
      Operation *op;
      SmallVector<std::optional<size_t>> results;
      SmallVector<size_t> workspaces;
    };
    SmallVector<Pending> pending;
    for (Operation &op : func.getBody().front()) {
      // Slot reads carry the offset of their slot's first part.
      if (StringRef name = slotName(&op); !name.empty()) {
        BufferAttr slot = slots.find(name)->second;
        if (annotate)
          op.setAttr(kOffsetsAttr, builder.getDenseI64ArrayAttr(
                                       {slot.getParts().front().getOffset()}));
        continue;
      }
      Pending entry{&op, {}, {}};
      for (Value result : op.getResults()) {
        if (inPlace.count(result)) {
          entry.results.push_back(std::nullopt);
          continue;
        }
        FailureOr<SmallVector<StoragePart>> storage =
            description.storage(result.getType(), std::nullopt);
        if (failed(storage) || storage->size() != 1)
          return op.emitError() << "qlora-plan-memory: cannot store a value "
                                   "of type "
                                << result.getType() << " on "
                                << description.name();
        int64_t last = std::max(position[&op], lastUse(result));
        Value source = overwritableOperand(
            &op, cast<OpResult>(result).getResultNumber());
        auto sourceBuffer = source ? temporaryOf.find(source)
                                   : temporaryOf.end();
        if (sourceBuffer != temporaryOf.end() &&
            source.getType() == result.getType() &&
            lastUse(source) == position[&op]) {
          allocator.extend(sourceBuffer->second, last);
          entry.results.push_back(sourceBuffer->second);
          temporaryOf[result] = sourceBuffer->second;
          continue;
        }
        size_t buffer =
            allocator.add(partBytes(storage->front()), position[&op], last);
        entry.results.push_back(buffer);
        temporaryOf[result] = buffer;
      }
      for (int64_t bytes : lowerings.workspaces(&op, description))
        entry.workspaces.push_back(allocator.add(
            uint64_t(bytes), position[&op], position[&op]));
      pending.push_back(std::move(entry));
    }
    uint64_t size = allocator.assign();
    for (Pending &entry : annotate ? pending : MutableArrayRef<Pending>()) {
      if (!entry.results.empty()) {
        SmallVector<int64_t> offsets;
        for (auto [result, buffer] :
             llvm::zip(entry.op->getResults(), entry.results))
          offsets.push_back(buffer ? int64_t(base + allocator.offsetOf(*buffer))
                                   : inPlace.lookup(result));
        entry.op->setAttr(kOffsetsAttr, builder.getDenseI64ArrayAttr(offsets));
      }
      if (!entry.workspaces.empty()) {
        SmallVector<int64_t> offsets;
        for (size_t buffer : entry.workspaces)
          offsets.push_back(int64_t(base + allocator.offsetOf(buffer)));
        entry.op->setAttr(kWorkspacesAttr,
                          builder.getDenseI64ArrayAttr(offsets));
      }
    }
    auto [peakBytes, peakAt] = allocator.peak();
    std::string peakOp;
    for (Operation &op : func.getBody().front())
      if (position.lookup(&op) == peakAt) {
        llvm::raw_string_ostream stream(peakOp);
        stream << op.getName() << " at " << op.getLoc();
      }
    return FunctionPlan{size, peakBytes, peakOp};
  }
};

} // namespace

FailureOr<ArenaSizes> planArena(ModuleOp module,
                                const TargetDescription &description,
                                ArrayRef<std::string> entryPoints,
                                bool annotate) {
  return MemoryPlanner(description, entryPoints, annotate).plan(module);
}

} // namespace mlir::qlora
