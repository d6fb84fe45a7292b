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
#include <map>

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

class RematerializePass
    : public impl::RematerializePassBase<RematerializePass> {
public:
  using Base::Base;

  void runOnOperation() override;

private:
  /// The arena of the module with `recompute` rewritten, on a copy.
  FailureOr<uint64_t> measure(ArrayRef<Candidate> recompute);
  SmallVector<Candidate> candidates(const StepAnalysis &analysis,
                                    func::FuncOp func);
  void record(const StepAnalysis &analysis, uint64_t budget, uint64_t reserve,
              const ArenaSizes &before, uint64_t after,
              ArrayRef<Candidate> chosen, double stepFlops);

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
RematerializePass::measure(ArrayRef<Candidate> recompute) {
  IRMapping mapping;
  OwningOpRef<ModuleOp> copy =
      cast<ModuleOp>(getOperation()->clone(mapping));
  auto func = copy->lookupSymbol<func::FuncOp>(kTrainStepFunction);
  FailureOr<StepAnalysis> analysis = analyze(func);
  if (failed(analysis))
    return failure();
  llvm::DenseSet<Value> values;
  for (const Candidate &candidate : recompute)
    values.insert(mapping.lookup(candidate.value));
  rewrite(func, *analysis, values);
  FailureOr<ArenaSizes> sizes =
      planArena(*copy, *description, {}, /*annotate=*/false);
  if (failed(sizes))
    return failure();
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

  SmallVector<Candidate> chosen;
  uint64_t arena = before->arenaBytes();
  if (arena > budget) {
    // Groups of like values (one per layer), cheapest per byte first; a
    // group's members stay in program order.
    SmallVector<Candidate> all = candidates(*analysis, func);
    std::map<std::tuple<std::string, unsigned, double, double>,
             SmallVector<Candidate>>
        byKey;
    SmallVector<std::tuple<std::string, unsigned, double, double>> order;
    for (const Candidate &candidate : all) {
      auto result = cast<OpResult>(candidate.value);
      auto key = std::make_tuple(
          result.getOwner()->getName().getStringRef().str(),
          result.getResultNumber(), candidate.bytes, candidate.seconds);
      auto [it, inserted] = byKey.try_emplace(key);
      if (inserted)
        order.push_back(key);
      it->second.push_back(candidate);
    }
    llvm::stable_sort(order, [&](const auto &a, const auto &b) {
      return std::get<3>(a) / std::get<2>(a) < std::get<3>(b) / std::get<2>(b);
    });
    bool fits = false;
    for (const auto &key : order) {
      ArrayRef<Candidate> group = byKey[key];
      SmallVector<Candidate> trial(chosen);
      trial.append(group.begin(), group.end());
      FailureOr<uint64_t> size = measure(trial);
      if (failed(size))
        return signalPassFailure();
      if (*size <= budget) {
        // The fewest members of this group that reach the budget.
        size_t low = 0, high = group.size();
        uint64_t fitted = *size;
        while (low + 1 < high) {
          size_t mid = (low + high) / 2;
          SmallVector<Candidate> partial(chosen);
          partial.append(group.begin(), group.begin() + mid);
          FailureOr<uint64_t> partialSize = measure(partial);
          if (failed(partialSize))
            return signalPassFailure();
          if (*partialSize <= budget) {
            high = mid;
            fitted = *partialSize;
          } else {
            low = mid;
          }
        }
        chosen.append(group.begin(), group.begin() + high);
        arena = fitted;
        fits = true;
        break;
      }
      if (*size < arena) {
        chosen = std::move(trial);
        arena = *size;
      }
    }
    if (!fits) {
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
          << chosen.size() << " of " << all.size()
          << " saved activations, plans "
          << ::qlora::formatByteSize(int64_t(arena));
      return signalPassFailure();
    }
    llvm::DenseSet<Value> values;
    for (const Candidate &candidate : chosen)
      values.insert(candidate.value);
    rewrite(func, *analysis, values);
  }
  record(*analysis, requested, reserve, *before, arena, chosen, stepFlops);
}

void RematerializePass::record(const StepAnalysis &analysis, uint64_t budget,
                               uint64_t reserve, const ArenaSizes &before,
                               uint64_t after,
                               ArrayRef<Candidate> chosen, double stepFlops) {
  ModuleOp module = getOperation();
  Builder builder(module.getContext());
  llvm::DenseSet<Value> recomputed;
  double flops = 0;
  for (const Candidate &candidate : chosen) {
    recomputed.insert(candidate.value);
    flops += candidate.flops;
  }
  // Saved values by op name: how many are kept and how many recomputed.
  llvm::MapVector<StringAttr, std::pair<int64_t, int64_t>> byOp;
  auto func = module.lookupSymbol<func::FuncOp>(kTrainStepFunction);
  for (Operation &op : func.getBody().front())
    for (Value value : op.getResults())
      if (analysis.saved.contains(value)) {
        auto &[kept, recomputedCount] = byOp[savedValueKind(value)];
        ++(recomputed.contains(value) ? recomputedCount : kept);
      }
  SmallVector<NamedAttribute> kept, recomputedOps;
  for (auto &[name, counts] : byOp) {
    if (counts.first)
      kept.push_back(builder.getNamedAttr(
          name, builder.getI64IntegerAttr(counts.first)));
    if (counts.second)
      recomputedOps.push_back(builder.getNamedAttr(
          name, builder.getI64IntegerAttr(counts.second)));
  }
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
          builder.getNamedAttr("recomputed_flops",
                               builder.getF64FloatAttr(flops)),
          builder.getNamedAttr("step_flops",
                               builder.getF64FloatAttr(stepFlops)),
      }));
  InFlightDiagnostic remark = emitRemark(module.getLoc());
  remark << "rematerialize: budget " << ::qlora::formatByteSize(int64_t(budget))
         << " (" << ::qlora::formatByteSize(int64_t(reserve))
         << " of it for the runtime), arena " << ::qlora::formatByteSize(int64_t(before.arenaBytes()))
         << " -> " << ::qlora::formatByteSize(int64_t(after)) << "; recomputing "
         << chosen.size() << " saved values (";
  llvm::interleaveComma(recomputedOps, remark, [&](NamedAttribute entry) {
    remark << entry.getName().getValue() << " x"
           << cast<IntegerAttr>(entry.getValue()).getInt();
  });
  remark << "), keeping ";
  int64_t keptCount = 0;
  for (NamedAttribute entry : kept)
    keptCount += cast<IntegerAttr>(entry.getValue()).getInt();
  remark << keptCount << "; +" << formatFlops(flops) << " per micro-batch ("
         << fmt::format("{:.1f}", stepFlops > 0 ? 100.0 * flops / stepFlops
                                               : 0.0)
         << "% of the step's matrix work)";
}

} // namespace
} // namespace mlir::qlora
