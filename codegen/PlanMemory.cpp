//===- PlanMemory.cpp - qlora-plan-memory -----------------------------------===//
//
// Writes the arena plan of codegen/MemoryPlan.h into the module. See
// Passes.td.
//
//===----------------------------------------------------------------------===//
#include "codegen/MemoryPlan.h"
#include "codegen/Passes.h"

namespace mlir::qlora {
#define GEN_PASS_DEF_PLANMEMORYPASS
#include "codegen/Passes.h.inc"

namespace {

class PlanMemoryPass : public impl::PlanMemoryPassBase<PlanMemoryPass> {
public:
  using impl::PlanMemoryPassBase<PlanMemoryPass>::PlanMemoryPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    FailureOr<TargetDescription> described = TargetDescription::get(
        target, [&] { return module.emitError() << "qlora-plan-memory: "; });
    if (failed(described))
      return signalPassFailure();
    SmallVector<std::string> entries(entryPoints.begin(), entryPoints.end());
    FailureOr<ArenaSizes> sizes =
        planArena(module, *described, entries, /*annotate=*/true);
    if (failed(sizes))
      return signalPassFailure();
    emitRemark(module.getLoc())
        << "arena: " << sizes->arenaBytes() << " bytes ("
        << sizes->persistentBytes << " in named slots, "
        << sizes->temporaryBytes
        << " for temporaries and workspaces, whose peak live size is "
        << sizes->peakLiveBytes << ")";
  }
};

} // namespace
} // namespace mlir::qlora
