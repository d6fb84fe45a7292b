//===- QLoRAInterfaces.cpp - qlora op interfaces --------------------------===//
//
// The generated interface definitions; each op's implementation lives in
// QLoRAGradients.cpp.
//
//===----------------------------------------------------------------------===//

#include "dialects/QLoRAInterfaces.h"

using namespace mlir;
using namespace mlir::qlora;

#include "dialects/QLoRAInterfaces.cpp.inc"
