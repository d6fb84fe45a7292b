//===- QuantizeWeights.cpp - qlora-quantize-weights -----------------------===//
//
// Retypes the frozen projection weights of the decoder layers as NF4 and
// dequantizes them at each use, following transformers' bitsandbytes 4-bit
// loading rule (runtime/BnbFormat.cpp's shouldQuantize is the same rule on
// the checkpoint side).
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "dialects/QLoRAOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

namespace mlir::qlora {
#define GEN_PASS_DEF_QUANTIZEWEIGHTSPASS
#include "passes/Passes.h.inc"

namespace {

/// Whether transformers would load the tensor `name` into a 4-bit Linear: a
/// ".weight" under ".layers.", not an embedding or norm, not under a skipped
/// module (matched by whole dotted components).
bool isQuantizedByBnb(StringRef name, ArrayRef<std::string> skipModules) {
  if (!name.ends_with(".weight") || !name.contains(".layers.") ||
      name.contains("embed") || name.contains("norm"))
    return false;
  std::string dotted = ("." + name.drop_back(strlen(".weight")) + ".").str();
  return llvm::none_of(skipModules, [&](const std::string &skip) {
    return StringRef(dotted).contains("." + skip + ".");
  });
}

struct QuantizeWeightsPass
    : public impl::QuantizeWeightsPassBase<QuantizeWeightsPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *context = &getContext();
    auto emitOptionError = [&] {
      return module.emitError("qlora-quantize-weights: ");
    };
    if (failed(detail::verifyBnbBlockSize(emitOptionError, "block size",
                                          blockSize)))
      return signalPassFailure();
    DoubleQuantAttr doubleQuantAttr;
    if (doubleQuant) {
      if (failed(detail::verifyBnbBlockSize(
              emitOptionError, "double-quant block size",
              doubleQuantBlockSize)))
        return signalPassFailure();
      doubleQuantAttr = DoubleQuantAttr::get(context, /*bits=*/8,
                                             doubleQuantBlockSize);
    }

    SmallVector<ParamOp> weights;
    module.walk([&](ParamOp param) {
      auto type = dyn_cast<RankedTensorType>(param.getType());
      if (!type || type.getRank() != 2 || param.getTrainable() ||
          !isQuantizedByBnb(param.getName(),
                            ArrayRef<std::string>(skipModules)))
        return;
      bool isLinearWeight = llvm::any_of(param->getUses(), [](OpOperand &use) {
        return isa<LinearOp>(use.getOwner()) && use.getOperandNumber() == 1;
      });
      if (isLinearWeight)
        weights.push_back(param);
    });

    OpBuilder builder(context);
    for (ParamOp param : weights) {
      auto type = cast<RankedTensorType>(param.getType());
      Type elementType = type.getElementType();
      if (!elementType.isBF16() && !elementType.isF16() &&
          !elementType.isF32()) {
        param.emitError("qlora-quantize-weights: cannot quantize '")
            << param.getName() << "': expects element type bf16, f16 or f32, "
            << "got " << elementType;
        return signalPassFailure();
      }
      if (!type.hasStaticShape()) {
        param.emitError("qlora-quantize-weights: cannot quantize '")
            << param.getName() << "': expects a static shape, got " << type;
        return signalPassFailure();
      }
      auto nf4 = NF4Type::get(context, type.getShape(), elementType, blockSize,
                              doubleQuantAttr);
      param.getResult().setType(nf4);
      // One dequantize per use, so that each projection can fuse its own.
      SmallVector<OpOperand *> uses;
      for (OpOperand &use : param->getUses())
        uses.push_back(&use);
      for (OpOperand *use : uses) {
        builder.setInsertionPoint(use->getOwner());
        use->set(DequantizeOp::create(builder, param.getLoc(), type, param));
      }
    }
  }
};

} // namespace
} // namespace mlir::qlora
