//===- PlanMemory.cpp - qlora-plan-memory -----------------------------------===//
//
// Assigns every tensor of the entry functions a static offset in one arena:
// named slots first (inputs, parameters, state, the loss), then temporaries
// by lifetime through ArenaAllocator. See Passes.td.
//
//===----------------------------------------------------------------------===//
#include "codegen/ArenaAllocator.h"
#include "codegen/BufferPlan.h"
#include "codegen/Passes.h"

#include "dialects/QLoRAOps.h"
#include "dialects/QLoRATypes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"

#include <map>

namespace mlir::qlora {
#define GEN_PASS_DEF_PLANMEMORYPASS
#include "codegen/Passes.h.inc"

namespace {

constexpr uint64_t kAlignment = 64;

uint64_t alignUp(uint64_t bytes) {
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

/// A named slot with the type it is read or written with.
struct Slot {
  BufferRole role;
  Type type;
  Operation *firstUse;
};

class PlanMemoryPass : public impl::PlanMemoryPassBase<PlanMemoryPass> {
public:
  using impl::PlanMemoryPassBase<PlanMemoryPass>::PlanMemoryPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (target != "cpu") {
      module.emitError() << "qlora-plan-memory: expects target cpu, got '"
                         << target << "'";
      return signalPassFailure();
    }
    SmallVector<func::FuncOp> entries;
    if (failed(collectEntries(module, entries)))
      return signalPassFailure();

    std::map<std::string, Slot> slots;
    for (func::FuncOp func : entries)
      if (failed(collectSlots(func, slots)))
        return signalPassFailure();

    // Persistent slots, grouped by role so that a dump of the arena reads in
    // order: inputs, outputs, frozen weights, NF4 weights, adapters, state.
    Builder builder(module.getContext());
    std::vector<PlannedBuffer> buffers;
    llvm::StringMap<PlannedBuffer> byName;
    uint64_t cursor = 0;
    for (BufferRole role :
         {BufferRole::Input, BufferRole::Output, BufferRole::Frozen,
          BufferRole::NF4, BufferRole::Trainable, BufferRole::State}) {
      for (auto &[name, slot] : slots) {
        if (slot.role != role)
          continue;
        PlannedBuffer buffer;
        buffer.name = name;
        buffer.role = role;
        buffer.type = slot.type;
        buffer.offset = cursor;
        if (auto nf4 = dyn_cast<NF4Type>(slot.type)) {
          buffer.bytes = nf4PackedBytes(nf4);
          buffer.absmaxOffset = alignUp(cursor + buffer.bytes);
          cursor = alignUp(buffer.absmaxOffset + nf4AbsmaxBytes(nf4));
        } else {
          FailureOr<uint64_t> bytes = cpuTensorBytes(slot.type);
          if (failed(bytes)) {
            slot.firstUse->emitError()
                << "qlora-plan-memory: cannot store slot '" << name
                << "' of type " << slot.type << " on the cpu";
            return signalPassFailure();
          }
          buffer.bytes = *bytes;
          cursor = alignUp(cursor + buffer.bytes);
        }
        byName[name] = buffer;
        buffers.push_back(buffer);
      }
    }
    uint64_t persistentBytes = cursor;

    // Temporaries: the entry functions never run at the same time, so each
    // plans from the same base and the region is the largest plan.
    uint64_t temporaryBytes = 0, peakLive = 0;
    for (func::FuncOp func : entries) {
      FailureOr<std::pair<uint64_t, uint64_t>> planned =
          planFunction(func, byName, persistentBytes);
      if (failed(planned))
        return signalPassFailure();
      temporaryBytes = std::max(temporaryBytes, planned->first);
      peakLive = std::max(peakLive, planned->second);
    }
    uint64_t arenaBytes = persistentBytes + temporaryBytes;
    module->setAttr(kArenaBytesAttr, builder.getI64IntegerAttr(arenaBytes));
    module->setAttr(kBuffersAttr, plannedBuffersToAttr(builder, buffers));
    emitRemark(module.getLoc()) << "arena: " << arenaBytes << " bytes ("
                        << persistentBytes << " in named slots, "
                        << temporaryBytes << " for temporaries, whose peak "
                        << "live size is " << peakLive << ")";
  }

private:
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
        result = addSlot(slots, kDropoutSeedSlot, BufferRole::Input,
                         RankedTensorType::get(
                             {}, IntegerType::get(op.getContext(), 32)),
                         &op);
      else if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        if (ret.getNumOperands() > 1)
          return ret.emitError() << "qlora-plan-memory: an entry function "
                                    "returns at most the loss";
        if (ret.getNumOperands() == 1)
          result = addSlot(slots, kLossSlot, BufferRole::Output,
                           ret.getOperand(0).getType(), &op);
      }
      if (failed(result))
        return failure();
    }
    return success();
  }

  /// Plans the temporaries of `func`; returns the region size and the peak
  /// of live bytes.
  FailureOr<std::pair<uint64_t, uint64_t>>
  planFunction(func::FuncOp func, const llvm::StringMap<PlannedBuffer> &slots,
               uint64_t base) {
    Builder builder(func.getContext());
    llvm::DenseMap<Operation *, int64_t> position;
    int64_t index = 0;
    for (Operation &op : func.getBody().front())
      position[&op] = index++;

    ArenaAllocator allocator(kAlignment);
    struct Pending {
      Operation *op;
      SmallVector<size_t> buffers;
    };
    SmallVector<Pending> pending;
    for (Operation &op : func.getBody().front()) {
      // Named slots carry their fixed offsets.
      StringRef slotName;
      if (auto input = dyn_cast<InputOp>(op))
        slotName = input.getName();
      else if (auto param = dyn_cast<ParamOp>(op))
        slotName = param.getName();
      else if (auto state = dyn_cast<StateOp>(op))
        slotName = state.getSlot();
      if (!slotName.empty()) {
        const PlannedBuffer &slot = slots.find(slotName)->second;
        SmallVector<int64_t> offsets = {int64_t(slot.offset)};
        if (slot.role == BufferRole::NF4)
          offsets.push_back(int64_t(slot.absmaxOffset));
        op.setAttr(kOffsetsAttr, builder.getDenseI64ArrayAttr(offsets));
        continue;
      }
      Pending entry{&op, {}};
      for (Value result : op.getResults()) {
        FailureOr<uint64_t> bytes = cpuTensorBytes(result.getType());
        if (failed(bytes))
          return op.emitError() << "qlora-plan-memory: cannot store a value "
                                   "of type "
                                << result.getType() << " on the cpu";
        int64_t last = position[&op];
        for (Operation *user : result.getUsers())
          last = std::max(last, position.lookup(user));
        entry.buffers.push_back(allocator.add(*bytes, position[&op], last));
      }
      pending.push_back(std::move(entry));
    }
    uint64_t size = allocator.assign();
    for (Pending &entry : pending) {
      if (entry.buffers.empty())
        continue;
      SmallVector<int64_t> offsets;
      for (size_t buffer : entry.buffers)
        offsets.push_back(int64_t(base + allocator.offsetOf(buffer)));
      entry.op->setAttr(kOffsetsAttr, builder.getDenseI64ArrayAttr(offsets));
    }
    return std::make_pair(size, allocator.peakLiveBytes());
  }
};

} // namespace
} // namespace mlir::qlora
