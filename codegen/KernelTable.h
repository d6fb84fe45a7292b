//===- KernelTable.h - The runtime functions a step may call ----*- C++ -*-===//
//
// The signatures of runtime/step/CpuKernels.def and CudaKernels.def as data,
// so that every call the lowering builds is checked against the functions
// the runtime declares from the same tables: a kernel's signature is written
// once.
//
//===----------------------------------------------------------------------===//
#ifndef QLORA_CODEGEN_KERNELTABLE_H
#define QLORA_CODEGEN_KERNELTABLE_H

#include "codegen/Target.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

namespace mlir::qlora {

/// How one argument after the step context is passed.
enum class KernelArgKind {
  Buffer, ///< int64_t byte offset of a tensor part in the arena
  I64,    ///< int64_t constant
  F32,    ///< float constant
  NF4,    ///< the target's NF4Parts aggregate
};

struct KernelArg {
  KernelArgKind kind;
  const char *name;
};

struct KernelSignature {
  const char *name;
  ArrayRef<KernelArg> args;
};

/// The functions a step of `target` may call.
ArrayRef<KernelSignature> kernelTable(TargetKind target);

/// The C++ namespace of those functions ("qlora::step" or
/// "qlora::cuda_step").
StringRef kernelNamespace(TargetKind target);

/// The signature of `name`, or null.
const KernelSignature *findKernel(TargetKind target, StringRef name);

} // namespace mlir::qlora

#endif // QLORA_CODEGEN_KERNELTABLE_H
