//===- Passes.h - qlora code generation passes ----------------*- C++ -*-===//
#ifndef QLORA_CODEGEN_PASSES_H
#define QLORA_CODEGEN_PASSES_H

#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include <string>

namespace mlir::qlora {

#define GEN_PASS_DECL
#include "codegen/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "codegen/Passes.h.inc"

/// The entry functions a training step exports, in call order.
inline constexpr llvm::StringLiteral kTrainStepFunction = "train_step";
inline constexpr llvm::StringLiteral kApplyGradientsFunction =
    "apply_gradients";

/// Prints a module lowered by convert-qlora-to-emitc as C++.
LogicalResult emitCpp(ModuleOp module, llvm::raw_ostream &os);

} // namespace mlir::qlora

#endif // QLORA_CODEGEN_PASSES_H
