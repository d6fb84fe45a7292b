//===- CostModel.h - What an op costs to run --------------------*- C++ -*-===//
//
// A roofline estimate of one op: its matrix FLOPs (projections, LoRA
// branches, attention) and the bytes it reads and writes. Passes that trade
// compute for memory rank their choices with it; it is not a timing.
//
//===----------------------------------------------------------------------===//
#ifndef QLORA_CODEGEN_COSTMODEL_H
#define QLORA_CODEGEN_COSTMODEL_H

#include "codegen/Target.h"

#include "mlir/IR/Operation.h"

#include <string>

namespace mlir::qlora {

struct OpCost {
  double flops = 0; ///< tensor-core work; 0 for elementwise ops
  double bytes = 0; ///< operands read and results written

  /// max(flops / peak, bytes / bandwidth) on `target`.
  double seconds(const TargetDescription &target) const;
};

OpCost estimateCost(Operation *op);

/// "84.9 TFLOP", "12.3 GFLOP", "512 MFLOP": for plans printed to users.
std::string formatFlops(double flops);

/// Bytes of a ranked tensor or NF4 value (packed codes only); 0 otherwise.
double valueBytes(Type type);

} // namespace mlir::qlora

#endif // QLORA_CODEGEN_COSTMODEL_H
