//===- KernelCalls.cpp - Which runtime call implements each qlora op --------===//
#include "codegen/KernelCalls.h"

#include "codegen/BufferPlan.h"
#include "dialects/QLoRAOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/TypeSwitch.h"


namespace mlir::qlora {
namespace {

/// Builds one call's argument list.
class CallBuilder {
public:
  CallBuilder(Builder &builder, StringRef callee) : builder_(builder) {
    call_.callee = ("qlora::step::" + callee).str();
  }
  CallBuilder &i64(int64_t value) {
    call_.args.push_back(builder_.getI64IntegerAttr(value));
    return *this;
  }
  CallBuilder &f32(float value) {
    call_.args.push_back(builder_.getF32FloatAttr(value));
    return *this;
  }
  KernelCall take() { return std::move(call_); }

private:
  Builder &builder_;
  KernelCall call_;
};

ArrayRef<int64_t> shapeOf(Value value) {
  if (auto nf4 = dyn_cast<NF4Type>(value.getType()))
    return nf4.getShape();
  return cast<RankedTensorType>(value.getType()).getShape();
}

int64_t numElements(Value value) {
  int64_t n = 1;
  for (int64_t dim : shapeOf(value))
    n *= dim;
  return n;
}

/// The lowering of the ops of one function.
class Lowering {
public:
  Lowering(Builder &builder, const llvm::StringMap<int64_t> &slots,
           SmallVectorImpl<KernelCall> &calls)
      : builder_(builder), slots_(slots), calls_(calls) {}

