//===- QLoRAGradients.cpp - DifferentiableOpInterface of the qlora ops ----===//
//
// The vector-Jacobian products of the differentiable qlora ops: each one
// maps the gradient of its result to the gradients of its operands with
// the dialect's backward ops. Frozen operands (base and norm weights, the
// embedding table, ids, labels) never get a gradient.
//
//===----------------------------------------------------------------------===//

#include "dialects/QLoRAOps.h"

#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace mlir::qlora;

/// One null gradient per operand of `op`.
static void clearGrads(Operation *op, SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(op->getNumOperands(), Value());
}

/// The gradient of the op's single result, or null when it is zero or no
/// operand needs a gradient (then there is nothing to build).
static Value singleResultGrad(ArrayRef<Value> resultGrads,
                              ArrayRef<bool> needGrad) {
  if (resultGrads.size() != 1 || !llvm::is_contained(needGrad, true))
    return {};
  return resultGrads.front();
}

//===----------------------------------------------------------------------===//
// Frozen: dequantize, embedding
//===----------------------------------------------------------------------===//

bool DequantizeOp::isDifferentiableOperand(unsigned) { return false; }

LogicalResult DequantizeOp::buildGradients(OpBuilder &, ArrayRef<Value>,
                                           ArrayRef<bool>,
                                           SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  return success();
}

bool EmbeddingOp::isDifferentiableOperand(unsigned) { return false; }

LogicalResult EmbeddingOp::buildGradients(OpBuilder &, ArrayRef<Value>,
                                          ArrayRef<bool>,
                                          SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  return success();
}

//===----------------------------------------------------------------------===//
// Projections and LoRA branches
//===----------------------------------------------------------------------===//

bool LinearOp::isDifferentiableOperand(unsigned index) { return index == 0; }

LogicalResult LinearOp::buildGradients(OpBuilder &builder,
                                       ArrayRef<Value> resultGrads,
                                       ArrayRef<bool> needGrad,
                                       SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  Value dy = singleResultGrad(resultGrads, needGrad);
  if (dy && needGrad[0])
    grads[0] = LinearGradInputOp::create(builder, getLoc(), dy, getWeight());
  return success();
}

bool NF4MatmulOp::isDifferentiableOperand(unsigned index) {
  return index == 0;
}

LogicalResult NF4MatmulOp::buildGradients(OpBuilder &builder,
                                          ArrayRef<Value> resultGrads,
                                          ArrayRef<bool> needGrad,
                                          SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  Value dy = singleResultGrad(resultGrads, needGrad);
  if (dy && needGrad[0])
    grads[0] = LinearGradInputOp::create(builder, getLoc(), dy, getWeight());
  return success();
}

bool LoraOp::isDifferentiableOperand(unsigned) { return true; }

LogicalResult LoraOp::buildGradients(OpBuilder &builder,
                                     ArrayRef<Value> resultGrads,
                                     ArrayRef<bool> needGrad,
                                     SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  Value dy = singleResultGrad(resultGrads, needGrad);
  if (!dy)
    return success();
  auto grad = LoraGradOp::create(builder, getLoc(), getInput(), getLoraA(),
                                 getLoraB(), dy, getScaleAttr(),
                                 getDropoutAttr(), getDropoutStreamAttr());
  for (unsigned i = 0; i < 3; ++i)
    if (needGrad[i])
      grads[i] = grad->getResult(i);
  return success();
}

bool LoraLinearOp::isDifferentiableOperand(unsigned index) {
  // The base weight (operand 1) is frozen.
  return index != 1;
}

LogicalResult LoraLinearOp::buildGradients(OpBuilder &builder,
                                           ArrayRef<Value> resultGrads,
                                           ArrayRef<bool> needGrad,
                                           SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  Value dy = singleResultGrad(resultGrads, needGrad);
  if (!dy)
    return success();
  Location loc = getLoc();
  auto branch =
      LoraGradOp::create(builder, loc, getInput(), getLoraA(), getLoraB(), dy,
                         getScaleAttr(), getDropoutAttr(),
                         getDropoutStreamAttr());
  if (needGrad[0]) {
    Value base = LinearGradInputOp::create(builder, loc, dy, getWeight());
    grads[0] = AddOp::create(builder, loc, base, branch.getDx());
  }
  if (needGrad[2])
    grads[2] = branch.getDa();
  if (needGrad[3])
    grads[3] = branch.getDb();
  return success();
}

