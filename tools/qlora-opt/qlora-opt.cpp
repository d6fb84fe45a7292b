//===- qlora-opt.cpp - the qlora optimizer driver -------------------------===//
//
// mlir-opt for the qlora dialect: parses IR, runs qlora passes or
// `--qlora-pipeline`, prints the result. Used by the lit tests.
//
//===----------------------------------------------------------------------===//

#include "dialects/QLoRAOps.h"
#include "codegen/Passes.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<mlir::qlora::QLoRADialect, mlir::arith::ArithDialect,
                  mlir::func::FuncDialect, mlir::tensor::TensorDialect,
                  mlir::emitc::EmitCDialect>();

  // Upstream cleanups (canonicalize, cse, ...) plus ours.
  mlir::registerTransformsPasses();
  mlir::qlora::registerAllQLoRAPasses();
  mlir::qlora::registerQLoRACodegenPasses();

  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "qlora optimizer driver\n", registry));
}
