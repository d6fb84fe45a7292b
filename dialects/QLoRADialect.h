//===- QLoRADialect.h - the qlora dialect ---------------------*- C++ -*-===//
//
// Declares the qlora dialect. Include QLoRAOps.h for everything at once.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_DIALECTS_QLORADIALECT_H
#define QLORA_DIALECTS_QLORADIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Dialect.h"

#include "dialects/QLoRADialect.h.inc"

#endif // QLORA_DIALECTS_QLORADIALECT_H
