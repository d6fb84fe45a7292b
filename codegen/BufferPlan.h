//===- BufferPlan.h - The memory plan as data -----------------*- C++ -*-===//
//
// qlora-plan-memory records its plan in attributes; this header reads and
// writes them, so that the EmitC conversion and the manifest writer see the
// same plan. Buffer roles are the runtime's (runtime/train/Manifest.h): the
// plan is what the manifest publishes.
//
//===----------------------------------------------------------------------===//
#ifndef QLORA_CODEGEN_BUFFERPLAN_H
#define QLORA_CODEGEN_BUFFERPLAN_H

#include "dialects/QLoRATypes.h"
#include "runtime/train/Manifest.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace mlir::qlora {

using ::qlora::BufferRole;

/// The output slot that receives the value @train_step returns.
inline constexpr llvm::StringLiteral kLossSlot = "loss";
/// The per-call seed of LoRA dropout masks, an input the host writes.
inline constexpr llvm::StringLiteral kDropoutSeedSlot = "dropout_seed";

/// A named, persistent slot of the arena.
struct PlannedBuffer {
  std::string name;
  BufferRole role = BufferRole::State;
  Type type;
  uint64_t offset = 0, bytes = 0;
  uint64_t absmaxOffset = 0; ///< NF4 only
};

/// Bytes a ranked tensor occupies on the cpu target: fp32 for every float
/// type (the reference computes in fp32), 4 bytes for i32, 8 for i64.
FailureOr<uint64_t> cpuTensorBytes(Type type);
/// Packed NF4 codes, two per byte.
uint64_t nf4PackedBytes(NF4Type type);
/// fp32 block maxima (double quantization is undone on load on the cpu).
uint64_t nf4AbsmaxBytes(NF4Type type);

ArrayAttr plannedBuffersToAttr(Builder &builder,
                               const std::vector<PlannedBuffer> &buffers);
/// Reads the module's plan; fails with a diagnostic when it is missing.
FailureOr<std::vector<PlannedBuffer>> readPlannedBuffers(ModuleOp module);
/// The offsets the plan gave `op`'s results (or its slot).
FailureOr<ArrayRef<int64_t>> plannedOffsets(Operation *op);

/// The manifest of a planned module: buffers, arena size, the model and
/// training facts the caller provides.
FailureOr<::qlora::StepManifest> buildManifest(ModuleOp module);

} // namespace mlir::qlora

#endif // QLORA_CODEGEN_BUFFERPLAN_H