  LogicalResult lower(Operation *op) {
    return TypeSwitch<Operation *, LogicalResult>(op)
        .Case<InputOp, ParamOp, StateOp>([](auto) { return success(); })
        .Case<AssignOp>([&](AssignOp assign) -> LogicalResult {
          auto slot = slots_.find(assign.getSlot());
          if (slot == slots_.end())
            return assign.emitError() << "no planned slot '"
                                      << assign.getSlot() << "'";
          Value value = assign.getValue();
          emit(call("copy").i64(offset(value)).i64(numElements(value) * 4)
                   .i64(slot->second));
          return success();
        })
        .Case<func::ReturnOp>([&](func::ReturnOp ret) -> LogicalResult {
          if (ret.getNumOperands() == 0)
            return success();
          emit(call("copy").i64(offset(ret.getOperand(0))).i64(4)
                   .i64(slots_.lookup(kLossSlot)));
          return success();
        })
        .Case<FillOp>([&](FillOp fill) {
          emit(call("fill").i64(offset(fill)).i64(numElements(fill))
                   .f32(fill.getValue().convertToFloat()));
          return success();
        })
        .Case<AddOp>([&](AddOp add) {
          emit(call("add").i64(offset(add.getLhs())).i64(offset(add.getRhs()))
                   .i64(numElements(add)).i64(offset(add)));
          return success();
        })
        .Case<MulOp>([&](MulOp mul) {
          bool scalar = shapeOf(mul.getRhs()).empty() &&
                        !shapeOf(mul.getLhs()).empty();
          emit(call(scalar ? "mulScalar" : "mul")
                   .i64(offset(mul.getLhs())).i64(offset(mul.getRhs()))
                   .i64(numElements(mul)).i64(offset(mul)));
          return success();
        })
        .Case<EmbeddingOp>([&](EmbeddingOp embedding) {
          ArrayRef<int64_t> table = shapeOf(embedding.getTable());
          emit(call("embedding").i64(offset(embedding.getTable()))
                   .i64(offset(embedding.getIds()))
                   .i64(numElements(embedding.getIds())).i64(table[1])
                   .i64(table[0]).i64(offset(embedding)));
          return success();
        })
        .Case<RmsNormOp>([&](RmsNormOp norm) {
          int64_t hidden = shapeOf(norm).back();
          emit(call("rmsNorm").i64(offset(norm.getInput()))
                   .i64(offset(norm.getWeight()))
                   .i64(numElements(norm) / hidden).i64(hidden)
                   .f32(norm.getEps().convertToFloat()).i64(offset(norm)));
          return success();
        })
        .Case<RmsNormGradOp>([&](RmsNormGradOp grad) {
          int64_t hidden = shapeOf(grad).back();
          emit(call("rmsNormGrad").i64(offset(grad.getInput()))
                   .i64(offset(grad.getWeight())).i64(offset(grad.getDy()))
                   .i64(numElements(grad) / hidden).i64(hidden)
                   .f32(grad.getEps().convertToFloat()).i64(offset(grad)));
          return success();
        })
        .Case<RopeOp>([&](RopeOp rope) {
          return lowerRope(rope, "rope", rope.getInput(),
                           rope.getHeadDim(), rope.getTheta().convertToFloat());
        })
        .Case<RopeGradOp>([&](RopeGradOp rope) {
          return lowerRope(rope, "ropeGrad", rope.getDy(), rope.getHeadDim(),
                           rope.getTheta().convertToFloat());
        })
        .Case<AttentionOp>([&](AttentionOp attention) -> LogicalResult {
          ArrayRef<int64_t> q = shapeOf(attention.getQ());
          if (q.size() != 3)
            return attention.emitError() << "expects [batch, seq, heads * "
                                            "head_dim] operands";
          emit(call("attention").i64(offset(attention.getQ()))
                   .i64(offset(attention.getK())).i64(offset(attention.getV()))
                   .i64(q[0]).i64(q[1]).i64(attention.getNumHeads())
                   .i64(attention.getNumKvHeads()).i64(attention.getHeadDim())
                   .f32(attention.getScale().convertToFloat())
                   .i64(offset(attention)));
          return success();
        })
        .Case<AttentionGradOp>([&](AttentionGradOp grad) -> LogicalResult {
          ArrayRef<int64_t> q = shapeOf(grad.getQ());
          if (q.size() != 3)
            return grad.emitError() << "expects [batch, seq, heads * "
                                       "head_dim] operands";
          emit(call("attentionGrad").i64(offset(grad.getQ()))
                   .i64(offset(grad.getK())).i64(offset(grad.getV()))
                   .i64(offset(grad.getOut())).i64(offset(grad.getDout()))
                   .i64(q[0]).i64(q[1]).i64(grad.getNumHeads())
                   .i64(grad.getNumKvHeads()).i64(grad.getHeadDim())
                   .f32(grad.getScale().convertToFloat())
                   .i64(offset(grad.getDq())).i64(offset(grad.getDk()))
                   .i64(offset(grad.getDv())));
          return success();
        })
        .Case<SwigluOp>([&](SwigluOp swiglu) {
          emit(call("swiglu").i64(offset(swiglu.getGate()))
                   .i64(offset(swiglu.getUp())).i64(numElements(swiglu))
                   .i64(offset(swiglu)));
          return success();
        })
        .Case<SwigluGradOp>([&](SwigluGradOp grad) {
          emit(call("swigluGrad").i64(offset(grad.getGate()))
                   .i64(offset(grad.getUp())).i64(offset(grad.getDout()))
                   .i64(numElements(grad.getGate())).i64(offset(grad.getDgate()))
                   .i64(offset(grad.getDup())));
          return success();
        })
        .Case<LinearOp>([&](LinearOp linear) {
          return lowerProjection(linear, linear.getInput(), linear.getWeight(),
                                 linear.getResult());
        })
        .Case<NF4MatmulOp>([&](NF4MatmulOp matmul) {
          return lowerProjection(matmul, matmul.getInput(), matmul.getWeight(),
                                 matmul.getResult());
        })
        .Case<LinearGradInputOp>([&](LinearGradInputOp grad) {
          Value weight = grad.getWeight();
          ArrayRef<int64_t> w = shapeOf(weight);
          int64_t M = numElements(grad.getDy()) / w[0];
          if (isa<NF4Type>(weight.getType()))
            emit(call("nf4LinearGradInput").i64(offset(grad.getDy()))
                     .i64(offset(weight, 0)).i64(offset(weight, 1)).i64(w[0])
                     .i64(w[1]).i64(cast<NF4Type>(weight.getType()).getBlockSize())
                     .i64(M).i64(offset(grad)));
          else
            emit(call("linearGradInput").i64(offset(grad.getDy()))
                     .i64(offset(weight)).i64(M).i64(w[0]).i64(w[1])
                     .i64(offset(grad)));
          return success();
        })
        .Case<LoraOp>([&](LoraOp lora) {
          return lowerBranch(lora, lora.getInput(), lora.getLoraA(),
                             lora.getLoraB(), lora.getScale().convertToFloat(),
                             lora.getDropout().convertToFloat(),
                             lora.getDropoutStream(), /*accumulate=*/false);
        })
        .Case<LoraLinearOp>([&](LoraLinearOp lora) -> LogicalResult {
          if (failed(lowerProjection(lora, lora.getInput(), lora.getWeight(),
                                     lora.getResult())))
            return failure();
          return lowerBranch(lora, lora.getInput(), lora.getLoraA(),
                             lora.getLoraB(), lora.getScale().convertToFloat(),
                             lora.getDropout().convertToFloat(),
                             lora.getDropoutStream(), /*accumulate=*/true);
        })
        .Case<LoraGradOp>([&](LoraGradOp grad) -> LogicalResult {
          ArrayRef<int64_t> a = shapeOf(grad.getLoraA());
          ArrayRef<int64_t> b = shapeOf(grad.getLoraB());
          int64_t K = a[1], r = a[0], N = b[0];
          float p = grad.getDropout().convertToFloat();
          CallBuilder builder = call(p == 0.0f ? "loraGrad" : "loraGradDropout");
          builder.i64(offset(grad.getInput())).i64(offset(grad.getLoraA()))
              .i64(offset(grad.getLoraB())).i64(offset(grad.getDy()))
              .i64(numElements(grad.getInput()) / K).i64(N).i64(K).i64(r)
              .f32(grad.getScale().convertToFloat());
          if (p != 0.0f) {
            FailureOr<std::pair<int64_t, int64_t>> stream =
                dropoutStream(grad, grad.getDropoutStream());
            if (failed(stream))
              return failure();
            builder.f32(p).i64(stream->first).i64(stream->second);
          }
          builder.i64(offset(grad.getDx())).i64(offset(grad.getDa()))
              .i64(offset(grad.getDb()));
          emit(builder);
          return success();
        })
        .Case<CrossEntropyOp>([&](CrossEntropyOp loss) -> LogicalResult {
          ArrayRef<int64_t> logits = shapeOf(loss.getLogits());
          if (logits.size() != 3)
            return loss.emitError() << "expects [batch, seq, vocab] logits";
          emit(call("crossEntropy").i64(offset(loss.getLogits()))
                   .i64(offset(loss.getLabels())).i64(logits[0]).i64(logits[1])
                   .i64(logits[2]).i64(loss.getIgnoreIndex()).i64(offset(loss)));
          return success();
        })
        .Case<CrossEntropyGradOp>([&](CrossEntropyGradOp grad) -> LogicalResult {
          ArrayRef<int64_t> logits = shapeOf(grad.getLogits());
          if (logits.size() != 3)
            return grad.emitError() << "expects [batch, seq, vocab] logits";
          emit(call("crossEntropyGrad").i64(offset(grad.getLogits()))
                   .i64(offset(grad.getLabels())).i64(offset(grad.getDloss()))
                   .i64(logits[0]).i64(logits[1]).i64(logits[2])
                   .i64(grad.getIgnoreIndex()).i64(offset(grad)));
          return success();
        })
        .Case<AdamWOp>([&](AdamWOp adam) {
          emit(call("adamw").i64(offset(adam.getParam()))
                   .i64(offset(adam.getGrad())).i64(offset(adam.getM()))
                   .i64(offset(adam.getV())).i64(offset(adam.getLr()))
                   .i64(offset(adam.getStep())).i64(numElements(adam.getParam()))
                   .f32(adam.getBeta1().convertToFloat())
                   .f32(adam.getBeta2().convertToFloat())
                   .f32(adam.getEps().convertToFloat())
                   .f32(adam.getWeightDecay().convertToFloat())
                   .i64(offset(adam.getNewParam())).i64(offset(adam.getNewM()))
                   .i64(offset(adam.getNewV())));
          return success();
        })
        .Case<SumSquaresOp>([&](SumSquaresOp sum) {
          emit(call("sumSquares").i64(offset(sum.getInput()))
                   .i64(numElements(sum.getInput())).i64(offset(sum)));
          return success();
        })
        .Case<ClipCoefficientOp>([&](ClipCoefficientOp clip) {
          emit(call("clipCoefficient").i64(offset(clip.getTotal()))
                   .f32(clip.getMaxNorm().convertToFloat()).i64(offset(clip)));
          return success();
        })
        .Case<DequantizeOp>([&](DequantizeOp op) {
          return op.emitError()
                 << "a standalone qlora.dequantize has no cpu kernel; run "
                    "qlora-fuse-dequant-matmul so that it feeds a projection";
        })
        .Default([](Operation *op) {
          return op->emitError() << "no cpu kernel implements this op";
        });
  }

private:
  CallBuilder call(StringRef callee) { return CallBuilder(builder_, callee); }
  void emit(CallBuilder builder) { calls_.push_back(builder.take()); }
  void emit(KernelCall call) { calls_.push_back(std::move(call)); }

