//===- CpuKernelLowerings.cpp - qlora ops to the cpu reference's kernels ----===//
//
// The cpu target computes in fp32 (every float buffer is stored as fp32)
// and calls the functions of runtime/step/CpuKernels.def; their scratch
// (x·Aᵀ of a LoRA branch, a dropout mask's output, shifted labels) comes
// from workspaces in the arena.
//
//===----------------------------------------------------------------------===//
#include "codegen/KernelLowering.h"

#include "dialects/QLoRAOps.h"

namespace mlir::qlora {
namespace {

constexpr int64_t kF32 = 4;

using Call = KernelCallBuilder;

/// y = x Wᵀ, dense or NF4.
LogicalResult lowerProjection(Operation *op, Value input, Value weight,
                              Value result, LoweringContext &context) {
  ArrayRef<int64_t> w = shapeOf(weight);
  int64_t N = w[0], K = w[1], M = numElements(input) / K;
  if (isa<NF4Type>(weight.getType()))
    return Call(context, op, "nf4Linear")
        .buffer(input)
        .nf4(weight)
        .i64(M)
        .buffer(result)
        .emit();
  auto param = weight.getDefiningOp<ParamOp>();
  if (param && param.getTrainable())
    return op->emitError() << "a trainable weight in a projection has no "
                              "cpu kernel; adapters go through qlora.lora";
  return Call(context, op, "linear")
      .buffer(input)
      .buffer(weight)
      .i64(M)
      .i64(N)
      .i64(K)
      .buffer(result)
      .emit();
}

/// A LoRA branch into `result`: alone, or added onto the base projection
/// already there (`accumulate`, lora_linear). Workspaces: x·Aᵀ, then the
/// dropped input.
LogicalResult lowerBranch(Operation *op, Value input, Value a, Value b,
                          float scale, float dropout,
                          std::optional<uint64_t> stream, bool accumulate,
                          LoweringContext &context) {
  ArrayRef<int64_t> aShape = shapeOf(a), bShape = shapeOf(b);
  int64_t K = aShape[1], r = aShape[0], N = bShape[0];
  int64_t M = numElements(input) / K;
  Value result = op->getResult(0);
  if (dropout == 0.0f)
    return Call(context, op, "lora")
        .buffer(input)
        .buffer(a)
        .buffer(b)
        .i64(M)
        .i64(N)
        .i64(K)
        .i64(r)
        .f32(scale)
        .i64(accumulate)
        .workspace(0)
        .buffer(result)
        .emit();
  FailureOr<int64_t> planned = dropoutStream(op, stream);
  if (failed(planned))
    return failure();
  return Call(context, op, "loraDropout")
      .buffer(input)
      .buffer(a)
      .buffer(b)
      .i64(M)
      .i64(N)
      .i64(K)
      .i64(r)
      .f32(scale)
      .f32(dropout)
      .i64(*planned)
      .slot(::qlora::slot::kDropoutSeed)
      .i64(accumulate)
      .workspace(1)
      .workspace(0)
      .buffer(result)
      .emit();
}

/// Workspaces of a branch: x·Aᵀ (M * r floats), and with dropout the
/// dropped input (M * K floats).
SmallVector<int64_t> branchWorkspaces(Value input, Value a, float dropout) {
  int64_t K = shapeOf(a)[1], r = shapeOf(a)[0];
  int64_t M = numElements(input) / K;
  SmallVector<int64_t> bytes = {kF32 * M * r};
  if (dropout != 0.0f)
    bytes.push_back(kF32 * M * K);
  return bytes;
}

/// The loss or its gradient (with `dloss`); workspace 0 holds the shifted
/// labels.
LogicalResult lowerLoss(Operation *op, StringRef kernel, Value logits,
                        Value labels, Value dloss, int64_t ignoreIndex,
                        LoweringContext &context) {
  FailureOr<std::pair<int64_t, int64_t>> rows = lossRows(op, logits);
  if (failed(rows))
    return failure();
  Call call(context, op, kernel);
  call.buffer(logits).buffer(labels);
  if (dloss)
    call.buffer(dloss);
  return call.i64(rows->first)
      .i64(rows->second)
      .i64(shapeOf(logits).back())
      .i64(ignoreIndex)
      .workspace(0)
      .buffer(op->getResult(0))
      .emit();
}

} // namespace

void populateCpuKernelLowerings(KernelLoweringSet &set) {
  set.add<FillOp>([](FillOp fill, LoweringContext &context) {
    return Call(context, fill, "fill")
        .buffer(fill)
        .i64(numElements(fill))
        .f32(fill.getValue().convertToFloat())
        .emit();
  });
  set.add<AddOp>([](AddOp add, LoweringContext &context) {
    return Call(context, add, "add")
        .buffer(add.getLhs())
        .buffer(add.getRhs())
        .i64(numElements(add))
        .buffer(add)
        .emit();
  });
  set.add<MulOp>([](MulOp mul, LoweringContext &context) {
    bool scalar = shapeOf(mul.getRhs()).empty() && !shapeOf(mul.getLhs()).empty();
    return Call(context, mul, scalar ? "mulScalar" : "mul")
        .buffer(mul.getLhs())
        .buffer(mul.getRhs())
        .i64(numElements(mul))
        .buffer(mul)
        .emit();
  });
  set.add<EmbeddingOp>([](EmbeddingOp embedding, LoweringContext &context) {
    ArrayRef<int64_t> table = shapeOf(embedding.getTable());
    return Call(context, embedding, "embedding")
        .buffer(embedding.getTable())
        .buffer(embedding.getIds())
        .i64(numElements(embedding.getIds()))
        .i64(table[1])
        .i64(table[0])
        .buffer(embedding)
        .emit();
  });
  set.add<RmsNormOp>([](RmsNormOp norm, LoweringContext &context) {
    int64_t hidden = shapeOf(norm.getResult()).back();
    return Call(context, norm, "rmsNorm")
        .buffer(norm.getInput())
        .buffer(norm.getWeight())
        .i64(numElements(norm.getResult()) / hidden)
        .i64(hidden)
        .f32(norm.getEps().convertToFloat())
        .buffer(norm.getResult())
        .emit();
  });
  set.add<RmsNormGradOp>([](RmsNormGradOp grad, LoweringContext &context) {
    int64_t hidden = shapeOf(grad).back();
    return Call(context, grad, "rmsNormGrad")
        .buffer(grad.getInput())
        .buffer(grad.getWeight())
        .buffer(grad.getDy())
        .i64(numElements(grad) / hidden)
        .i64(hidden)
        .f32(grad.getEps().convertToFloat())
        .buffer(grad)
        .emit();
  });
  set.add<AttentionGradOp>(
      [](AttentionGradOp grad, LoweringContext &context) -> LogicalResult {
        ArrayRef<int64_t> q = shapeOf(grad.getQ());
        if (q.size() != 3)
          return grad.emitError() << "expects [batch, seq, heads * "
                                     "head_dim] operands";
        if (!grad.getLse())
          return grad.emitError() << "the attention backward reads the "
                                     "forward's lse; run "
                                     "qlora-save-for-backward";
        return Call(context, grad, "attentionGrad")
            .buffer(grad.getQ())
            .buffer(grad.getK())
            .buffer(grad.getV())
            .buffer(grad.getOut())
            .buffer(grad.getLse())
            .buffer(grad.getDout())
            .i64(q[0])
            .i64(q[1])
            .i64(grad.getNumHeads())
            .i64(grad.getNumKvHeads())
            .i64(grad.getHeadDim())
            .f32(grad.getScale().convertToFloat())
            .buffer(grad.getDq())
            .buffer(grad.getDk())
            .buffer(grad.getDv())
            .emit();
      });
  set.add<LinearOp>([](LinearOp linear, LoweringContext &context) {
    return lowerProjection(linear, linear.getInput(), linear.getWeight(),
                           linear.getResult(), context);
  });
  set.add<NF4MatmulOp>([](NF4MatmulOp matmul, LoweringContext &context) {
    return lowerProjection(matmul, matmul.getInput(), matmul.getWeight(),
                           matmul.getResult(), context);
  });
  set.add<LinearGradInputOp>(
      [](LinearGradInputOp grad, LoweringContext &context) {
        Value weight = grad.getWeight();
        ArrayRef<int64_t> w = shapeOf(weight);
        int64_t M = numElements(grad.getDy()) / w[0];
        if (isa<NF4Type>(weight.getType()))
          return Call(context, grad, "nf4LinearGradInput")
              .buffer(grad.getDy())
              .nf4(weight)
              .i64(M)
              .buffer(grad)
              .emit();
        return Call(context, grad, "linearGradInput")
            .buffer(grad.getDy())
            .buffer(weight)
            .i64(M)
            .i64(w[0])
            .i64(w[1])
            .buffer(grad)
            .emit();
      });
  set.add<LoraOp>(
      [](LoraOp lora, LoweringContext &context) {
        return lowerBranch(lora, lora.getInput(), lora.getLoraA(),
                           lora.getLoraB(), lora.getScale().convertToFloat(),
                           lora.getDropout().convertToFloat(),
                           lora.getDropoutStream(), /*accumulate=*/false,
                           context);
      },
      [](LoraOp lora, const TargetDescription &) {
        return branchWorkspaces(lora.getInput(), lora.getLoraA(),
                                lora.getDropout().convertToFloat());
      });
  set.add<LoraLinearOp>(
      [](LoraLinearOp lora, LoweringContext &context) -> LogicalResult {
        if (failed(lowerProjection(lora, lora.getInput(), lora.getWeight(),
                                   lora.getResult(), context)))
          return failure();
        return lowerBranch(lora, lora.getInput(), lora.getLoraA(),
                           lora.getLoraB(), lora.getScale().convertToFloat(),
                           lora.getDropout().convertToFloat(),
                           lora.getDropoutStream(), /*accumulate=*/true,
                           context);
      },
      [](LoraLinearOp lora, const TargetDescription &) {
        return branchWorkspaces(lora.getInput(), lora.getLoraA(),
                                lora.getDropout().convertToFloat());
      });
  set.add<LoraGradOp>(
      [](LoraGradOp grad, LoweringContext &context) -> LogicalResult {
        ArrayRef<int64_t> a = shapeOf(grad.getLoraA());
        ArrayRef<int64_t> b = shapeOf(grad.getLoraB());
        int64_t K = a[1], r = a[0], N = b[0];
        int64_t M = numElements(grad.getInput()) / K;
        float p = grad.getDropout().convertToFloat();
        Call call(context, grad, p == 0.0f ? "loraGrad" : "loraGradDropout");
        call.buffer(grad.getInput())
            .buffer(grad.getLoraA())
            .buffer(grad.getLoraB())
            .buffer(grad.getDy())
            .i64(M)
            .i64(N)
            .i64(K)
            .i64(r)
            .f32(grad.getScale().convertToFloat());
        if (p != 0.0f) {
          FailureOr<int64_t> stream =
              dropoutStream(grad, grad.getDropoutStream());
          if (failed(stream))
            return failure();
          call.f32(p)
              .i64(*stream)
              .slot(::qlora::slot::kDropoutSeed)
              .workspace(1);
        }
        return call.workspace(0)
            .buffer(grad.getDx())
            .buffer(grad.getDa())
            .buffer(grad.getDb())
            .emit();
      },
      [](LoraGradOp grad, const TargetDescription &) {
        return branchWorkspaces(grad.getInput(), grad.getLoraA(),
                                grad.getDropout().convertToFloat());
      });
  set.add<CrossEntropyOp>(
      [](CrossEntropyOp loss, LoweringContext &context) {
        return lowerLoss(loss, "crossEntropy", loss.getLogits(),
                         loss.getLabels(), Value(), loss.getIgnoreIndex(),
                         context);
      },
      [](CrossEntropyOp loss, const TargetDescription &) {
        return SmallVector<int64_t>{4 * numElements(loss.getLabels())};
      });
  set.add<CrossEntropyGradOp>(
      [](CrossEntropyGradOp grad, LoweringContext &context) {
        return lowerLoss(grad, "crossEntropyGrad", grad.getLogits(),
                         grad.getLabels(), grad.getDloss(),
                         grad.getIgnoreIndex(), context);
      },
      [](CrossEntropyGradOp grad, const TargetDescription &) {
        return SmallVector<int64_t>{4 * numElements(grad.getLabels())};
      });
  set.add<AdamWOp>([](AdamWOp adam, LoweringContext &context) {
    return Call(context, adam, "adamw")
        .buffer(adam.getParam())
        .buffer(adam.getGrad())
        .buffer(adam.getM())
        .buffer(adam.getV())
        .buffer(adam.getLr())
        .buffer(adam.getStep())
        .i64(numElements(adam.getParam()))
        .f32(adam.getBeta1().convertToFloat())
        .f32(adam.getBeta2().convertToFloat())
        .f32(adam.getEps().convertToFloat())
        .f32(adam.getWeightDecay().convertToFloat())
        .buffer(adam.getNewParam())
        .buffer(adam.getNewM())
        .buffer(adam.getNewV())
        .emit();
  });
  set.add<SumSquaresOp>([](SumSquaresOp sum, LoweringContext &context) {
    return Call(context, sum, "sumSquares")
        .buffer(sum.getInput())
        .i64(numElements(sum.getInput()))
        .buffer(sum)
        .emit();
  });
  set.add<ClipCoefficientOp>(
      [](ClipCoefficientOp clip, LoweringContext &context) {
        return Call(context, clip, "clipCoefficient")
            .buffer(clip.getTotal())
            .f32(clip.getMaxNorm().convertToFloat())
            .buffer(clip)
            .emit();
      });
  set.add<DequantizeOp>([](DequantizeOp op, LoweringContext &) {
    return op.emitError()
           << "a standalone qlora.dequantize has no cpu kernel; run "
              "qlora-fuse-dequant-matmul so that it feeds a projection";
  });
}

} // namespace mlir::qlora
