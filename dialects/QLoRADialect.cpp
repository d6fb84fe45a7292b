//===- QLoRADialect.cpp - the qlora dialect -------------------------------===//
//
// Dialect construction: registers the ops, types and attributes.
//
//===----------------------------------------------------------------------===//

#include "dialects/QLoRADialect.h"

#include "dialects/QLoRAOps.h"

using namespace mlir;
using namespace mlir::qlora;

#include "dialects/QLoRADialect.cpp.inc"

void QLoRADialect::initialize() {
  registerTypes();
  registerAttributes();
  addOperations<
#define GET_OP_LIST
#include "dialects/QLoRAOps.cpp.inc"
      >();
}
