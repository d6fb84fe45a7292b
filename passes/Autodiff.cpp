//===- Autodiff.cpp - reverse-mode differentiation ------------------------===//
//
// Activity analysis (which values depend on the parameters and reach the
// output) and the reverse sweep through DifferentiableOpInterface.
//
//===----------------------------------------------------------------------===//

#include "passes/Autodiff.h"

#include "dialects/QLoRAOps.h"

#include "mlir/Transforms/RegionUtils.h"
#include "llvm/ADT/DenseSet.h"

using namespace mlir;
using namespace mlir::qlora;

/// The values an op reads: its operands and whatever its regions capture.
static SmallVector<Value> getInputs(Operation *op) {
  SmallVector<Value> inputs(op->getOperands());
  if (op->getNumRegions() != 0) {
    llvm::SetVector<Value> captured;
    getUsedValuesDefinedAbove(op->getRegions(), captured);
    inputs.append(captured.begin(), captured.end());
  }
  return inputs;
}

FailureOr<SmallVector<Value>>
mlir::qlora::buildReverseMode(OpBuilder &builder, Block &block, Value output,
                              Value seed, ArrayRef<Value> wrt) {
  // The forward ops, fixed before the sweep adds backward ops.
  SmallVector<Operation *> ops;
  for (Operation &op : block.without_terminator())
    ops.push_back(&op);

  // Active: depends on a wrt value.
  llvm::DenseSet<Value> active(wrt.begin(), wrt.end());
  for (Operation *op : ops)
    if (llvm::any_of(getInputs(op),
                     [&](Value v) { return active.contains(v); }))
      active.insert(op->getResults().begin(), op->getResults().end());

  SmallVector<Value> result(wrt.size());
  if (!active.contains(output))
    return result;

  // Gradients of the values reached so far; the reverse sweep only visits
  // ops with a gradient on some result, i.e. on a path to `output`.
  DenseMap<Value, Value> grads;
  grads[output] = seed;
  auto accumulate = [&](Value value, Value grad) {
    Value &slot = grads[value];
    slot = slot ? AddOp::create(builder, grad.getLoc(), slot, grad) : grad;
  };

  for (Operation *op : llvm::reverse(ops)) {
    SmallVector<Value> resultGrads;
    for (Value res : op->getResults())
      resultGrads.push_back(grads.lookup(res));
    if (llvm::all_of(resultGrads, [](Value g) { return !g; }))
      continue;

    // Sources (the wrt values themselves) have nothing to propagate to.
    if (llvm::none_of(getInputs(op),
                      [&](Value v) { return active.contains(v); }))
      continue;
    auto differentiable = dyn_cast<DifferentiableOpInterface>(op);
    if (!differentiable)
      return op->emitError("cannot differentiate '")
             << op->getName()
             << "': it lies between a trainable parameter and the loss but "
                "does not implement the qlora differentiation interface";
    SmallVector<bool> needGrad;
    for (auto [index, operand] : llvm::enumerate(op->getOperands())) {
      bool need = active.contains(operand);
      if (need && !differentiable.isDifferentiableOperand(index))
        return op->emitError("cannot propagate a gradient to operand #")
               << index << " of '" << op->getName()
               << "', which depends on a trainable parameter (the operand is "
                  "frozen)";
      needGrad.push_back(need);
    }

    SmallVector<Value> operandGrads;
    if (failed(differentiable.buildGradients(builder, resultGrads, needGrad,
                                             operandGrads)))
      return failure();
    if (operandGrads.size() != op->getNumOperands())
      return op->emitError("'")
             << op->getName() << "' returned " << operandGrads.size()
             << " operand gradients, expected " << op->getNumOperands();
    for (auto [index, operand] : llvm::enumerate(op->getOperands())) {
      Value grad = operandGrads[index];
      if (!needGrad[index] || !grad)
        continue;
      if (grad.getType() != operand.getType())
        return op->emitError("'")
               << op->getName() << "' built a gradient of type "
               << grad.getType() << " for operand #" << index << " of type "
               << operand.getType();
      accumulate(operand, grad);
    }
  }

  for (auto [index, value] : llvm::enumerate(wrt))
    result[index] = grads.lookup(value);
  return result;
}
