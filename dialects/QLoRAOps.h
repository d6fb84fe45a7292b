//===- QLoRAOps.h - qlora ops ---------------------------------*- C++ -*-===//
//
// Declares the qlora ops; including it brings in the dialect, its types and
// attributes too.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_DIALECTS_QLORAOPS_H
#define QLORA_DIALECTS_QLORAOPS_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/QLoRAAttrs.h"
#include "dialects/QLoRADialect.h"
#include "dialects/QLoRAInterfaces.h"
#include "dialects/QLoRATypes.h"

namespace mlir::qlora {

/// The random-number stream that dropout masks are drawn from. Ops with a
/// non-zero dropout read and advance it, which keeps them from being CSE'd
/// or reordered with each other.
struct DropoutRNGResource
    : public SideEffects::Resource::Base<DropoutRNGResource> {
  StringRef getName() final { return "qlora.dropout_rng"; }
};

/// The persistent arena of named slots (trainable parameters, accumulated
/// gradients, optimizer moments): `qlora.state` and trainable `qlora.param`
/// read it, `qlora.assign` writes it.
struct StateResource : public SideEffects::Resource::Base<StateResource> {
  StringRef getName() final { return "qlora.state"; }
};

/// The pinned host memory that `qlora.offload` writes and `qlora.reload`
/// reads.
struct HostResource : public SideEffects::Resource::Base<HostResource> {
  StringRef getName() final { return "qlora.host"; }
};

} // namespace mlir::qlora

#define GET_OP_CLASSES
#include "dialects/QLoRAOps.h.inc"

#endif // QLORA_DIALECTS_QLORAOPS_H
