//===- FuseLmHeadLoss.cpp - qlora-fuse-lm-head-loss -------------------------===//
//
// The lm_head product, its loss and the loss's input gradient as one
// chunked op. See Passes.td.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialects/QLoRAOps.h"
#include "runtime/cuda/Workspaces.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Dominance.h"

namespace mlir::qlora {
#define GEN_PASS_DEF_FUSELMHEADLOSSPASS
#include "passes/Passes.h.inc"

namespace {

/// The four ops of one lm_head and its loss, when they form the pattern.
struct LmHeadLoss {
  LinearOp head;
  CrossEntropyOp loss;
  CrossEntropyGradOp grad;
  LinearGradInputOp gradInput;
};

/// The pattern around `grad`: its logits come from a dense qlora.linear
/// whose only users are one cross_entropy and `grad` (same labels and
/// ignore_index), and `grad`'s only user is that linear's input gradient.
std::optional<LmHeadLoss> match(CrossEntropyGradOp grad) {
  auto head = grad.getLogits().getDefiningOp<LinearOp>();
  if (!head || !isa<RankedTensorType>(head.getWeight().getType()))
    return std::nullopt;
  CrossEntropyOp loss;
  for (Operation *user : head.getResult().getUsers()) {
    if (user == grad.getOperation())
      continue;
    auto ce = dyn_cast<CrossEntropyOp>(user);
    if (!ce || loss)
      return std::nullopt;
    loss = ce;
  }
  if (!loss || loss.getLabels() != grad.getLabels() ||
      loss.getIgnoreIndex() != grad.getIgnoreIndex() ||
      !grad.getResult().hasOneUse())
    return std::nullopt;
  auto gradInput =
      dyn_cast<LinearGradInputOp>(*grad.getResult().getUsers().begin());
  if (!gradInput || gradInput.getDy() != grad.getResult() ||
      gradInput.getWeight() != head.getWeight())
    return std::nullopt;
  return LmHeadLoss{head, loss, grad, gradInput};
}

class FuseLmHeadLossPass
    : public impl::FuseLmHeadLossPassBase<FuseLmHeadLossPass> {
public:
  using Base::Base;

  void runOnOperation() override {
    SmallVector<LmHeadLoss> found;
    getOperation().walk([&](CrossEntropyGradOp grad) {
      if (std::optional<LmHeadLoss> pattern = match(grad))
        found.push_back(*pattern);
    });
    DominanceInfo dominance(getOperation());
    for (LmHeadLoss &p : found) {
      // The fused op sits where the gradient was: every user of the loss
      // must come after it.
      bool usersAfter = llvm::all_of(p.loss->getUsers(), [&](Operation *user) {
        return dominance.properlyDominates(p.grad.getOperation(), user);
      });
      if (!usersAfter)
        continue;
      auto input = cast<RankedTensorType>(p.head.getInput().getType());
      auto weight = cast<RankedTensorType>(p.head.getWeight().getType());
      int64_t rows = input.getNumElements() / input.getShape().back();
      OpBuilder builder(p.grad);
      auto fused = LmHeadLossOp::create(
          builder, p.grad.getLoc(), p.loss.getType(), p.gradInput.getType(),
          p.head.getInput(), p.head.getWeight(), p.grad.getLabels(),
          p.grad.getDloss(), p.grad.getIgnoreIndexAttr(),
          builder.getI64IntegerAttr(
              ::qlora::cuda::lmHeadChunkRows(rows, weight.getDimSize(0))));
      p.loss.getResult().replaceAllUsesWith(fused.getLoss());
      p.gradInput.getResult().replaceAllUsesWith(fused.getDinput());
      p.gradInput.erase();
      p.grad.erase();
      p.loss.erase();
      p.head.erase();
    }
  }
};

} // namespace
} // namespace mlir::qlora
