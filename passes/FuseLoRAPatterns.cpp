//===- FuseLoRAPatterns.cpp - base projection + LoRA branch fusion --------===//
//
// Patterns that fold `qlora.add(base, lora)` into `qlora.lora_linear`.
//
//===----------------------------------------------------------------------===//

#include "passes/Patterns.h"

#include "dialects/QLoRAOps.h"

using namespace mlir;
using namespace mlir::qlora;

namespace {

/// add(linear|nf4_matmul(x, w), lora(x, a, b)) -> lora_linear(x, w, a, b),
/// in either operand order.
struct FuseLoraBranchIntoProjection : public OpRewritePattern<AddOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(AddOp op,
                                PatternRewriter &rewriter) const override {
    for (auto [baseValue, branchValue] :
         {std::pair(op.getLhs(), op.getRhs()),
          std::pair(op.getRhs(), op.getLhs())}) {
      auto branch = branchValue.getDefiningOp<LoraOp>();
      Operation *base = baseValue.getDefiningOp();
      if (!branch || !base || !isa<LinearOp, NF4MatmulOp>(base))
        continue;
      // The base projection's input and weight, whichever op it is.
      Value x = base->getOperand(0), w = base->getOperand(1);
      if (x != branch.getInput())
        return rewriter.notifyMatchFailure(op, "inputs differ");
      if (!base->hasOneUse() || !branch->hasOneUse())
        return rewriter.notifyMatchFailure(op,
                                           "intermediates have other users");
      if (baseValue.getType() != op.getType() ||
          branchValue.getType() != op.getType())
        return rewriter.notifyMatchFailure(op, "types differ");
      rewriter.replaceOpWithNewOp<LoraLinearOp>(
          op, op.getType(), x, w, branch.getLoraA(), branch.getLoraB(),
          branch.getScaleAttr(), branch.getDropoutAttr(),
          branch.getDropoutStreamAttr());
      rewriter.eraseOp(branch);
      rewriter.eraseOp(base);
      return success();
    }
    return rewriter.notifyMatchFailure(op, "not a projection plus its branch");
  }
};

} // namespace

void mlir::qlora::populateFuseLoRAPatterns(RewritePatternSet &patterns) {
  patterns.add<FuseLoraBranchIntoProjection>(patterns.getContext());
}
