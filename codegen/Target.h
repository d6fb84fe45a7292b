//===- Target.h - What a backend decides about a training step --*- C++ -*-===//
//
// A target description answers the questions the lowering asks per backend:
// how every buffer is stored (its element types and its parts), which
// statistics the forward keeps for the backward, in which type activations
// are computed, and which GPU architectures a step is built for. The passes
// below qlora-build-train-step take a `target` option and ask it; nothing
// else in the compiler branches on the backend's name.
//
//===----------------------------------------------------------------------===//
#ifndef QLORA_CODEGEN_TARGET_H
#define QLORA_CODEGEN_TARGET_H

#include "runtime/train/Manifest.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Types.h"
#include "llvm/ADT/SmallVector.h"

#include <optional>
#include <string>

namespace mlir::qlora {

using ::qlora::BufferRole;

enum class TargetKind { Cpu, Cuda };

/// One physical part of a buffer, before the planner places it.
struct StoragePart {
  std::string name;
  Type elementType;
  int64_t elements = 0;
};

class TargetDescription {
public:
  /// The description of `name` ("cpu" or "cuda"); an error names the
  /// targets there are.
  static FailureOr<TargetDescription>
  get(StringRef name, function_ref<InFlightDiagnostic()> emitError);

  TargetKind kind() const { return kind_; }
  StringRef name() const;

  /// The GPU architectures a cuda step is compiled for (nvcc's sm_ names);
  /// empty on the cpu.
  SmallVector<std::string> architectures() const;

  /// Whether float activations are stored and computed in bf16 (cuda;
  /// qlora-assign-compute-type retypes them) or in fp32 (the cpu reference).
  bool computesInBf16() const { return kind_ == TargetKind::Cuda; }

  /// Statistics the forward keeps for the backward
  /// (qlora-save-for-backward): attention's log-sum-exp on every target (the
  /// cpu kernel takes it too), RMSNorm's reciprocal RMS where the backward
  /// kernel reads it (cuda).
  bool savesAttentionLse() const { return true; }
  bool savesRmsNormRstd() const { return kind_ == TargetKind::Cuda; }

  /// The roofline the compiler ranks work with, in FLOP/s and bytes/s:
  /// sustained dense bf16 tensor-core rate and HBM bandwidth of an H200 on
  /// cuda; a two-core host on the cpu. Only ratios matter to the passes.
  double peakFlopsPerSecond() const;
  double memoryBytesPerSecond() const;
  /// Host memory to and from the device, per direction, pinned, while the
  /// step's kernels run (measured on the H200; memcpy on the cpu).
  double hostLinkBytesPerSecond() const;

  /// Device memory the runtime holds beside the arena: the CUDA runtime's
  /// and cuBLAS's own allocations and the step's graph (0.12-0.15 GiB
  /// measured on the H200 for 7B and 70B steps), rounded up. A memory budget
  /// covers it.
  uint64_t runtimeReserveBytes() const;

  /// A slot the target's runtime needs whatever the step computes.
  struct RequiredSlot {
    std::string name;
    BufferRole role;
    Type type;
  };
  /// cuda: the `status` words its kernels record data errors in
  /// (runtime/step/StepStatus.h) and cuBLAS's workspace.
  SmallVector<RequiredSlot> requiredSlots(MLIRContext *context) const;

  /// How a value of `type` is stored: a named slot of `role`, or a
  /// temporary (no role). Fails for types the target cannot store.
  FailureOr<SmallVector<StoragePart>>
  storage(Type type, std::optional<BufferRole> role) const;

private:
  explicit TargetDescription(TargetKind kind) : kind_(kind) {}
  TargetKind kind_;
};

} // namespace mlir::qlora

#endif // QLORA_CODEGEN_TARGET_H