//===----------------------------------------------------------------------===//
// The network
//===----------------------------------------------------------------------===//

bool AttentionOp::isDifferentiableOperand(unsigned) { return true; }

LogicalResult AttentionOp::buildGradients(OpBuilder &builder,
                                          ArrayRef<Value> resultGrads,
                                          ArrayRef<bool> needGrad,
                                          SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  Value dout = singleResultGrad(resultGrads, needGrad);
  if (!dout)
    return success();
  auto grad = AttentionGradOp::create(
      builder, getLoc(), getQ(), getK(), getV(), getResult(), dout,
      getNumHeads(), getNumKvHeads(), getHeadDim(),
      getScale().convertToFloat());
  for (unsigned i = 0; i < 3; ++i)
    if (needGrad[i])
      grads[i] = grad->getResult(i);
  return success();
}

bool CrossEntropyOp::isDifferentiableOperand(unsigned index) {
  return index == 0;
}

LogicalResult CrossEntropyOp::buildGradients(OpBuilder &builder,
                                             ArrayRef<Value> resultGrads,
                                             ArrayRef<bool> needGrad,
                                             SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  Value dloss = singleResultGrad(resultGrads, needGrad);
  if (dloss && needGrad[0])
    grads[0] = CrossEntropyGradOp::create(builder, getLoc(), getLogits(),
                                          getLabels(), dloss,
                                          getIgnoreIndex());
  return success();
}

bool RmsNormOp::isDifferentiableOperand(unsigned index) { return index == 0; }

LogicalResult RmsNormOp::buildGradients(OpBuilder &builder,
                                        ArrayRef<Value> resultGrads,
                                        ArrayRef<bool> needGrad,
                                        SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  Value dy = singleResultGrad(resultGrads, needGrad);
  if (dy && needGrad[0])
    grads[0] = RmsNormGradOp::create(builder, getLoc(), getInput(),
                                     getWeight(), dy,
                                     getEps().convertToFloat());
  return success();
}

bool RopeOp::isDifferentiableOperand(unsigned) { return true; }

LogicalResult RopeOp::buildGradients(OpBuilder &builder,
                                     ArrayRef<Value> resultGrads,
                                     ArrayRef<bool> needGrad,
                                     SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  Value dy = singleResultGrad(resultGrads, needGrad);
  if (dy)
    grads[0] = RopeGradOp::create(builder, getLoc(), dy, getHeadDim(),
                                  getTheta().convertToFloat(),
                                  getRopeScalingAttr());
  return success();
}

bool SwigluOp::isDifferentiableOperand(unsigned) { return true; }

LogicalResult SwigluOp::buildGradients(OpBuilder &builder,
                                       ArrayRef<Value> resultGrads,
                                       ArrayRef<bool> needGrad,
                                       SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  Value dout = singleResultGrad(resultGrads, needGrad);
  if (!dout)
    return success();
  auto grad =
      SwigluGradOp::create(builder, getLoc(), getGate(), getUp(), dout);
  if (needGrad[0])
    grads[0] = grad.getDgate();
  if (needGrad[1])
    grads[1] = grad.getDup();
  return success();
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

bool AddOp::isDifferentiableOperand(unsigned) { return true; }

LogicalResult AddOp::buildGradients(OpBuilder &, ArrayRef<Value> resultGrads,
                                    ArrayRef<bool> needGrad,
                                    SmallVectorImpl<Value> &grads) {
  clearGrads(*this, grads);
  Value dy = singleResultGrad(resultGrads, needGrad);
  for (unsigned i = 0; i < 2; ++i)
    if (dy && needGrad[i])
      grads[i] = dy;
  return success();
}
