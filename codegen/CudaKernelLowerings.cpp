//===- CudaKernelLowerings.cpp - qlora ops to the cuda step's kernels -------===//
//
// The cuda target stores activations in bf16 (qlora-assign-compute-type
// retyped them) and the optimizer's tensors in fp32, and calls the
// functions of runtime/step/CudaKernels.def. Strategies are chosen here,
// ahead of time and by shape: the NF4 product's path comes from
// runtime/cuda/NF4MatmulPath.h (the library's measured crossovers) and is
// recorded per op in the manifest. Workspaces are sized by the runtime's own
// formulas (runtime/cuda/Workspaces.h).
//
//===----------------------------------------------------------------------===//
#include "codegen/ElementwiseKernels.h"
#include "codegen/KernelLowering.h"

#include "dialects/QLoRAOps.h"
#include "runtime/cuda/NF4MatmulPath.h"
#include "runtime/cuda/Workspaces.h"

#include "mlir/Dialect/EmitC/IR/EmitC.h"

namespace mlir::qlora {
namespace {

constexpr int64_t kBf16 = 2;

using Call = KernelCallBuilder;
using ::qlora::cuda::NF4MatmulPath;

Type elementTypeOf(Value value) {
  return cast<RankedTensorType>(value.getType()).getElementType();
}

/// Diagnoses a value whose element type is not the one a kernel reads.
LogicalResult expectElement(Operation *op, Value value, StringRef what,
                            bool bf16) {
  Type element = elementTypeOf(value);
  if (bf16 ? element.isBF16() : element.isF32())
    return success();
  return op->emitError() << "the cuda kernels read " << what << " as "
                         << (bf16 ? "bf16" : "f32") << ", got " << element
                         << "; run qlora-assign-compute-type";
}

/// The strategy for an NF4 product of M rows, without or with an epilogue.
NF4MatmulPath productPath(Value input, Value weight, bool hasEpilogue) {
  auto nf4 = cast<NF4Type>(weight.getType());
  ArrayRef<int64_t> w = nf4.getShape();
  int64_t K = w.back(), M = numElements(input) / K;
  return ::qlora::cuda::chooseNF4MatmulPath(M, w.size() == 2 ? w[0] : 1, K,
                                            nf4.getBlockSize(), hasEpilogue);
}

int64_t dequantBytes(Value weight) {
  ArrayRef<int64_t> w = shapeOf(weight);
  return ::qlora::cuda::dequantScratchBytes(w.size() == 2 ? w[0] : 1,
                                            w.back());
}

/// y = x Wᵀ without an epilogue: NF4 by the chosen path (its dequantize
/// scratch is workspace 0), dense bf16 through cuBLAS.
LogicalResult lowerProjection(Operation *op, Value input, Value weight,
                              Value result, LoweringContext &context) {
  if (failed(expectElement(op, input, "activations", true)))
    return failure();
  ArrayRef<int64_t> w = shapeOf(weight);
  int64_t N = w[0], K = w[1], M = numElements(input) / K;
  if (isa<NF4Type>(weight.getType())) {
    NF4MatmulPath path = productPath(input, weight, /*hasEpilogue=*/false);
    StringRef variant = ::qlora::cuda::nf4MatmulPathName(path);
    switch (path) {
    case NF4MatmulPath::SmallM:
      return Call(context, op, "nf4LinearSmallM")
          .buffer(input).nf4(weight).i64(M).buffer(result).emit(variant);
    case NF4MatmulPath::Gemv:
      return Call(context, op, "nf4LinearGemv")
          .buffer(input).nf4(weight).i64(M).buffer(result).emit(variant);
    case NF4MatmulPath::DequantGemm:
      return Call(context, op, "nf4LinearDequantGemm")
          .buffer(input).nf4(weight).i64(M).workspace(0).buffer(result)
          .emit(variant);
    }
  }
  auto param = weight.getDefiningOp<ParamOp>();
  if (param && param.getTrainable())
    return op->emitError() << "a trainable weight in a projection has no "
                              "cuda kernel; adapters go through qlora.lora";
  if (failed(expectElement(op, weight, "dense weights", true)))
    return failure();
  return Call(context, op, "linear")
      .buffer(input).buffer(weight).i64(M).i64(N).i64(K).buffer(result)
      .emit("cublas");
}

SmallVector<int64_t> projectionWorkspaces(Value input, Value weight,
                                          bool hasEpilogue) {
  if (isa<NF4Type>(weight.getType()) &&
      productPath(input, weight, hasEpilogue) == NF4MatmulPath::DequantGemm)
    return {dequantBytes(weight)};
  return {};
}

struct BranchShape {
  int64_t M, N, K, r;
};
BranchShape branchShape(Value input, Value a, Value b) {
  int64_t K = shapeOf(a)[1];
  return {numElements(input) / K, shapeOf(b)[0], K, shapeOf(a)[0]};
}

/// Workspaces of a LoRA branch: x·Aᵀ (M * r bf16), then dy·B in the
/// backward, then the dropped input (M * K bf16) with dropout.
SmallVector<int64_t> branchWorkspaces(Value input, Value a, Value b,
                                      float dropout, bool backward) {
  BranchShape s = branchShape(input, a, b);
  SmallVector<int64_t> bytes = {kBf16 * s.M * s.r};
  if (backward)
    bytes.push_back(kBf16 * s.M * s.r);
  if (dropout != 0.0f)
    bytes.push_back(kBf16 * s.M * s.K);
  return bytes;
}

/// The adapters' bf16 copies, which the products read.
Call &adapters(Call &call, Value a, Value b) {
  return call.buffer(a, ::qlora::part::kCompute)
      .buffer(b, ::qlora::part::kCompute);
}

LogicalResult lowerBranch(Operation *op, Value input, Value a, Value b,
                          float scale, float dropout,
                          std::optional<uint64_t> stream, bool accumulate,
                          unsigned firstWorkspace, LoweringContext &context) {
  BranchShape s = branchShape(input, a, b);
  Value result = op->getResult(0);
  if (dropout == 0.0f) {
    Call call(context, op, "lora");
    call.buffer(input);
    return adapters(call, a, b)
        .i64(s.M).i64(s.N).i64(s.K).i64(s.r).f32(scale).i64(accumulate)
        .workspace(firstWorkspace).buffer(result).emit();
  }
  FailureOr<int64_t> planned = dropoutStream(op, stream);
  if (failed(planned))
    return failure();
  Call call(context, op, "loraDropout");
  call.buffer(input);
  return adapters(call, a, b)
      .i64(s.M).i64(s.N).i64(s.K).i64(s.r).f32(scale).f32(dropout)
      .i64(*planned).slot(::qlora::slot::kDropoutSeed).i64(accumulate)
      .workspace(firstWorkspace + 1).workspace(firstWorkspace)
      .buffer(result).emit();
}

SmallVector<int64_t> lossWorkspaces(Value labels) {
  return {::qlora::cuda::CrossEntropyWorkspace::forRows(numElements(labels))
              .bytes};
}

/// Elementwise kernels exist per element type: fp32 (the optimizer's
/// tensors) and, for add, bf16 (activations).
FailureOr<StringRef> elementwiseKernel(Operation *op, Value value,
                                       StringRef f32Name, StringRef bf16Name) {
  Type element = elementTypeOf(value);
  if (element.isF32())
    return f32Name;
  if (element.isBF16() && !bf16Name.empty())
    return bf16Name;
  return op->emitError() << "no cuda kernel for this op on " << element;
}

} // namespace

void populateCudaKernelLowerings(KernelLoweringSet &set) {
  set.add<FillOp>([](FillOp fill, LoweringContext &context) -> LogicalResult {
    FailureOr<StringRef> kernel = elementwiseKernel(fill, fill, "fillF32", "");
    if (failed(kernel))
      return failure();
    return Call(context, fill, *kernel)
        .buffer(fill).i64(numElements(fill))
        .f32(fill.getValue().convertToFloat()).emit();
  });
  set.add<AddOp>([](AddOp add, LoweringContext &context) -> LogicalResult {
    FailureOr<StringRef> kernel =
        elementwiseKernel(add, add, "addF32", "addBf16");
    if (failed(kernel))
      return failure();
    return Call(context, add, *kernel)
        .buffer(add.getLhs()).buffer(add.getRhs()).i64(numElements(add))
        .buffer(add).emit();
  });
  set.add<MulOp>([](MulOp mul, LoweringContext &context) -> LogicalResult {
    bool scalar =
        shapeOf(mul.getRhs()).empty() && !shapeOf(mul.getLhs()).empty();
    FailureOr<StringRef> kernel = elementwiseKernel(
        mul, mul, scalar ? "mulScalarF32" : "mulF32", "");
    if (failed(kernel))
      return failure();
    return Call(context, mul, *kernel)
        .buffer(mul.getLhs()).buffer(mul.getRhs()).i64(numElements(mul))
        .buffer(mul).emit();
  });
  set.add<EmbeddingOp>(
      [](EmbeddingOp embedding, LoweringContext &context) -> LogicalResult {
        if (failed(expectElement(embedding, embedding.getTable(),
                                 "embedding tables", true)) ||
            failed(expectElement(embedding, embedding, "activations", true)))
          return failure();
        ArrayRef<int64_t> table = shapeOf(embedding.getTable());
        return Call(context, embedding, "embedding")
            .buffer(embedding.getTable()).buffer(embedding.getIds())
            .i64(numElements(embedding.getIds())).i64(table[1]).i64(table[0])
            .slot(::qlora::slot::kStatus).buffer(embedding).emit();
      });
  // Without a saved rstd (no qlora-save-for-backward) the forward writes it
  // to a workspace.
  set.add<RmsNormOp>(
      [](RmsNormOp norm, LoweringContext &context) -> LogicalResult {
        if (failed(expectElement(norm, norm.getInput(), "activations", true)))
          return failure();
        int64_t hidden = shapeOf(norm.getResult()).back();
        Call call(context, norm, "rmsNorm");
        call.buffer(norm.getInput()).buffer(norm.getWeight())
            .i64(numElements(norm.getResult()) / hidden).i64(hidden)
            .f32(norm.getEps().convertToFloat()).buffer(norm.getResult());
        if (Value rstd = norm.getRstd())
          call.buffer(rstd);
        else
          call.workspace(0);
        return call.emit();
      },
      [](RmsNormOp norm, const TargetDescription &) {
        SmallVector<int64_t> bytes;
        if (!norm.getRstd())
          bytes.push_back(4 * numElements(norm.getResult()) /
                          shapeOf(norm.getResult()).back());
        return bytes;
      });
  set.add<RmsNormGradOp>(
      [](RmsNormGradOp grad, LoweringContext &context) -> LogicalResult {
        if (!grad.getRstd())
          return grad.emitError() << "the cuda RMSNorm backward reads the "
                                     "forward's rstd; run "
                                     "qlora-save-for-backward";
        int64_t hidden = shapeOf(grad).back();
        return Call(context, grad, "rmsNormGrad")
            .buffer(grad.getInput()).buffer(grad.getWeight())
            .buffer(grad.getDy()).buffer(grad.getRstd())
            .i64(numElements(grad) / hidden).i64(hidden).buffer(grad).emit();
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
            .buffer(grad.getQ()).buffer(grad.getK()).buffer(grad.getV())
            .buffer(grad.getOut()).buffer(grad.getLse())
            .buffer(grad.getDout()).i64(q[0]).i64(q[1])
            .i64(grad.getNumHeads()).i64(grad.getNumKvHeads())
            .i64(grad.getHeadDim()).f32(grad.getScale().convertToFloat())
            .workspace(0).buffer(grad.getDq()).buffer(grad.getDk())
            .buffer(grad.getDv()).emit();
      },
      [](AttentionGradOp grad, const TargetDescription &) {
        ArrayRef<int64_t> q = shapeOf(grad.getQ());
        if (q.size() != 3)
          return SmallVector<int64_t>{};
        return SmallVector<int64_t>{int64_t(
            ::qlora::cuda::attentionBackwardScratchBytes(
                q[0], q[1], grad.getNumHeads(), grad.getNumKvHeads(),
                grad.getHeadDim()))};
      });
  set.add<LinearOp>(
      [](LinearOp linear, LoweringContext &context) {
        return lowerProjection(linear, linear.getInput(), linear.getWeight(),
                               linear.getResult(), context);
      },
      [](LinearOp linear, const TargetDescription &) {
        return projectionWorkspaces(linear.getInput(), linear.getWeight(),
                                    false);
      });
  set.add<NF4MatmulOp>(
      [](NF4MatmulOp matmul, LoweringContext &context) {
        return lowerProjection(matmul, matmul.getInput(), matmul.getWeight(),
                               matmul.getResult(), context);
      },
      [](NF4MatmulOp matmul, const TargetDescription &) {
        return projectionWorkspaces(matmul.getInput(), matmul.getWeight(),
                                    false);
      });
  set.add<LinearGradInputOp>(
      [](LinearGradInputOp grad, LoweringContext &context) -> LogicalResult {
        Value weight = grad.getWeight();
        ArrayRef<int64_t> w = shapeOf(weight);
        int64_t M = numElements(grad.getDy()) / w[0];
        if (isa<NF4Type>(weight.getType()))
          return Call(context, grad, "nf4LinearGradInput")
              .buffer(grad.getDy()).nf4(weight).i64(M).workspace(0)
              .buffer(grad).emit("dequant_gemm");
        return Call(context, grad, "linearGradInput")
            .buffer(grad.getDy()).buffer(weight).i64(M).i64(w[0]).i64(w[1])
            .buffer(grad).emit("cublas");
      },
      [](LinearGradInputOp grad, const TargetDescription &) {
        SmallVector<int64_t> bytes;
        if (isa<NF4Type>(grad.getWeight().getType()))
          bytes.push_back(dequantBytes(grad.getWeight()));
        return bytes;
      });
  set.add<LoraOp>(
      [](LoraOp lora, LoweringContext &context) {
        return lowerBranch(lora, lora.getInput(), lora.getLoraA(),
                           lora.getLoraB(), lora.getScale().convertToFloat(),
                           lora.getDropout().convertToFloat(),
                           lora.getDropoutStream(), /*accumulate=*/false,
                           /*firstWorkspace=*/0, context);
      },
      [](LoraOp lora, const TargetDescription &) {
        return branchWorkspaces(lora.getInput(), lora.getLoraA(),
                                lora.getLoraB(),
                                lora.getDropout().convertToFloat(), false);
      });
  // A base product with its branch: one dequantize + cuBLAS call with the
  // branch in the epilogue for an NF4 weight; a dense weight's product, then
  // the branch added onto it.
  set.add<LoraLinearOp>(
      [](LoraLinearOp lora, LoweringContext &context) -> LogicalResult {
        Value input = lora.getInput(), weight = lora.getWeight();
        Value a = lora.getLoraA(), b = lora.getLoraB();
        float scale = lora.getScale().convertToFloat();
        float p = lora.getDropout().convertToFloat();
        if (!isa<NF4Type>(weight.getType())) {
          if (failed(lowerProjection(lora, input, weight, lora.getResult(),
                                     context)))
            return failure();
          return lowerBranch(lora, input, a, b, scale, p,
                             lora.getDropoutStream(), /*accumulate=*/true,
                             /*firstWorkspace=*/0, context);
        }
        if (failed(expectElement(lora, input, "activations", true)))
          return failure();
        BranchShape s = branchShape(input, a, b);
        if (p == 0.0f) {
          Call call(context, lora, "nf4LoraLinear");
          call.buffer(input).nf4(weight);
          return adapters(call, a, b)
              .i64(s.M).i64(s.r).f32(scale).workspace(0).workspace(1)
              .buffer(lora.getResult()).emit("dequant_gemm");
        }
        FailureOr<int64_t> stream =
            dropoutStream(lora, lora.getDropoutStream());
        if (failed(stream))
          return failure();
        Call call(context, lora, "nf4LoraLinearDropout");
        call.buffer(input).nf4(weight);
        return adapters(call, a, b)
            .i64(s.M).i64(s.r).f32(scale).f32(p).i64(*stream)
            .slot(::qlora::slot::kDropoutSeed).workspace(0).workspace(2)
            .workspace(1).buffer(lora.getResult()).emit("dequant_gemm");
      },
      [](LoraLinearOp lora, const TargetDescription &) {
        Value weight = lora.getWeight();
        SmallVector<int64_t> branch = branchWorkspaces(
            lora.getInput(), lora.getLoraA(), lora.getLoraB(),
            lora.getDropout().convertToFloat(), false);
        if (!isa<NF4Type>(weight.getType()))
          return branch;
        // [dequantize scratch, xa, dropped]
        SmallVector<int64_t> bytes = {dequantBytes(weight)};
        bytes.append(branch.begin(), branch.end());
        return bytes;
      });
  set.add<LoraGradOp>(
      [](LoraGradOp grad, LoweringContext &context) -> LogicalResult {
        BranchShape s =
            branchShape(grad.getInput(), grad.getLoraA(), grad.getLoraB());
        float p = grad.getDropout().convertToFloat();
        Call call(context, grad, p == 0.0f ? "loraGrad" : "loraGradDropout");
        call.buffer(grad.getInput());
        adapters(call, grad.getLoraA(), grad.getLoraB())
            .buffer(grad.getDy()).i64(s.M).i64(s.N).i64(s.K).i64(s.r)
            .f32(grad.getScale().convertToFloat());
        if (p != 0.0f) {
          FailureOr<int64_t> stream =
              dropoutStream(grad, grad.getDropoutStream());
          if (failed(stream))
            return failure();
          call.f32(p).i64(*stream).slot(::qlora::slot::kDropoutSeed)
              .workspace(2);
        }
        return call.workspace(0).workspace(1).buffer(grad.getDx())
            .buffer(grad.getDa()).buffer(grad.getDb()).emit();
      },
      [](LoraGradOp grad, const TargetDescription &) {
        return branchWorkspaces(grad.getInput(), grad.getLoraA(),
                                grad.getLoraB(),
                                grad.getDropout().convertToFloat(), true);
      });
  set.add<CrossEntropyOp>(
      [](CrossEntropyOp loss, LoweringContext &context) -> LogicalResult {
        FailureOr<std::pair<int64_t, int64_t>> rows =
            lossRows(loss, loss.getLogits());
        if (failed(rows) ||
            failed(expectElement(loss, loss.getLogits(), "logits", true)))
          return failure();
        return Call(context, loss, "crossEntropy")
            .buffer(loss.getLogits()).buffer(loss.getLabels())
            .i64(rows->first).i64(rows->second)
            .i64(shapeOf(loss.getLogits()).back()).i64(loss.getIgnoreIndex())
            .workspace(0).slot(::qlora::slot::kStatus).buffer(loss).emit();
      },
      [](CrossEntropyOp loss, const TargetDescription &) {
        return lossWorkspaces(loss.getLabels());
      });
  set.add<CrossEntropyGradOp>(
      [](CrossEntropyGradOp grad, LoweringContext &context) -> LogicalResult {
        FailureOr<std::pair<int64_t, int64_t>> rows =
            lossRows(grad, grad.getLogits());
        if (failed(rows) ||
            failed(expectElement(grad, grad.getLogits(), "logits", true)))
          return failure();
        return Call(context, grad, "crossEntropyGrad")
            .buffer(grad.getLogits()).buffer(grad.getLabels())
            .buffer(grad.getDloss()).i64(rows->first).i64(rows->second)
            .i64(shapeOf(grad.getLogits()).back()).i64(grad.getIgnoreIndex())
            .workspace(0).buffer(grad).emit();
      },
      [](CrossEntropyGradOp grad, const TargetDescription &) {
        return lossWorkspaces(grad.getLabels());
      });
  set.add<LmHeadLossOp>(
      [](LmHeadLossOp op, LoweringContext &context) -> LogicalResult {
        ArrayRef<int64_t> in = shapeOf(op.getInput());
        if (in.size() != 3)
          return op.emitError() << "expects [batch, seq, hidden] input";
        if (failed(expectElement(op, op.getInput(), "input", true)))
          return failure();
        return Call(context, op, "lmHeadLoss")
            .buffer(op.getInput()).buffer(op.getWeight())
            .buffer(op.getLabels()).buffer(op.getDloss())
            .i64(in[0]).i64(in[1]).i64(in[2])
            .i64(shapeOf(op.getWeight())[0]).i64(op.getIgnoreIndex())
            .i64(op.getChunkRows()).workspace(0).workspace(1)
            .slot(::qlora::slot::kStatus).buffer(op.getLoss())
            .buffer(op.getDinput()).emit();
      },
      [](LmHeadLossOp op, const TargetDescription &) {
        // The loss's shifted labels and row losses for every row, and one
        // chunk of bf16 logits.
        SmallVector<int64_t> bytes = lossWorkspaces(op.getLabels());
        bytes.push_back(op.getChunkRows() * shapeOf(op.getWeight())[0] * 2);
        return bytes;
      });
  set.add<AdamWOp>([](AdamWOp adam, LoweringContext &context) -> LogicalResult {
    auto param = adam.getParam().getDefiningOp<ParamOp>();
    if (!param || !param.getTrainable())
      return adam.emitError() << "the cuda AdamW updates a trainable "
                                 "qlora.param (it refreshes its bf16 copy)";
    return Call(context, adam, "adamw")
        .buffer(adam.getParam()).buffer(adam.getGrad()).buffer(adam.getM())
        .buffer(adam.getV()).buffer(adam.getLr()).buffer(adam.getStep())
        .i64(numElements(adam.getParam()))
        .f32(adam.getBeta1().convertToFloat())
        .f32(adam.getBeta2().convertToFloat())
        .f32(adam.getEps().convertToFloat())
        .f32(adam.getWeightDecay().convertToFloat())
        .buffer(adam.getNewParam()).buffer(adam.getNewM())
        .buffer(adam.getNewV())
        .slot(param.getName(), ::qlora::part::kCompute).emit();
  });
  set.add<SumSquaresOp>(
      [](SumSquaresOp sum, LoweringContext &context) {
        return Call(context, sum, "sumSquares")
            .buffer(sum.getInput()).i64(numElements(sum.getInput()))
            .workspace(0).buffer(sum).emit();
      },
      [](SumSquaresOp, const TargetDescription &) {
        return SmallVector<int64_t>{
            int64_t(sizeof(double)) * ::qlora::cuda::kSumOfSquaresPartials};
      });
  set.add<ClipCoefficientOp>(
      [](ClipCoefficientOp clip, LoweringContext &context) {
        return Call(context, clip, "clipCoefficient")
            .buffer(clip.getTotal()).f32(clip.getMaxNorm().convertToFloat())
            .buffer(clip).emit();
      });
  set.add<DequantizeOp>([](DequantizeOp op, LoweringContext &) {
    return op.emitError()
           << "a standalone qlora.dequantize has no cuda kernel; run "
              "qlora-fuse-dequant-matmul so that it feeds a projection";
  });
  // A fused region: its generated kernel, launched over the elements with
  // the arena offsets of its inputs and results (not a table kernel: the
  // launch is generic over the kernel's arguments).
  set.add<FusedElementwiseOp>(
      [](FusedElementwiseOp fused, LoweringContext &context) -> LogicalResult {
        if (!context.kernels)
          return fused.emitError() << "no place for generated kernels";
        FailureOr<std::string> name = context.kernels->emit(fused);
        if (failed(name))
          return failure();
        KernelCall call;
        call.kernel = "launchElementwise";
        call.variant = *name;
        call.callee = (kernelNamespace(TargetKind::Cuda) +
                       "::launchElementwise").str();
        MLIRContext *mlir = fused.getContext();
        call.args.push_back(emitc::OpaqueAttr::get(mlir, *name));
        call.args.push_back(emitc::OpaqueAttr::get(mlir, "\"" + *name + "\""));
        call.args.push_back(
            context.builder.getI64IntegerAttr(numElements(fused.getResult(0))));
        for (Value value : llvm::concat<Value>(fused.getInputs(),
                                               fused.getResults())) {
          FailureOr<int64_t> offset =
              context.plan.offset(value, ::qlora::part::kData, fused);
          if (failed(offset))
            return failure();
          call.args.push_back(context.builder.getI64IntegerAttr(*offset));
        }
        context.calls.push_back(std::move(call));
        return success();
      });
}

} // namespace mlir::qlora
