//===- FuseElementwise.cpp - qlora-fuse-elementwise -------------------------===//
//
// Producer fusion of elementwise ops into qlora.fused_elementwise regions.
// See Passes.td.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialects/QLoRAOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"

namespace mlir::qlora {
#define GEN_PASS_DEF_FUSEELEMENTWISEPASS
#include "passes/Passes.h.inc"

namespace {

/// The ops a region is made of: elementwise arithmetic whose operands have
/// the result's shape or are 0-d.
bool isFusible(Operation *op) {
  if (!isa<AddOp, MulOp>(op))
    return false;
  auto result = cast<RankedTensorType>(op->getResult(0).getType());
  for (Value operand : op->getOperands()) {
    auto type = cast<RankedTensorType>(operand.getType());
    if (type.getRank() != 0 && type.getShape() != result.getShape())
      return false;
  }
  return true;
}

ArrayRef<int64_t> shapeOf(Value value) {
  return cast<RankedTensorType>(value.getType()).getShape();
}

class FuseElementwisePass
    : public impl::FuseElementwisePassBase<FuseElementwisePass> {
public:
  using Base::Base;

  void runOnOperation() override {
    for (func::FuncOp func : getOperation().getOps<func::FuncOp>()) {
      SmallVector<Operation *> ops;
      for (Operation &op : func.getBody().getOps())
        ops.push_back(&op);
      llvm::DenseSet<Operation *> grouped;
      for (Operation *root : llvm::reverse(ops)) {
        if (grouped.contains(root) || !isFusible(root))
          continue;
        llvm::SetVector<Operation *> region = grow(root, grouped);
        if (region.size() < 2)
          continue;
        grouped.insert(region.begin(), region.end());
        fuse(root, region);
      }
    }
  }

private:
  /// The inputs `region` would take: operands defined outside it, in the
  /// order `ops` reads them.
  static llvm::SetVector<Value>
  inputsOf(const llvm::SetVector<Operation *> &region,
           ArrayRef<Operation *> ops) {
    llvm::SetVector<Value> inputs;
    for (Operation *op : ops)
      for (Value operand : op->getOperands())
        if (!region.contains(operand.getDefiningOp()))
          inputs.insert(operand);
    return inputs;
  }

  /// The region of `root`: producers added while their result feeds only
  /// the region, has its shape, and the inputs stay within maxInputs.
  llvm::SetVector<Operation *>
  grow(Operation *root, const llvm::DenseSet<Operation *> &grouped) {
    llvm::SetVector<Operation *> region;
    region.insert(root);
    ArrayRef<int64_t> shape = shapeOf(root->getResult(0));
    SmallVector<Operation *> worklist = {root};
    while (!worklist.empty()) {
      Operation *op = worklist.pop_back_val();
      for (Value operand : op->getOperands()) {
        Operation *producer = operand.getDefiningOp();
        if (!producer || region.contains(producer) ||
            grouped.contains(producer) || !isFusible(producer) ||
            producer->getBlock() != root->getBlock() ||
            shapeOf(producer->getResult(0)) != shape)
          continue;
        if (!llvm::all_of(producer->getResult(0).getUsers(),
                          [&](Operation *user) { return region.contains(user); }))
          continue;
        region.insert(producer);
        if (int64_t(inputsOf(region, region.getArrayRef()).size()) >
            maxInputs) {
          region.pop_back();
          continue;
        }
        worklist.push_back(producer);
      }
    }
    return region;
  }

  /// Replaces the region by one qlora.fused_elementwise at the root.
  void fuse(Operation *root, const llvm::SetVector<Operation *> &region) {
    SmallVector<Operation *> ordered(region.begin(), region.end());
    llvm::sort(ordered, [](Operation *a, Operation *b) {
      return a->isBeforeInBlock(b);
    });
    llvm::SetVector<Value> inputs = inputsOf(region, ordered);
    OpBuilder builder(root);
    Location loc = root->getLoc();
    auto fused = FusedElementwiseOp::create(
        builder, loc, TypeRange{root->getResult(0).getType()},
        inputs.getArrayRef());
    Block *body = builder.createBlock(&fused.getBody());
    IRMapping scalars;
    for (Value input : inputs)
      scalars.map(input, body->addArgument(builder.getF32Type(), loc));
    for (Operation *op : ordered) {
      Value lhs = scalars.lookup(op->getOperand(0));
      Value rhs = scalars.lookup(op->getOperand(1));
      Value result = isa<AddOp>(op)
                         ? Value(arith::AddFOp::create(builder, op->getLoc(),
                                                       lhs, rhs))
                         : Value(arith::MulFOp::create(builder, op->getLoc(),
                                                       lhs, rhs));
      scalars.map(op->getResult(0), result);
    }
    YieldOp::create(builder, loc, scalars.lookup(root->getResult(0)));
    root->getResult(0).replaceAllUsesWith(fused.getResult(0));
    for (Operation *op : llvm::reverse(ordered))
      op->erase();
  }
};

} // namespace
} // namespace mlir::qlora
