//===- BuildTrainStep.cpp - qlora-build-train-step ------------------------===//
//
// Turns `@forward` (the loss of one micro-batch) into `@train_step`
// (forward, backward, gradient accumulation) and `@apply_gradients`
// (clipping and AdamW), both over the persistent state arena.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"
#include "runtime/train/Manifest.h"

#include "dialects/QLoRAOps.h"
#include "passes/Autodiff.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/MapVector.h"

#include <cmath>
#include <cstdio>

namespace mlir::qlora {
#define GEN_PASS_DEF_BUILDTRAINSTEPPASS
#include "passes/Passes.h.inc"

namespace {

/// Formats an option value for a diagnostic: 1e-08, 0.9, -1.
std::string formatDouble(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", value);
  return buffer;
}

/// One trainable parameter: its name, type and every reference to it in
/// @train_step.
struct Trainable {
  RankedTensorType type;
  SmallVector<ParamOp> refs;
  Value grad; ///< summed over the references; null if none reaches the loss
};

struct BuildTrainStepPass
    : public impl::BuildTrainStepPassBase<BuildTrainStepPass> {
  using Base::Base;

  void runOnOperation() override;

private:
  LogicalResult verifyOptions(ModuleOp module);
  /// Checks the signature and shape of @forward.
  LogicalResult verifyForward(ModuleOp module, func::FuncOp forward);
  /// Builds @train_step from a clone of @forward; fills `params`.
  LogicalResult buildTrainStep(func::FuncOp trainStep,
                               llvm::MapVector<StringRef, Trainable> &params);
  /// Builds @apply_gradients for the parameters that got a gradient.
  void buildApplyGradients(func::FuncOp apply,
                           const llvm::MapVector<StringRef, Trainable> &params);
};

LogicalResult BuildTrainStepPass::verifyOptions(ModuleOp module) {
  auto bad = [&](StringRef option, StringRef range, double value) {
    return module.emitError("qlora-build-train-step: expects ")
           << option << " " << range << ", got " << formatDouble(value);
  };
  if (!(maxGradNorm >= 0.0) || !std::isfinite(maxGradNorm))
    return bad("max-grad-norm", ">= 0", maxGradNorm);
  if (!(adamBeta1 >= 0.0 && adamBeta1 < 1.0))
    return bad("adam-beta1", "in [0, 1)", adamBeta1);
  if (!(adamBeta2 >= 0.0 && adamBeta2 < 1.0))
    return bad("adam-beta2", "in [0, 1)", adamBeta2);
  if (!(adamEpsilon >= 0.0) || !std::isfinite(adamEpsilon))
    return bad("adam-epsilon", ">= 0", adamEpsilon);
  if (!(weightDecay >= 0.0) || !std::isfinite(weightDecay))
    return bad("weight-decay", ">= 0", weightDecay);
  return success();
}

LogicalResult BuildTrainStepPass::verifyForward(ModuleOp module,
                                                func::FuncOp forward) {
  for (StringRef name : {"train_step", "apply_gradients"})
    if (Operation *existing = module.lookupSymbol(name))
      return existing->emitError("qlora-build-train-step: expects no @")
             << name << " in the input (the pass generates it), got one";
  if (forward.isExternal())
    return forward.emitError(
        "qlora-build-train-step: expects @forward to have a body, got a "
        "declaration");
  FunctionType type = forward.getFunctionType();
  if (type.getNumInputs() != 0)
    return forward.emitError("qlora-build-train-step: expects @forward to "
                             "take no arguments (per-step inputs are "
                             "qlora.input ops), got ")
           << type.getNumInputs();
  auto scalar = RankedTensorType::get({}, Float32Type::get(&getContext()));
  if (type.getNumResults() != 1 || type.getResult(0) != scalar) {
    InFlightDiagnostic diag = forward.emitError(
        "qlora-build-train-step: expects @forward to return one "
        "tensor<f32> (the loss), got (");
    llvm::interleaveComma(type.getResults(), diag);
    return diag << ")";
  }
  if (!forward.getBody().hasOneBlock())
    return forward.emitError("qlora-build-train-step: expects @forward to "
                             "have one block, got ")
           << forward.getBody().getBlocks().size();
  return success();
}

LogicalResult BuildTrainStepPass::buildTrainStep(
    func::FuncOp trainStep, llvm::MapVector<StringRef, Trainable> &params) {
  Block &body = trainStep.getBody().front();
  trainStep.walk([&](ParamOp param) {
    if (param.getTrainable())
      params[param.getName()].refs.push_back(param);
  });
  if (params.empty())
    return trainStep.emitError(
        "qlora-build-train-step: expects at least one trainable qlora.param "
        "in @forward (run qlora-inject-lora first), got none");
  for (auto &[name, trainable] : params) {
    trainable.type = cast<RankedTensorType>(trainable.refs.front().getType());
    for (ParamOp ref : trainable.refs)
      if (ref.getType() != trainable.type)
        return ref.emitError("qlora-build-train-step: expects every "
                             "reference to '")
               << name << "' to have type " << trainable.type << ", got "
               << ref.getType();
  }

  // Number the dropout masks, so each lora_grad redraws its forward mask.
  int64_t nextStream = 0;
  SmallVector<Operation *> unnumbered;
  trainStep.walk([&](Operation *op) {
    if (!isa<LoraOp, LoraLinearOp>(op))
      return;
    auto dropout = op->getAttrOfType<FloatAttr>("dropout");
    if (!dropout || dropout.getValue().isZero())
      return;
    if (auto stream = op->getAttrOfType<IntegerAttr>("dropout_stream"))
      nextStream = std::max(nextStream, stream.getInt() + 1);
    else
      unnumbered.push_back(op);
  });
  OpBuilder builder(&getContext());
  for (Operation *op : unnumbered)
    op->setAttr("dropout_stream", builder.getI64IntegerAttr(nextStream++));

  // Backward, seeded with the host's gradient scale.
  Operation *terminator = body.getTerminator();
  Value loss = terminator->getOperand(0);
  builder.setInsertionPoint(terminator);
  Location loc = trainStep.getLoc();
  Value seed =
      InputOp::create(builder, loc, loss.getType(), ::qlora::slot::kGradScale);
  SmallVector<Value> wrt;
  for (auto &[name, trainable] : params)
    for (ParamOp ref : trainable.refs)
      wrt.push_back(ref);
  FailureOr<SmallVector<Value>> grads =
      buildReverseMode(builder, body, loss, seed, wrt);
  if (failed(grads))
    return failure();

  // Gradients per name, then accumulation into grad:<name>.
  llvm::DenseMap<Operation *, Operation *> accumulatedAfter;
  unsigned index = 0;
  bool anyGrad = false;
  for (auto &[name, trainable] : params) {
    for (ParamOp ref : trainable.refs) {
      Value grad = (*grads)[index++];
      if (!grad)
        continue;
      trainable.grad = trainable.grad ? Value(AddOp::create(builder, ref.getLoc(),
                                                            trainable.grad, grad))
                                      : grad;
    }
    if (!trainable.grad) {
      trainable.refs.front().emitWarning("trainable parameter '")
          << name << "' does not reach the loss: it gets no gradient and no "
          << "update";
      continue;
    }
    anyGrad = true;
    Location paramLoc = trainable.refs.front().getLoc();
    std::string slot = ("grad:" + name).str();
    // Accumulate as soon as the gradient exists, so that it is not held to
    // the end of the backward (hundreds of MB for a 7B model's adapters).
    // Several gradients of one op (dA, dB) accumulate in their order.
    OpBuilder::InsertionGuard guard(builder);
    if (Operation *def = trainable.grad.getDefiningOp())
      builder.setInsertionPointAfter(accumulatedAfter.lookup(def)
                                         ? accumulatedAfter.lookup(def)
                                         : def);
    Value acc = StateOp::create(builder, paramLoc, trainable.type, slot);
    Value sum = AddOp::create(builder, paramLoc, acc, trainable.grad);
    Operation *assign = AssignOp::create(builder, paramLoc, slot, sum);
    if (Operation *def = trainable.grad.getDefiningOp())
      accumulatedAfter[def] = assign;
  }
  if (!anyGrad)
    return trainStep.emitError("qlora-build-train-step: expects the loss to "
                               "depend on a trainable parameter, got none "
                               "that reaches it");
  return success();
}

void BuildTrainStepPass::buildApplyGradients(
    func::FuncOp apply, const llvm::MapVector<StringRef, Trainable> &params) {
  OpBuilder builder = OpBuilder::atBlockBegin(apply.addEntryBlock());
  Location loc = apply.getLoc();
  auto scalar = RankedTensorType::get({}, builder.getF32Type());
  Value lr = InputOp::create(builder, loc, scalar, ::qlora::slot::kLearningRate);
  Value step = InputOp::create(builder, loc, scalar, ::qlora::slot::kStep);

  SmallVector<std::pair<StringRef, const Trainable *>> updated;
  SmallVector<Value> grads;
  for (const auto &[name, trainable] : params) {
    if (!trainable.grad)
      continue;
    updated.emplace_back(name, &trainable);
    grads.push_back(StateOp::create(builder, loc, trainable.type,
                                    ("grad:" + name).str()));
  }

  // The global norm of the accumulated gradients (before clipping, as the
  // Trainer logs it), for the host to report and check; and global-norm
  // clipping over every gradient, as clip_grad_norm_.
  Value total;
  for (Value grad : grads) {
    Value squares = SumSquaresOp::create(builder, loc, grad);
    total = total ? Value(AddOp::create(builder, loc, total, squares))
                  : squares;
  }
  if (total)
    AssignOp::create(builder, loc, ::qlora::slot::kGradNormSquares, total);
  if (maxGradNorm > 0.0 && total) {
    Value coefficient = ClipCoefficientOp::create(
        builder, loc, total, static_cast<float>(maxGradNorm));
    for (Value &grad : grads)
      grad = MulOp::create(builder, loc, grad, coefficient);
  }

  for (auto [entry, grad] : llvm::zip(updated, grads)) {
    auto [name, trainable] = entry;
    RankedTensorType type = trainable->type;
    std::string momentM = ("adam_m:" + name).str();
    std::string momentV = ("adam_v:" + name).str();
    Value param = ParamOp::create(builder, loc, type, name, /*trainable=*/true);
    Value m = StateOp::create(builder, loc, type, momentM);
    Value v = StateOp::create(builder, loc, type, momentV);
    auto adamw = AdamWOp::create(
        builder, loc, param, grad, m, v, lr, step,
        static_cast<float>(adamBeta1), static_cast<float>(adamBeta2),
        static_cast<float>(adamEpsilon), static_cast<float>(weightDecay));
    AssignOp::create(builder, loc, name, adamw.getNewParam());
    AssignOp::create(builder, loc, momentM, adamw.getNewM());
    AssignOp::create(builder, loc, momentV, adamw.getNewV());
    Value zeros = FillOp::create(builder, loc, type, 0.0f);
    AssignOp::create(builder, loc, ("grad:" + name).str(), zeros);
  }
  func::ReturnOp::create(builder, loc);
}

void BuildTrainStepPass::runOnOperation() {
  ModuleOp module = getOperation();
  if (failed(verifyOptions(module)))
    return signalPassFailure();
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  if (!forward) {
    module.emitError("qlora-build-train-step: expects a func.func @forward "
                     "returning the loss, got none");
    return signalPassFailure();
  }
  if (failed(verifyForward(module, forward)))
    return signalPassFailure();

  OpBuilder builder(&getContext());
  builder.setInsertionPointAfter(forward);
  auto trainStep = cast<func::FuncOp>(builder.clone(*forward));
  trainStep.setSymName("train_step");
  llvm::MapVector<StringRef, Trainable> params;
  if (failed(buildTrainStep(trainStep, params)))
    return signalPassFailure();

  builder.setInsertionPointAfter(trainStep);
  auto apply = func::FuncOp::create(builder, forward.getLoc(),
                                    "apply_gradients",
                                    builder.getFunctionType({}, {}));
  buildApplyGradients(apply, params);
}

} // namespace
} // namespace mlir::qlora
