//===- Rematerialize.cpp - qlora-rematerialize ------------------------------===//
//
// Trades compute for memory: saved activations are recomputed in the
// backward, cheapest per freed byte first, until the arena plan fits the
// budget. See Passes.td.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "codegen/BufferPlan.h"
#include "codegen/CostModel.h"
#include "codegen/MemoryPlan.h"
#include "codegen/Passes.h"
#include "codegen/Target.h"
#include "dialects/QLoRAOps.h"
#include "runtime/ByteSize.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <limits>
#include <map>
#include <numeric>

namespace mlir::qlora {
#define GEN_PASS_DEF_REMATERIALIZEPASS
#include "passes/Passes.h.inc"

namespace {

constexpr llvm::StringLiteral kRecomputedAttr = "qlora.recomputed";

/// The forward of @train_step (what the returned loss depends on) and the
/// values of it that the backward reads.
struct StepAnalysis {
  llvm::DenseSet<Operation *> forward;
  llvm::DenseSet<Value> saved;

  bool isSlotRead(Operation *op) const { return !slotName(op).empty(); }
  /// A forward value computed by a kernel (not a slot read).
  bool isComputed(Value value) const {
    Operation *def = value.getDefiningOp();
    return def && forward.contains(def) && !isSlotRead(def);
  }
};

FailureOr<StepAnalysis> analyze(func::FuncOp func) {
  StepAnalysis analysis;
  Block &body = func.getBody().front();
  auto ret = dyn_cast<func::ReturnOp>(body.getTerminator());
  if (!ret || ret.getNumOperands() != 1)
    return func.emitError("qlora-rematerialize: expects @train_step to "
                          "return the loss");
  SmallVector<Operation *> worklist;
  if (Operation *loss = ret.getOperand(0).getDefiningOp())
    worklist.push_back(loss);
  while (!worklist.empty()) {
    Operation *op = worklist.pop_back_val();
    if (!analysis.forward.insert(op).second)
      continue;
    for (Value operand : op->getOperands())
      if (Operation *def = operand.getDefiningOp())
        worklist.push_back(def);
  }
  for (Operation &op : body) {
    if (!analysis.forward.contains(&op) || analysis.isSlotRead(&op))
      continue;
    for (Value result : op.getResults())
      for (Operation *user : result.getUsers())
        if (!analysis.forward.contains(user))
          analysis.saved.insert(result);
  }
  return analysis;
}

/// How the plan names a saved value: its op, and for an op of several
/// results the result's own name (`qlora.attention.lse`).
StringAttr savedValueKind(Value value) {
  auto result = cast<OpResult>(value);
  Operation *op = result.getOwner();
  std::string name = op->getName().getStringRef().str();
  if (op->getNumResults() > 1) {
    std::string suffix = std::to_string(result.getResultNumber());
    if (auto asmOp = dyn_cast<OpAsmOpInterface>(op))
      asmOp.getAsmResultNames([&](Value named, StringRef text) {
        if (named == value)
          suffix = text.str();
      });
    name += "." + suffix;
  }
  return StringAttr::get(op->getContext(), name);
}

/// A saved value that may be recomputed, and what that costs.
struct Candidate {
  Value value;
  double bytes = 0;
  double seconds = 0; ///< its op and the unsaved forward values it needs
  double flops = 0;
};

/// Clones the ops of `func` that compute `recompute` before their first
/// backward reader; returns the number of ops cloned.
int64_t rewrite(func::FuncOp func, const StepAnalysis &analysis,
                const llvm::DenseSet<Value> &recompute) {
  llvm::DenseMap<Value, Value> materialized;
  int64_t cloned = 0;
  std::function<Value(Value, Operation *)> materialize =
      [&](Value value, Operation *before) -> Value {
    if (!analysis.isComputed(value) ||
        (analysis.saved.contains(value) && !recompute.contains(value)))
      return value;
    if (Value done = materialized.lookup(value))
      return done;
    Operation *def = value.getDefiningOp();
    IRMapping mapping;
    for (Value operand : def->getOperands())
      mapping.map(operand, materialize(operand, before));
    OpBuilder builder(before);
    Operation *clone = builder.clone(*def, mapping);
    clone->setAttr(kRecomputedAttr, builder.getUnitAttr());
    ++cloned;
    for (auto [original, copy] :
         llvm::zip(def->getResults(), clone->getResults()))
      materialized[original] = copy;
    return materialized.lookup(value);
  };
  for (Operation &op :
       llvm::make_early_inc_range(func.getBody().front().without_terminator()))
    if (!analysis.forward.contains(&op))
      for (OpOperand &use : op.getOpOperands())
        if (recompute.contains(use.get()))
          use.set(materialize(use.get(), &op));
  return cloned;
}

/// Offloads each of `offload` to a host slot: the copy starts after the
/// value's op, the device copy is released after its last forward reader
/// once the copy is done, the reload is issued early enough in the backward
/// that the copy arrives before the first backward reader, and every
/// backward reader (recomputed clones included) reads the reloaded tensor.
/// Copies take their size over the target's host link speed, one after
/// another on the copy stream, beside ops that take their roofline time.
void offloadValues(func::FuncOp func, const StepAnalysis &analysis,
                   ArrayRef<Value> offload,
                   const TargetDescription &target) {
  Block &body = func.getBody().front();
  llvm::DenseMap<Operation *, int64_t> position;
  SmallVector<Operation *> ops;
  SmallVector<double> elapsed; // roofline seconds before each op
  double clock = 0;
  for (Operation &op : body) {
    position[&op] = int64_t(ops.size());
    ops.push_back(&op);
    elapsed.push_back(clock);
    clock += estimateCost(&op).seconds(target);
  }
  int64_t backwardStart = int64_t(ops.size());
  for (Operation *op : ops)
    if (!analysis.forward.contains(op) && !analysis.isSlotRead(op)) {
      backwardStart = position.lookup(op);
      break;
    }
  // The copies run one after another on the copy stream, in the order
  // their offloads are issued: the forward order of their values.
  SmallVector<int64_t> order(offload.size());
  std::iota(order.begin(), order.end(), int64_t(0));
  llvm::stable_sort(order, [&](int64_t a, int64_t b) {
    return position.lookup(offload[a].getDefiningOp()) <
           position.lookup(offload[b].getDefiningOp());
  });
  double linkFree = 0; // when the copy stream finishes what it was given
  struct Reload {
    Value value;
    std::string slot;
    int64_t transfer;
    Operation *firstBackward;
    double copySeconds;
  };
  SmallVector<Reload> reloads;
  OpBuilder builder(func.getContext());
  for (int64_t i : order) {
    Value value = offload[i];
    Operation *lastForward = value.getDefiningOp(), *firstBackward = nullptr;
    for (Operation *user : value.getUsers()) {
      if (analysis.forward.contains(user)) {
        if (position.lookup(user) > position.lookup(lastForward))
          lastForward = user;
      } else if (!firstBackward || position.lookup(user) <
                                       position.lookup(firstBackward)) {
        firstBackward = user;
      }
    }
    if (!firstBackward)
      continue;
    std::string slot = "offload:" + std::to_string(i);
    int64_t out = 2 * int64_t(i), back = out + 1;
    Location loc = value.getLoc();
    double copySeconds =
        valueBytes(value.getType()) / target.hostLinkBytesPerSecond();
    builder.setInsertionPointAfter(value.getDefiningOp());
    auto start = OffloadOp::create(builder, loc, slot, out, value);
    // The wait goes after the last forward reader and after the ops the
    // copy runs beside, queued behind the copies issued before it (within
    // the forward); the device copy is held until then.
    int64_t defined = position.lookup(value.getDefiningOp());
    double copied = std::max(linkFree, elapsed[defined + 1]) + copySeconds;
    linkFree = copied;
    int64_t wait = position.lookup(lastForward);
    while (wait + 1 < backwardStart && elapsed[wait + 1] < copied)
      ++wait;
    builder.setInsertionPointAfter(wait == defined ? start.getOperation()
                                                   : ops[wait]);
    OffloadWaitOp::create(builder, loc, slot, out, value);
    reloads.push_back({value, slot, back, firstBackward, copySeconds});
  }
  // The reloads run one after another on the copy stream too. From the
  // last reader back: each copy ends half its time before its first
  // reader and before the copy queued after it starts, and is issued at
  // the last op that starts before its copy must.
  llvm::stable_sort(reloads, [&](const Reload &a, const Reload &b) {
    return position.lookup(a.firstBackward) > position.lookup(b.firstBackward);
  });
  double deadline = std::numeric_limits<double>::infinity();
  for (Reload &r : reloads) {
    int64_t use = position.lookup(r.firstBackward), issue = use;
    double finish = std::min(elapsed[use] - 0.5 * r.copySeconds, deadline);
    double start = finish - r.copySeconds;
    deadline = start;
    while (issue > backwardStart && elapsed[issue] > start)
      --issue;
    Location loc = r.value.getLoc();
    builder.setInsertionPoint(ops[issue]);
    auto reload =
        ReloadOp::create(builder, loc, r.value.getType(), r.slot, r.transfer);
    builder.setInsertionPoint(r.firstBackward);
    ReloadWaitOp::create(builder, loc, r.slot, r.transfer, reload.getResult());
    r.value.replaceUsesWithIf(reload.getResult(), [&](OpOperand &use) {
      Operation *user = use.getOwner();
      return !analysis.forward.contains(user) &&
             !isa<OffloadOp, OffloadWaitOp, ReloadWaitOp>(user);
    });
  }
}

class RematerializePass
    : public impl::RematerializePassBase<RematerializePass> {
public:
  using Base::Base;

  void runOnOperation() override;

private:
  /// The arena of the module with `recompute` recomputed and `offload`
  /// offloaded, measured on a copy.
  FailureOr<uint64_t> measure(ArrayRef<Candidate> recompute,
                              ArrayRef<Candidate> offload);
  /// Where the last plan measured peaks.
  std::string lastPeakOp;
  SmallVector<Candidate> candidates(const StepAnalysis &analysis,
                                    func::FuncOp func);
  /// Recomputes, then offloads (in `func`, whose values `mapping` maps from
  /// the candidates' module when given).
  void apply(func::FuncOp func, const StepAnalysis &analysis,
             ArrayRef<Candidate> recompute, ArrayRef<Candidate> offload,
             IRMapping *mapping) {
    auto map = [&](Value value) {
      return mapping ? mapping->lookup(value) : value;
    };
    llvm::DenseSet<Value> recomputed;
    for (const Candidate &candidate : recompute)
      recomputed.insert(map(candidate.value));
    rewrite(func, analysis, recomputed);
    SmallVector<Value> offloaded;
    for (const Candidate &candidate : offload)
      offloaded.push_back(map(candidate.value));
    offloadValues(func, analysis, offloaded, *description);
  }
  void record(const StepAnalysis &analysis, uint64_t budget, uint64_t reserve,
              const ArenaSizes &before, uint64_t after,
              ArrayRef<Candidate> recompute, ArrayRef<Candidate> offload,
              double stepFlops);

  std::optional<TargetDescription> description;
};

SmallVector<Candidate>
RematerializePass::candidates(const StepAnalysis &analysis,
                              func::FuncOp func) {
  SmallVector<Candidate> result;
  for (Operation &op : func.getBody().front()) {
    for (Value value : op.getResults()) {
      if (!analysis.saved.contains(value))
        continue;
      bool readByReturn = llvm::any_of(value.getUsers(), [](Operation *user) {
        return isa<func::ReturnOp>(user);
      });
      if (readByReturn)
        continue;
      Candidate candidate{value, valueBytes(value.getType()), 0, 0};
      // Its op and, recursively, the unsaved values that op reads: those
      // were freed after the forward and come back with it.
      SmallVector<Operation *> worklist{&op};
      llvm::DenseSet<Operation *> seen;
      while (!worklist.empty()) {
        Operation *needed = worklist.pop_back_val();
        if (!seen.insert(needed).second)
          continue;
        OpCost cost = estimateCost(needed);
        candidate.seconds += cost.seconds(*description);
        candidate.flops += cost.flops;
        for (Value operand : needed->getOperands())
          if (analysis.isComputed(operand) &&
              !analysis.saved.contains(operand))
            worklist.push_back(operand.getDefiningOp());
      }
      if (candidate.bytes > 0)
        result.push_back(candidate);
    }
  }
  return result;
}

FailureOr<uint64_t>
RematerializePass::measure(ArrayRef<Candidate> recompute,
                           ArrayRef<Candidate> offload) {
  IRMapping mapping;
  OwningOpRef<ModuleOp> copy =
      cast<ModuleOp>(getOperation()->clone(mapping));
  auto func = copy->lookupSymbol<func::FuncOp>(kTrainStepFunction);
  FailureOr<StepAnalysis> analysis = analyze(func);
  if (failed(analysis))
    return failure();
  apply(func, *analysis, recompute, offload, &mapping);
  FailureOr<ArenaSizes> sizes =
      planArena(*copy, *description, {}, /*annotate=*/false);
  if (failed(sizes))
    return failure();
  lastPeakOp = sizes->peakOp;
  return sizes->arenaBytes();
}

void RematerializePass::runOnOperation() {
  ModuleOp module = getOperation();
  ::qlora::Expected<::qlora::ByteSize> parsed =
      ::qlora::parseByteSize(maxMemory);
  if (!parsed) {
    module.emitError() << "qlora-rematerialize: max-memory: "
                       << parsed.message();
    return signalPassFailure();
  }
  uint64_t requested = uint64_t(parsed->bytes);
  if (requested == 0)
    return;
  FailureOr<TargetDescription> described = TargetDescription::get(
      target, [&] { return module.emitError() << "qlora-rematerialize: "; });
  if (failed(described))
    return signalPassFailure();
  description = *described;
  // The arena gets what the runtime does not hold itself.
  uint64_t reserve = description->runtimeReserveBytes();
  uint64_t budget = requested > reserve ? requested - reserve : 0;
  auto func = module.lookupSymbol<func::FuncOp>(kTrainStepFunction);
  if (!func || !func.getBody().hasOneBlock()) {
    module.emitError() << "qlora-rematerialize: expects a one-block @"
                       << kTrainStepFunction
                       << " (run qlora-build-train-step first)";
    return signalPassFailure();
  }
  FailureOr<StepAnalysis> analysis = analyze(func);
  if (failed(analysis))
    return signalPassFailure();
  FailureOr<ArenaSizes> before =
      planArena(module, *description, {}, /*annotate=*/false);
  if (failed(before))
    return signalPassFailure();
  double stepFlops = 0;
  func.walk([&](Operation *op) { stepFlops += estimateCost(op).flops; });

  SmallVector<Candidate> recompute, offload;
  uint64_t arena = before->arenaBytes();
  if (arena > budget) {
    // Groups of like values (one per layer), tried in the four phases
    // below; a group's members stay in program order.
    SmallVector<Candidate> all = candidates(*analysis, func);
    using Key = std::tuple<std::string, unsigned, double, double>;
    auto groupsOf = [](ArrayRef<Candidate> members, auto rank) {
      std::map<Key, SmallVector<Candidate>> byKey;
      SmallVector<Key> order;
      for (const Candidate &candidate : members) {
        auto result = cast<OpResult>(candidate.value);
        Key key(result.getOwner()->getName().getStringRef().str(),
                result.getResultNumber(), candidate.bytes, candidate.seconds);
        auto [it, inserted] = byKey.try_emplace(key);
        if (inserted)
          order.push_back(key);
        it->second.push_back(candidate);
      }
      llvm::stable_sort(order, rank);
      SmallVector<SmallVector<Candidate>> groups;
      for (const Key &key : order)
        groups.push_back(byKey[key]);
      return groups;
    };
    auto cheapestPerByte = [](const Key &a, const Key &b) {
      return std::get<3>(a) / std::get<2>(a) < std::get<3>(b) / std::get<2>(b);
    };
    auto largest = [](const Key &a, const Key &b) {
      return std::get<2>(a) > std::get<2>(b);
    };
    // Tries `group` in `into`; keeps it if the plan shrinks, and cuts it to
    // its fewest members that fit once it reaches the budget.
    bool fits = false;
    auto tryGroup = [&](ArrayRef<Candidate> group,
                        SmallVector<Candidate> &into) -> LogicalResult {
      auto sizeWith = [&](size_t count) {
        SmallVector<Candidate> trial(into);
        trial.append(group.begin(), group.begin() + count);
        return &into == &recompute ? measure(trial, offload)
                                   : measure(recompute, trial);
      };
      if (group.empty())
        return success();
      FailureOr<uint64_t> size = sizeWith(group.size());
      if (failed(size))
        return failure();
      if (*size > budget) {
        if (*size < arena) {
          into.append(group.begin(), group.end());
          arena = *size;
        }
        return success();
      }
      size_t low = 0, high = group.size();
      uint64_t fitted = *size;
      while (low + 1 < high) {
        size_t mid = (low + high) / 2;
        FailureOr<uint64_t> partial = sizeWith(mid);
        if (failed(partial))
          return failure();
        if (*partial <= budget) {
          high = mid;
          fitted = *partial;
        } else {
          low = mid;
        }
      }
      into.append(group.begin(), group.begin() + high);
      arena = fitted;
      fits = true;
      return success();
    };
    // Four phases, each group measured:
    //  1. recompute what costs less per byte than a tenth of copying it over
    //     the host link (elementwise results);
    //  2. offload, most expensive to recompute first, as much as the link
    //     moves while the forward runs (the copies hide behind compute);
    //  3. recompute the rest, cheapest per byte first;
    //  4. offload what is still kept, largest first, though copies may then
    //     stall the step.
    double linkSecondsPerByte = 1.0 / description->hostLinkBytesPerSecond();
    double linkCapacity = 0;
    for (Operation *op : analysis->forward)
      linkCapacity += estimateCost(op).seconds(*description);
    linkCapacity *= description->hostLinkBytesPerSecond();
    llvm::DenseSet<Value> decided;
    auto undecided = [&](ArrayRef<Candidate> group) {
      SmallVector<Candidate> left;
      for (const Candidate &candidate : group)
        if (!decided.contains(candidate.value))
          left.push_back(candidate);
      return left;
    };

    auto take = [&](ArrayRef<Candidate> group,
                    SmallVector<Candidate> &into) -> LogicalResult {
      size_t before = into.size();
      if (failed(tryGroup(group, into)))
        return failure();
      for (size_t i = before; i < into.size(); ++i)
        decided.insert(into[i].value);
      return success();
    };
    auto costlierPerByte = [&](const Key &a, const Key &b) {
      return cheapestPerByte(b, a);
    };
    SmallVector<SmallVector<Candidate>> byRatio =
        groupsOf(all, cheapestPerByte);
    for (const SmallVector<Candidate> &group : byRatio)
      if (!fits && group.front().seconds / group.front().bytes <
                       0.1 * linkSecondsPerByte &&
          failed(take(undecided(group), recompute)))
        return signalPassFailure();
    if (!fits && offloadActivations) {
      double moved = 0;
      for (const SmallVector<Candidate> &group :
           groupsOf(undecided(all), costlierPerByte)) {
        double bytes = group.front().bytes * double(group.size());
        if (fits || moved + bytes > linkCapacity)
          continue;
        size_t before = offload.size();
        if (failed(take(group, offload)))
          return signalPassFailure();
        for (size_t i = before; i < offload.size(); ++i)
          moved += offload[i].bytes;
      }
    }
    for (const SmallVector<Candidate> &group : byRatio)
      if (!fits && failed(take(undecided(group), recompute)))
        return signalPassFailure();
    if (!fits && offloadActivations)
      for (const SmallVector<Candidate> &group :
           groupsOf(undecided(all), largest))
        if (!fits && failed(take(group, offload)))
          return signalPassFailure();
    if (!fits) {
      // Where the smallest plan peaks, for the user to act on.
      if (failed(measure(recompute, offload)))
        return signalPassFailure();
      module.emitError()
          << "qlora-rematerialize: max-memory "
          << ::qlora::formatByteSize(int64_t(requested))
          << " cannot be met: the runtime holds "
          << ::qlora::formatByteSize(int64_t(reserve))
          << " beside the arena, the named slots (weights, adapters, optimizer "
             "state, inputs) take "
          << ::qlora::formatByteSize(int64_t(before->persistentBytes))
          << ", the step as built plans "
          << ::qlora::formatByteSize(int64_t(before->arenaBytes()))
          << ", and the smallest plan found, recomputing "
          << recompute.size() << " and offloading " << offload.size()
          << " of " << all.size() << " saved activations, plans "
          << ::qlora::formatByteSize(int64_t(arena)) << ", at its peak at "
          << lastPeakOp;
      return signalPassFailure();
    }
    apply(func, *analysis, recompute, offload, nullptr);
  }
  record(*analysis, requested, reserve, *before, arena, recompute, offload,
         stepFlops);
}

void RematerializePass::record(const StepAnalysis &analysis, uint64_t budget,
                               uint64_t reserve, const ArenaSizes &before,
                               uint64_t after,
                               ArrayRef<Candidate> recompute,
                               ArrayRef<Candidate> offload,
                               double stepFlops) {
  ModuleOp module = getOperation();
  Builder builder(module.getContext());
  llvm::DenseSet<Value> recomputed;
  double flops = 0;
  for (const Candidate &candidate : recompute) {
    recomputed.insert(candidate.value);
    flops += candidate.flops;
  }
  llvm::DenseSet<Value> offloaded;
  double offloadBytes = 0;
  for (const Candidate &candidate : offload) {
    offloaded.insert(candidate.value);
    offloadBytes += candidate.bytes;
  }
  // Saved values by op name: how many are kept, recomputed and offloaded.
  llvm::MapVector<StringAttr, std::array<int64_t, 3>> byOp;
  auto func = module.lookupSymbol<func::FuncOp>(kTrainStepFunction);
  for (Operation &op : func.getBody().front())
    for (Value value : op.getResults())
      if (analysis.saved.contains(value))
        ++byOp[savedValueKind(value)][recomputed.contains(value)   ? 1
                                      : offloaded.contains(value) ? 2
                                                                  : 0];
  SmallVector<NamedAttribute> kept, recomputedOps, offloadedOps;
  for (auto &[name, counts] : byOp)
    for (auto [count, list] :
         llvm::zip(counts, std::array<SmallVector<NamedAttribute> *, 3>{
                               &kept, &recomputedOps, &offloadedOps}))
      if (count)
        list->push_back(
            builder.getNamedAttr(name, builder.getI64IntegerAttr(count)));
  auto i64 = [&](uint64_t value) {
    return builder.getI64IntegerAttr(int64_t(value));
  };
  module->setAttr(
      kRematerializationAttr,
      builder.getDictionaryAttr({
          builder.getNamedAttr("budget", i64(budget)),
          builder.getNamedAttr("runtime_reserve", i64(reserve)),
          builder.getNamedAttr("arena_before", i64(before.arenaBytes())),
          builder.getNamedAttr("arena_after", i64(after)),
          builder.getNamedAttr("named_slots", i64(before.persistentBytes)),
          builder.getNamedAttr("kept", builder.getDictionaryAttr(kept)),
          builder.getNamedAttr("recomputed",
                               builder.getDictionaryAttr(recomputedOps)),
          builder.getNamedAttr("offloaded",
                               builder.getDictionaryAttr(offloadedOps)),
          builder.getNamedAttr("host_bytes", i64(offloadBytes)),
          builder.getNamedAttr("recomputed_flops",
                               builder.getF64FloatAttr(flops)),
          builder.getNamedAttr("step_flops",
                               builder.getF64FloatAttr(stepFlops)),
      }));
  auto list = [](InFlightDiagnostic &remark, ArrayRef<NamedAttribute> ops) {
    remark << "(";
    llvm::interleaveComma(ops, remark, [&](NamedAttribute entry) {
      remark << entry.getName().getValue() << " x"
             << cast<IntegerAttr>(entry.getValue()).getInt();
    });
    remark << ")";
  };
  int64_t keptCount = 0;
  for (NamedAttribute entry : kept)
    keptCount += cast<IntegerAttr>(entry.getValue()).getInt();
  InFlightDiagnostic remark = emitRemark(module.getLoc());
  remark << "rematerialize: budget " << ::qlora::formatByteSize(int64_t(budget))
         << " (" << ::qlora::formatByteSize(int64_t(reserve))
         << " of it for the runtime), arena "
         << ::qlora::formatByteSize(int64_t(before.arenaBytes())) << " -> "
         << ::qlora::formatByteSize(int64_t(after)) << "; recomputing "
         << recompute.size() << " saved values ";
  list(remark, recomputedOps);
  remark << ", offloading " << offload.size() << " to host memory ";
  list(remark, offloadedOps);
  remark << ", keeping " << keptCount << "; +" << formatFlops(flops)
         << " per micro-batch ("
         << fmt::format("{:.1f}", stepFlops > 0 ? 100.0 * flops / stepFlops
                                                : 0.0)
         << "% of the step's matrix work)";
}

} // namespace
} // namespace mlir::qlora
