//===- FuseDequantMatmul.cpp - qlora-fuse-dequant-matmul ------------------===//
//
// The pass driving the dequantize + projection fusion patterns.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "dialects/QLoRAOps.h"
#include "passes/Patterns.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::qlora {
#define GEN_PASS_DEF_FUSEDEQUANTMATMULPASS
#include "passes/Passes.h.inc"

namespace {

struct FuseDequantMatmulPass
    : public impl::FuseDequantMatmulPassBase<FuseDequantMatmulPass> {
  using Base::Base;

  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateFuseDequantMatmulPatterns(patterns, fuseLoraLinear);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns)))) {
      getOperation()->emitError("qlora-fuse-dequant-matmul did not converge");
      signalPassFailure();
    }
  }
};

} // namespace
} // namespace mlir::qlora
