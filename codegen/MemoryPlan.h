//===- MemoryPlan.h - The static arena plan of a training step --*- C++ -*-===//
//
// One arena holds a step's named slots (inputs, weights, adapters, optimizer
// state) and, by lifetime, its temporaries and kernel workspaces. The plan
// qlora-plan-memory writes is the plan qlora-rematerialize measures, so the
// budget a step is compiled for is checked against the real layout.
//
//===----------------------------------------------------------------------===//
#ifndef QLORA_CODEGEN_MEMORYPLAN_H
#define QLORA_CODEGEN_MEMORYPLAN_H

#include "codegen/Target.h"

#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <string>

namespace mlir::qlora {

struct ArenaSizes {
  uint64_t persistentBytes = 0; ///< named slots
  uint64_t temporaryBytes = 0;  ///< the largest entry function's region
  uint64_t peakLiveBytes = 0;   ///< its peak of live bytes (no fragmentation)
  uint64_t hostBytes = 0;       ///< offloaded activations, in host memory
  /// The op where the largest function's live bytes peak: its name and
  /// location, for messages.
  std::string peakOp;
  uint64_t arenaBytes() const { return persistentBytes + temporaryBytes; }
};

/// Plans the arena of `module`'s entry functions (`entryPoints`, or
/// @train_step and @apply_gradients when empty). With `annotate`, writes the
/// plan: every op's offsets and workspaces and the module's buffers, arena
/// size and target; without, only measures.
FailureOr<ArenaSizes> planArena(ModuleOp module,
                                const TargetDescription &description,
                                ArrayRef<std::string> entryPoints,
                                bool annotate);

} // namespace mlir::qlora

#endif // QLORA_CODEGEN_MEMORYPLAN_H
