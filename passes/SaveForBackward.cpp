//===- SaveForBackward.cpp - qlora-save-for-backward ------------------------===//
//
// Gives attention (and, where the target's kernel reads it, RMSNorm) the
// statistic its backward reads, as a result the backward takes. See
// Passes.td.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "codegen/Target.h"
#include "dialects/QLoRAOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

namespace mlir::qlora {
#define GEN_PASS_DEF_SAVEFORBACKWARDPASS
#include "passes/Passes.h.inc"

namespace {

class SaveForBackwardPass
    : public impl::SaveForBackwardPassBase<SaveForBackwardPass> {
public:
  using Base::Base;

  void runOnOperation() override {
    FailureOr<TargetDescription> described = TargetDescription::get(
        target,
        [&] { return getOperation().emitError() << "qlora-save-for-backward: "; });
    if (failed(described))
      return signalPassFailure();
    if (described->savesAttentionLse())
      getOperation().walk([&](AttentionGradOp grad) {
        if (!grad.getLse() && failed(saveLse(grad)))
          signalPassFailure();
      });
    if (described->savesRmsNormRstd())
      getOperation().walk([&](RmsNormGradOp grad) {
        if (!grad.getRstd() && failed(saveRstd(grad)))
          signalPassFailure();
      });
  }

private:
  /// The attention that produced `grad`'s `out`, with an lse result.
  FailureOr<Value> forwardLse(AttentionGradOp grad) {
    auto forward = grad.getOut().getDefiningOp<AttentionOp>();
    if (!forward || forward.getQ() != grad.getQ() ||
        forward.getK() != grad.getK() || forward.getV() != grad.getV())
      return grad.emitError() << "qlora-save-for-backward: expects `out` to "
                                 "be the qlora.attention of the same q, k "
                                 "and v";
    if (Value lse = forward.getLse())
      return lse;
    OpBuilder builder(forward);
    auto saved = AttentionOp::create(
        builder, forward.getLoc(), forward.getQ(), forward.getK(),
        forward.getV(), forward.getNumHeads(), forward.getNumKvHeads(),
        forward.getHeadDim(), forward.getScale().convertToFloat(),
        /*saveLse=*/true);
    saved->setDiscardableAttrs(forward->getDiscardableAttrDictionary());
    forward.getResult().replaceAllUsesWith(saved.getResult());
    forward.erase();
    return saved.getLse();
  }

  LogicalResult saveLse(AttentionGradOp grad) {
    FailureOr<Value> lse = forwardLse(grad);
    if (failed(lse))
      return failure();
    OpBuilder builder(grad);
    auto saved = AttentionGradOp::create(
        builder, grad.getLoc(), grad.getQ(), grad.getK(), grad.getV(),
        grad.getOut(), grad.getDout(), grad.getNumHeads(),
        grad.getNumKvHeads(), grad.getHeadDim(),
        grad.getScale().convertToFloat(), *lse);
    grad.replaceAllUsesWith(saved.getResults());
    grad.erase();
    return success();
  }

  /// The rms_norm of `grad`'s input, weight and eps before it, with an
  /// rstd result.
  FailureOr<Value> forwardRstd(RmsNormGradOp grad) {
    RmsNormOp forward;
    for (Operation *user : grad.getInput().getUsers()) {
      auto norm = dyn_cast<RmsNormOp>(user);
      if (norm && norm.getInput() == grad.getInput() &&
          norm.getWeight() == grad.getWeight() &&
          norm.getEps() == grad.getEps() && norm->getBlock() == grad->getBlock() &&
          norm->isBeforeInBlock(grad)) {
        forward = norm;
        break;
      }
    }
    if (!forward)
      return grad.emitError() << "qlora-save-for-backward: no qlora.rms_norm "
                                 "of the same input, weight and eps precedes "
                                 "this backward";
    if (Value rstd = forward.getRstd())
      return rstd;
    OpBuilder builder(forward);
    auto saved = RmsNormOp::create(builder, forward.getLoc(),
                                   forward.getInput(), forward.getWeight(),
                                   forward.getEps().convertToFloat(),
                                   /*saveRstd=*/true);
    saved->setDiscardableAttrs(forward->getDiscardableAttrDictionary());
    forward.getResult().replaceAllUsesWith(saved.getResult());
    forward.erase();
    return saved.getRstd();
  }

  LogicalResult saveRstd(RmsNormGradOp grad) {
    FailureOr<Value> rstd = forwardRstd(grad);
    if (failed(rstd))
      return failure();
    OpBuilder builder(grad);
    auto saved = RmsNormGradOp::create(
        builder, grad.getLoc(), grad.getInput(), grad.getWeight(),
        grad.getDy(), grad.getEps().convertToFloat(), *rstd);
    grad.replaceAllUsesWith(saved.getResult());
    grad.erase();
    return success();
  }
};

} // namespace
} // namespace mlir::qlora
