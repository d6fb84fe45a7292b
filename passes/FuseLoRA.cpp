//===- FuseLoRA.cpp - qlora-fuse-lora -------------------------------------===//
//
// The pass driving the base projection + LoRA branch fusion patterns.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "dialects/QLoRAOps.h"
#include "passes/Patterns.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::qlora {
#define GEN_PASS_DEF_FUSELORAPASS
#include "passes/Passes.h.inc"

namespace {

struct FuseLoRAPass : public impl::FuseLoRAPassBase<FuseLoRAPass> {
  using Base::Base;

  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateFuseLoRAPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns)))) {
      getOperation()->emitError("qlora-fuse-lora did not converge");
      signalPassFailure();
    }
  }
};

} // namespace
} // namespace mlir::qlora
