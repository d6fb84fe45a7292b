//===- QLoRAInterfaces.h - qlora op interfaces ----------------*- C++ -*-===//
//
// Declares the qlora op interfaces: DifferentiableOpInterface.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_DIALECTS_QLORAINTERFACES_H
#define QLORA_DIALECTS_QLORAINTERFACES_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpDefinition.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"

#include "dialects/QLoRAInterfaces.h.inc"

#endif // QLORA_DIALECTS_QLORAINTERFACES_H
