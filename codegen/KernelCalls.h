//===- KernelCalls.h - Which runtime call implements each qlora op -*- C++ -*-===//
//
// The launch metadata of a planned op, as data: the runtime function to call
// and its constant arguments (arena offsets, sizes, attributes), in the
// order runtime/step/CpuStepSupport.h declares them. The EmitC conversion
// prints these calls; nothing else decides how an op runs.
//
//===----------------------------------------------------------------------===//
#ifndef QLORA_CODEGEN_KERNELCALLS_H
#define QLORA_CODEGEN_KERNELCALLS_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/Operation.h"
#include "llvm/ADT/StringMap.h"

#include <string>

namespace mlir::qlora {

struct KernelCall {
  std::string callee;             ///< e.g. "qlora::step::rmsNorm"
  SmallVector<Attribute> args;    ///< i64 and f32 constants
};

/// Appends the calls that implement `op` (none for slot reads). `slots` maps
/// slot names to their arena offsets (for qlora.assign and the loss).
LogicalResult describeKernelCalls(Operation *op, Builder &builder,
                                  const llvm::StringMap<int64_t> &slots,
                                  SmallVectorImpl<KernelCall> &calls);

} // namespace mlir::qlora

#endif // QLORA_CODEGEN_KERNELCALLS_H
