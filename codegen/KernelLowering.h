//===- KernelLowering.h - Per-target patterns from ops to kernel calls -*- C++ -*-===//
//
// How each qlora op of a planned step becomes calls of runtime functions,
// per target: a KernelLoweringSet holds one pattern per op type, filled by
// populateCpuKernelLowerings or populateCudaKernelLowerings (one file per
// target). A pattern says which workspaces the op needs (qlora-plan-memory
// places them) and builds its calls through KernelCallBuilder, which checks
// every argument against the target's kernel table (KernelTable.h). The
// EmitC conversion prints the calls and records each op's choice.
//
//===----------------------------------------------------------------------===//
#ifndef QLORA_CODEGEN_KERNELLOWERING_H
#define QLORA_CODEGEN_KERNELLOWERING_H

#include "codegen/BufferPlan.h"
#include "codegen/KernelTable.h"
#include "codegen/Target.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Operation.h"
#include "mlir/Support/TypeID.h"
#include "llvm/ADT/DenseMap.h"

#include <functional>
#include <string>

namespace mlir::qlora {

/// One call of a runtime function with constant arguments.
struct KernelCall {
  std::string callee;          ///< qualified: "qlora::cuda_step::rmsNorm"
  std::string kernel;          ///< the table's name: "rmsNorm"
  std::string variant;         ///< the strategy chosen, or empty
  SmallVector<Attribute> args; ///< i64, f32 and opaque (NF4) constants
};

class ElementwiseKernelEmitter;

/// What a pattern lowers with.
struct LoweringContext {
  Builder &builder;
  const TargetDescription &target;
  const BufferPlan &plan;
  SmallVectorImpl<KernelCall> &calls;
  /// Where generated kernels go (cuda), or null.
  ElementwiseKernelEmitter *kernels = nullptr;
};

/// Builds one call, checking each argument against the kernel's signature
/// in the target's table; emit() reports the first mismatch (a compiler
/// bug) at the op.
class KernelCallBuilder {
public:
  KernelCallBuilder(LoweringContext &context, Operation *op, StringRef kernel);

  /// The arena offset of `part` of `value`.
  KernelCallBuilder &buffer(Value value,
                            StringRef part = ::qlora::part::kData);
  /// The arena offset of part `part` of the slot `name`.
  KernelCallBuilder &slot(StringRef name,
                          StringRef part = ::qlora::part::kData);
  /// The offset of the op's planned workspace number `index`.
  KernelCallBuilder &workspace(unsigned index);
  KernelCallBuilder &i64(int64_t value);
  KernelCallBuilder &f32(float value);
  /// The offsets and shape of an NF4 weight, as the target's NF4Parts.
  KernelCallBuilder &nf4(Value weight);

  /// Appends the call; fails if an argument was missing or of the wrong
  /// kind. `variant` names the strategy for the manifest.
  LogicalResult emit(StringRef variant = "");

private:
  bool expect(KernelArgKind kind);

  LoweringContext &context_;
  Operation *op_;
  const KernelSignature *signature_ = nullptr;
  KernelCall call_;
  std::string error_;
};

/// The patterns of one target, by op type.
class KernelLoweringSet {
public:
  using LowerFn = std::function<LogicalResult(Operation *, LoweringContext &)>;
  using WorkspacesFn =
      std::function<SmallVector<int64_t>(Operation *, const TargetDescription &)>;

  /// Registers how OpT lowers, and the bytes of each workspace it needs.
  template <typename OpT>
  void add(std::function<LogicalResult(OpT, LoweringContext &)> lower,
           std::function<SmallVector<int64_t>(OpT, const TargetDescription &)>
               workspaces = nullptr) {
    Entry entry;
    entry.lower = [lower](Operation *op, LoweringContext &context) {
      return lower(cast<OpT>(op), context);
    };
    if (workspaces)
      entry.workspaces = [workspaces](Operation *op,
                                      const TargetDescription &target) {
        return workspaces(cast<OpT>(op), target);
      };
    entries_[TypeID::get<OpT>()] = std::move(entry);
  }

  /// Ops that need no call (slot reads).
  template <typename... OpTs> void addNoCall() {
    (add<OpTs>([](OpTs, LoweringContext &) { return success(); }), ...);
  }

  /// The bytes of each workspace `op` needs on `target` (none if unknown).
  SmallVector<int64_t> workspaces(Operation *op,
                                  const TargetDescription &target) const;
  /// Appends `op`'s calls; an op without a pattern is an error.
  LogicalResult lower(Operation *op, LoweringContext &context) const;

private:
  struct Entry {
    LowerFn lower;
    WorkspacesFn workspaces;
  };
  llvm::DenseMap<TypeID, Entry> entries_;
};

/// The patterns both targets share: slot reads, writes and the loss; and
/// the ops whose kernels take the same arguments in both tables (RoPE,
/// attention's forward, SwiGLU).
void populateSlotLowerings(KernelLoweringSet &set);
void populateSharedKernelLowerings(KernelLoweringSet &set);
void populateCpuKernelLowerings(KernelLoweringSet &set);
void populateCudaKernelLowerings(KernelLoweringSet &set);

/// The patterns of `target`.
KernelLoweringSet kernelLowerings(const TargetDescription &target);

/// Helpers the patterns share.
ArrayRef<int64_t> shapeOf(Value value);
int64_t numElements(Value value);
/// The dropout stream of a branch with dropout; diagnoses a missing one.
FailureOr<int64_t> dropoutStream(Operation *op, std::optional<uint64_t> stream);
/// [batch, seq] of a loss's logits; diagnoses logits of another rank.
FailureOr<std::pair<int64_t, int64_t>> lossRows(Operation *op, Value logits);

} // namespace mlir::qlora

#endif // QLORA_CODEGEN_KERNELLOWERING_H
