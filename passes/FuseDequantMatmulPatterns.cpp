//===- FuseDequantMatmulPatterns.cpp - dequantize + linear fusion ---------===//
//
// Patterns that fold `qlora.dequantize` into the projection consuming it.
//
//===----------------------------------------------------------------------===//

#include "passes/Patterns.h"

#include "dialects/QLoRAOps.h"

using namespace mlir;
using namespace mlir::qlora;

/// Matches the `qlora.dequantize` producing `weight` when `user` is its only
/// user and its result is exactly the logical [N, K] view of its NF4 input.
static FailureOr<DequantizeOp>
matchFusableDequantize(Value weight, Operation *user,
                       PatternRewriter &rewriter) {
  auto dequant = weight.getDefiningOp<DequantizeOp>();
  if (!dequant)
    return rewriter.notifyMatchFailure(user, "weight is not dequantized");
  if (!dequant->hasOneUse())
    return rewriter.notifyMatchFailure(user,
                                       "dequantized weight has other users");
  NF4Type nf4 = dequant.getInput().getType();
  RankedTensorType dense = dequant.getType();
  if (nf4.getRank() != 2 || dense.getShape() != nf4.getShape() ||
      dense.getElementType() != nf4.getElementType())
    return rewriter.notifyMatchFailure(user, "nf4 and dense shapes differ");
  return dequant;
}

namespace {

/// linear(x, dequantize(w)) -> nf4_matmul(x, w)
struct FuseDequantIntoLinear : public OpRewritePattern<LinearOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(LinearOp op,
                                PatternRewriter &rewriter) const override {
    FailureOr<DequantizeOp> dequant =
        matchFusableDequantize(op.getWeight(), op, rewriter);
    if (failed(dequant))
      return failure();
    rewriter.replaceOpWithNewOp<NF4MatmulOp>(op, op.getType(), op.getInput(),
                                             dequant->getInput());
    rewriter.eraseOp(*dequant);
    return success();
  }
};

/// lora_linear(x, dequantize(w), a, b) -> lora_linear(x, w, a, b)
struct FuseDequantIntoLoraLinear : public OpRewritePattern<LoraLinearOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(LoraLinearOp op,
                                PatternRewriter &rewriter) const override {
    FailureOr<DequantizeOp> dequant =
        matchFusableDequantize(op.getWeight(), op, rewriter);
    if (failed(dequant))
      return failure();
    rewriter.modifyOpInPlace(
        op, [&] { op.getWeightMutable().assign(dequant->getInput()); });
    rewriter.eraseOp(*dequant);
    return success();
  }
};

} // namespace

void mlir::qlora::populateFuseDequantMatmulPatterns(RewritePatternSet &patterns,
                                                    bool fuseLoraLinear) {
  patterns.add<FuseDequantIntoLinear>(patterns.getContext());
  if (fuseLoraLinear)
    patterns.add<FuseDequantIntoLoraLinear>(patterns.getContext());
}