  /// The planned offset of `value` (index 1 of an NF4 weight: its absmax).
  int64_t offset(Value value, unsigned part = 0) {
    if (auto result = dyn_cast<OpResult>(value)) {
      FailureOr<ArrayRef<int64_t>> offsets = plannedOffsets(result.getOwner());
      if (succeeded(offsets)) {
        size_t index = isa<NF4Type>(value.getType()) ? part
                                                     : result.getResultNumber();
        if (index < offsets->size())
          return (*offsets)[index];
      }
    }
    failed_ = true;
    return -1;
  }

  LogicalResult lowerRope(Operation *op, StringRef callee, Value input,
                          int64_t headDim, float theta) {
    ArrayRef<int64_t> shape = shapeOf(input);
    if (shape.size() != 3)
      return op->emitError() << "expects a [batch, seq, heads * head_dim] "
                                "operand";
    emit(call(callee).i64(offset(input)).i64(shape[0]).i64(shape[1])
             .i64(shape[2] / headDim).i64(headDim).f32(theta)
             .i64(offset(op->getResult(0))));
    return success();
  }

  /// The frozen base projection y = x W^T, dense or NF4.
  LogicalResult lowerProjection(Operation *op, Value input, Value weight,
                                Value result) {
    ArrayRef<int64_t> w = shapeOf(weight);
    int64_t N = w[0], K = w[1], M = numElements(input) / K;
    if (auto nf4 = dyn_cast<NF4Type>(weight.getType())) {
      emit(call("nf4Linear").i64(offset(input)).i64(offset(weight, 0))
               .i64(offset(weight, 1)).i64(N).i64(K).i64(nf4.getBlockSize())
               .i64(M).i64(offset(result)));
      return success();
    }
    auto param = weight.getDefiningOp<ParamOp>();
    if (param && param.getTrainable())
      return op->emitError() << "a trainable weight in a projection has no "
                                "cpu kernel; adapters go through qlora.lora";
    emit(call("linear").i64(offset(input)).i64(offset(weight)).i64(M).i64(N)
             .i64(K).i64(offset(result)));
    return success();
  }

