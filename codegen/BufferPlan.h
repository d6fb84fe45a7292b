//===- BufferPlan.h - The memory plan as data -----------------*- C++ -*-===//
//
// qlora-plan-memory records its plan in attributes: #qlora.buffer entries
// (with their #qlora.part pieces) on the module for the named slots, and
// per op the offsets of its temporaries and workspaces. BufferPlan reads
// them back for the lowering and the manifest writer, so both see the same
// plan. Buffer roles and part names are the runtime's
// (runtime/train/Manifest.h): the plan is what the manifest publishes.
//
//===----------------------------------------------------------------------===//
#ifndef QLORA_CODEGEN_BUFFERPLAN_H
#define QLORA_CODEGEN_BUFFERPLAN_H

#include "dialects/QLoRAAttrs.h"
#include "runtime/train/Manifest.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace mlir::qlora {

using ::qlora::BufferRole;

/// Slots the step reads or writes by name beside its parameters and state
/// (runtime/train/Manifest.h).
namespace slot = ::qlora::slot;

/// Attributes of the plan.
inline constexpr llvm::StringLiteral kOffsetsAttr = "qlora.offsets";
/// On qlora.offload and qlora.reload: the host slot's offset in the host
/// arena; on the module, that arena's size and the number of transfers.
inline constexpr llvm::StringLiteral kHostOffsetAttr = "qlora.host_offset";
inline constexpr llvm::StringLiteral kHostArenaBytesAttr =
    "qlora.host_arena_bytes";
inline constexpr llvm::StringLiteral kTransfersAttr = "qlora.transfers";
inline constexpr llvm::StringLiteral kWorkspacesAttr = "qlora.workspaces";
inline constexpr llvm::StringLiteral kArenaBytesAttr = "qlora.arena_bytes";
inline constexpr llvm::StringLiteral kBuffersAttr = "qlora.buffers";
inline constexpr llvm::StringLiteral kTargetAttr = "qlora.target";
/// Written by convert-qlora-to-emitc: the kernel chosen for every op.
inline constexpr llvm::StringLiteral kKernelsAttr = "qlora.kernels";

/// A planned module, read back.
class BufferPlan {
public:
  /// Fails with a diagnostic when the module has no plan.
  static FailureOr<BufferPlan> read(ModuleOp module);

  StringRef target() const { return target_; }
  int64_t arenaBytes() const { return arenaBytes_; }
  ArrayRef<BufferAttr> buffers() const { return buffers_; }
  /// The slot called `name`, or null.
  BufferAttr find(StringRef name) const;

  /// The arena offset of `part` of `value`: the slot's part for a value read
  /// from a slot (qlora.param, qlora.input, qlora.state), else the planned
  /// temporary (whose only part is "data"). Diagnoses at `user`.
  FailureOr<int64_t> offset(Value value, StringRef part,
                            Operation *user) const;
  /// The arena offset of part `part` of slot `name`.
  FailureOr<int64_t> slotOffset(StringRef name, StringRef part,
                                Operation *user) const;
  /// The offset of `op`'s workspace number `index`.
  FailureOr<int64_t> workspace(Operation *op, unsigned index) const;

private:
  std::string target_;
  int64_t arenaBytes_ = 0;
  SmallVector<BufferAttr> buffers_;
};

/// The name of the slot a slot op reads (qlora.param, qlora.input,
/// qlora.state), or empty.
StringRef slotName(Operation *op);

/// The manifest of a planned (and converted) module: target, buffers and
/// their parts, arena size, kernel choices. The caller adds the model facts
/// and the options.
FailureOr<::qlora::StepManifest> buildManifest(ModuleOp module);

} // namespace mlir::qlora

#endif // QLORA_CODEGEN_BUFFERPLAN_H
