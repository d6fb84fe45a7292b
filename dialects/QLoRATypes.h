//===- QLoRATypes.h - qlora types -----------------------------*- C++ -*-===//
//
// Declares the qlora types: the logical NF4 weight type.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_DIALECTS_QLORATYPES_H
#define QLORA_DIALECTS_QLORATYPES_H

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Types.h"

#include "dialects/QLoRAAttrs.h"
#include "dialects/QLoRADialect.h"

#define GET_TYPEDEF_CLASSES
#include "dialects/QLoRATypes.h.inc"

#endif // QLORA_DIALECTS_QLORATYPES_H