  CallBuilder loraCall(StringRef callee, Value input, Value a, Value b,
                       float scale) {
    ArrayRef<int64_t> aShape = shapeOf(a), bShape = shapeOf(b);
    int64_t K = aShape[1], r = aShape[0], N = bShape[0];
    CallBuilder builder = call(callee);
    builder.i64(offset(input)).i64(offset(a)).i64(offset(b))
        .i64(numElements(input) / K).i64(N).i64(K).i64(r).f32(scale);
    return builder;
  }

  /// A LoRA branch into the op's result: alone, or added onto the base
  /// projection already there (lora_linear).
  LogicalResult lowerBranch(Operation *op, Value input, Value a, Value b,
                            float scale, float dropout,
                            std::optional<uint64_t> stream, bool accumulate) {
    int64_t result = offset(op->getResult(0));
    if (dropout == 0.0f) {
      emit(loraCall(accumulate ? "loraAdd" : "lora", input, a, b, scale)
               .i64(result).take());
      return success();
    }
    FailureOr<std::pair<int64_t, int64_t>> planned = dropoutStream(op, stream);
    if (failed(planned))
      return failure();
    emit(loraCall("loraDropout", input, a, b, scale)
             .f32(dropout).i64(planned->first).i64(planned->second)
             .i64(accumulate ? 1 : 0).i64(result).take());
    return success();
  }

  /// The stream of a branch with dropout and the offset of the seed slot.
  FailureOr<std::pair<int64_t, int64_t>>
  dropoutStream(Operation *op, std::optional<uint64_t> stream) {
    if (!stream)
      return op->emitError() << "a LoRA branch with dropout needs a "
                                "dropout_stream (qlora-build-train-step "
                                "assigns them)";
    auto seed = slots_.find(kDropoutSeedSlot);
    if (seed == slots_.end())
      return op->emitError() << "no planned '" << kDropoutSeedSlot
                             << "' slot; run qlora-plan-memory";
    return std::make_pair(int64_t(*stream), seed->second);
  }

public:
  bool failed_ = false;

private:
  Builder &builder_;
  const llvm::StringMap<int64_t> &slots_;
  SmallVectorImpl<KernelCall> &calls_;
};

} // namespace

LogicalResult describeKernelCalls(Operation *op, Builder &builder,
                                  const llvm::StringMap<int64_t> &slots,
                                  SmallVectorImpl<KernelCall> &calls) {
  Lowering lowering(builder, slots, calls);
  if (failed(lowering.lower(op)))
    return failure();
  if (lowering.failed_)
    return op->emitError() << "an operand or result has no planned offset; "
                              "run qlora-plan-memory";
  return success();
}

} // namespace mlir::qlora
