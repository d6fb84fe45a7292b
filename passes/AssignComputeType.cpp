//===- AssignComputeType.cpp - qlora-assign-compute-type --------------------===//
//
// Retypes every float tensor the optimizer does not own to bf16. See
// Passes.td.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialects/QLoRAOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseSet.h"

namespace mlir::qlora {
#define GEN_PASS_DEF_ASSIGNCOMPUTETYPEPASS
#include "passes/Passes.h.inc"

namespace {

/// The values that stay fp32 in `func`: what the optimizer owns (adapters,
/// state, adapter gradients and the arithmetic on them), saved statistics
/// and scalars.
llvm::DenseSet<Value> optimizerValues(func::FuncOp func) {
  llvm::DenseSet<Value> kept;
  func.walk([&](Operation *op) {
    auto keepAll = [&] {
      for (Value result : op->getResults())
        kept.insert(result);
    };
    if (auto param = dyn_cast<ParamOp>(op)) {
      if (param.getTrainable())
        keepAll();
    } else if (isa<StateOp, InputOp, FillOp, AdamWOp, SumSquaresOp,
                   ClipCoefficientOp>(op)) {
      keepAll();
    } else if (auto grad = dyn_cast<LoraGradOp>(op)) {
      kept.insert(grad.getDa());
      kept.insert(grad.getDb());
    } else if (auto attention = dyn_cast<AttentionOp>(op)) {
      if (Value lse = attention.getLse())
        kept.insert(lse);
    } else if (auto norm = dyn_cast<RmsNormOp>(op)) {
      if (Value rstd = norm.getRstd())
        kept.insert(rstd);
    } else if (isa<AddOp, MulOp>(op) && kept.contains(op->getOperand(0))) {
      keepAll();
    }
  });
  return kept;
}

class AssignComputeTypePass
    : public impl::AssignComputeTypePassBase<AssignComputeTypePass> {
public:
  using Base::Base;

  void runOnOperation() override {
    Type bf16 = BFloat16Type::get(&getContext());
    for (func::FuncOp func : getOperation().getOps<func::FuncOp>()) {
      llvm::DenseSet<Value> kept = optimizerValues(func);
      func.walk([&](Operation *op) {
        for (Value result : op->getResults()) {
          auto tensor = dyn_cast<RankedTensorType>(result.getType());
          if (!tensor || tensor.getRank() == 0 ||
              !isa<FloatType>(tensor.getElementType()) ||
              kept.contains(result))
            continue;
          result.setType(tensor.clone(bf16));
        }
      });
    }
  }
};

} // namespace
} // namespace mlir::qlora
