//===- KernelLowering.cpp - Per-target patterns from ops to kernel calls ----===//
#include "codegen/KernelLowering.h"

#include "runtime/RopeScaling.h"

#include "dialects/QLoRAOps.h"
#include "dialects/QLoRATypes.h"

#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <string>

namespace mlir::qlora {

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

FailureOr<int64_t> dropoutStream(Operation *op,
                                 std::optional<uint64_t> stream) {
  if (!stream)
    return op->emitError() << "a LoRA branch with dropout needs a "
                              "dropout_stream (qlora-build-train-step "
                              "assigns them)";
  return int64_t(*stream);
}

FailureOr<std::pair<int64_t, int64_t>> lossRows(Operation *op, Value logits) {
  ArrayRef<int64_t> shape = shapeOf(logits);
  if (shape.size() != 3)
    return op->emitError() << "expects [batch, seq, vocab] logits";
  return std::make_pair(shape[0], shape[1]);
}

static const char *kindName(KernelArgKind kind) {
  switch (kind) {
  case KernelArgKind::Buffer:
    return "a buffer offset";
  case KernelArgKind::I64:
    return "an i64";
  case KernelArgKind::F32:
    return "an f32";
  case KernelArgKind::NF4:
    return "an NF4 weight";
  }
  return "?";
}

KernelCallBuilder::KernelCallBuilder(LoweringContext &context, Operation *op,
                                     StringRef kernel)
    : context_(context), op_(op) {
  signature_ = findKernel(context.target.kind(), kernel);
  call_.kernel = kernel.str();
  call_.callee =
      (kernelNamespace(context.target.kind()) + "::" + kernel).str();
  if (!signature_)
    error_ = ("the " + context.target.name() + " kernel table has no '" +
              kernel + "'")
                 .str();
}

bool KernelCallBuilder::expect(KernelArgKind kind) {
  if (!error_.empty())
    return false;
  size_t index = call_.args.size();
  if (index >= signature_->args.size()) {
    error_ = "kernel '" + call_.kernel + "' takes " +
             std::to_string(signature_->args.size()) + " arguments, got more";
    return false;
  }
  const KernelArg &arg = signature_->args[index];
  if (arg.kind != kind) {
    error_ = "kernel '" + call_.kernel + "' expects argument " +
             std::to_string(index) + " ('" + arg.name + "') to be " +
             kindName(arg.kind) + ", got " + kindName(kind);
    return false;
  }
  return true;
}

KernelCallBuilder &KernelCallBuilder::buffer(Value value, StringRef part) {
  if (!expect(KernelArgKind::Buffer))
    return *this;
  FailureOr<int64_t> offset = context_.plan.offset(value, part, op_);
  if (failed(offset)) {
    error_ = "(reported above)";
    return *this;
  }
  call_.args.push_back(context_.builder.getI64IntegerAttr(*offset));
  return *this;
}

KernelCallBuilder &KernelCallBuilder::slot(StringRef name, StringRef part) {
  if (!expect(KernelArgKind::Buffer))
    return *this;
  FailureOr<int64_t> offset = context_.plan.slotOffset(name, part, op_);
  if (failed(offset)) {
    error_ = "(reported above)";
    return *this;
  }
  call_.args.push_back(context_.builder.getI64IntegerAttr(*offset));
  return *this;
}

KernelCallBuilder &KernelCallBuilder::workspace(unsigned index) {
  if (!expect(KernelArgKind::Buffer))
    return *this;
  FailureOr<int64_t> offset = context_.plan.workspace(op_, index);
  if (failed(offset)) {
    error_ = "(reported above)";
    return *this;
  }
  call_.args.push_back(context_.builder.getI64IntegerAttr(*offset));
  return *this;
}

KernelCallBuilder &KernelCallBuilder::i64(int64_t value) {
  if (expect(KernelArgKind::I64))
    call_.args.push_back(context_.builder.getI64IntegerAttr(value));
  return *this;
}

KernelCallBuilder &KernelCallBuilder::f32(float value) {
  if (expect(KernelArgKind::F32))
    call_.args.push_back(context_.builder.getF32FloatAttr(value));
  return *this;
}

KernelCallBuilder &KernelCallBuilder::nf4(Value weight) {
  if (!expect(KernelArgKind::NF4))
    return *this;
  auto type = dyn_cast<NF4Type>(weight.getType());
  StringRef name = slotName(weight.getDefiningOp());
  BufferAttr buffer = context_.plan.find(name);
  if (!type || !buffer) {
    error_ = "an NF4 operand must be a planned qlora.param";
    return *this;
  }
  // Absent parts are -1; the runtime's NF4Parts lists them in this order.
  auto offsetOf = [&](const char *part) -> int64_t {
    BufferPartAttr found = buffer.getPart(part);
    return found ? found.getOffset() : -1;
  };
  ArrayRef<int64_t> shape = type.getShape();
  int64_t rows = shape.size() == 2 ? shape[0] : 1;
  std::string text =
      (kernelNamespace(context_.target.kind()) + "::NF4Parts{").str();
  SmallVector<int64_t> fields;
  if (context_.target.kind() == TargetKind::Cuda) {
    DoubleQuantAttr dq = type.getDoubleQuant();
    fields = {offsetOf(::qlora::part::kCodes),
              offsetOf(::qlora::part::kAbsmax),
              offsetOf(::qlora::part::kAbsmaxCodes),
              offsetOf(::qlora::part::kAbsmaxScales),
              offsetOf(::qlora::part::kAbsmaxOffset),
              rows,
              shape.back(),
              type.getBlockSize(),
              dq ? dq.getBlock() : 0};
  } else {
    fields = {offsetOf(::qlora::part::kCodes),
              offsetOf(::qlora::part::kAbsmax), rows, shape.back(),
              type.getBlockSize()};
  }
  for (size_t i = 0; i < fields.size(); ++i)
    text += (i ? ", " : "") + std::to_string(fields[i]);
  text += "}";
  call_.args.push_back(
      emitc::OpaqueAttr::get(context_.builder.getContext(), text));
  return *this;
}

LogicalResult KernelCallBuilder::emit(StringRef variant) {
  if (error_.empty() && call_.args.size() != signature_->args.size())
    error_ = "kernel '" + call_.kernel + "' takes " +
             std::to_string(signature_->args.size()) + " arguments, got " +
             std::to_string(call_.args.size());
  if (!error_.empty()) {
    if (error_ != "(reported above)")
      op_->emitError() << "internal error lowering to the "
                       << context_.target.name() << " kernels: " << error_;
    return failure();
  }
  call_.variant = variant.str();
  context_.calls.push_back(std::move(call_));
  return success();
}

SmallVector<int64_t>
KernelLoweringSet::workspaces(Operation *op,
                              const TargetDescription &target) const {
  auto found = entries_.find(op->getName().getTypeID());
  if (found == entries_.end() || !found->second.workspaces)
    return {};
  return found->second.workspaces(op, target);
}

LogicalResult KernelLoweringSet::lower(Operation *op,
                                       LoweringContext &context) const {
  auto found = entries_.find(op->getName().getTypeID());
  if (found == entries_.end())
    return op->emitError() << "no " << context.target.name()
                           << " kernel implements this op";
  return found->second.lower(op, context);
}

void populateSlotLowerings(KernelLoweringSet &set) {
  set.addNoCall<InputOp, ParamOp, StateOp>();
  // A write of a slot: nothing when the planner computed the value in place.
  set.add<AssignOp>([](AssignOp assign, LoweringContext &context) {
    Value value = assign.getValue();
    FailureOr<int64_t> from =
        context.plan.offset(value, ::qlora::part::kData, assign);
    FailureOr<int64_t> to = context.plan.slotOffset(
        assign.getSlot(), ::qlora::part::kData, assign);
    if (failed(from) || failed(to))
      return failure();
    if (*from == *to)
      return success();
    BufferPartAttr part =
        context.plan.find(assign.getSlot()).getPart(::qlora::part::kData);
    return KernelCallBuilder(context, assign, "copy")
        .buffer(value)
        .i64(part.bytes())
        .slot(assign.getSlot())
        .emit();
  });
  set.add<func::ReturnOp>([](func::ReturnOp ret, LoweringContext &context) {
    if (ret.getNumOperands() == 0)
      return success();
    return KernelCallBuilder(context, ret, "copy")
        .buffer(ret.getOperand(0))
        .i64(4)
        .slot(::qlora::slot::kLoss)
        .emit();
  });
}

namespace {

LogicalResult lowerRope(Operation *op, StringRef kernel, Value input,
                        int64_t headDim, float theta, RopeLlama3Attr scaled,
                        LoweringContext &context) {
  // Without rope scaling, original_max_position_embeddings 0 says so.
  ::qlora::RopeScaling scaling;
  if (scaled) {
    scaling.factor = float(scaled.getFactor().convertToDouble());
    scaling.lowFreqFactor = float(scaled.getLowFreqFactor().convertToDouble());
    scaling.highFreqFactor =
        float(scaled.getHighFreqFactor().convertToDouble());
    scaling.originalMaxPositionEmbeddings =
        scaled.getOriginalMaxPositionEmbeddings();
  }
  ArrayRef<int64_t> shape = shapeOf(input);
  if (shape.size() != 3)
    return op->emitError() << "expects a [batch, seq, heads * head_dim] "
                              "operand";
  return KernelCallBuilder(context, op, kernel)
      .buffer(input)
      .i64(shape[0])
      .i64(shape[1])
      .i64(shape[2] / headDim)
      .i64(headDim)
      .f32(theta)
      .f32(scaling.factor)
      .f32(scaling.lowFreqFactor)
      .f32(scaling.highFreqFactor)
      .i64(scaling.originalMaxPositionEmbeddings)
      .buffer(op->getResult(0))
      .emit();
}

} // namespace

/// The host slot offset the planner gave a qlora.offload or qlora.reload.
static FailureOr<int64_t> hostOffset(Operation *op) {
  auto offset = op->getAttrOfType<IntegerAttr>(kHostOffsetAttr);
  if (!offset)
    return op->emitError() << "no host offset: run qlora-plan-memory first";
  return offset.getInt();
}

/// Bytes of a dense activation as it is stored.
static int64_t storedBytes(Value value) {
  return numElements(value) *
         BufferPartAttr::elementBytes(
             cast<RankedTensorType>(value.getType()).getElementType());
}

void populateSharedKernelLowerings(KernelLoweringSet &set) {
  set.add<OffloadOp>([](OffloadOp op, LoweringContext &context)
                         -> LogicalResult {
    FailureOr<int64_t> host = hostOffset(op);
    if (failed(host))
      return failure();
    return KernelCallBuilder(context, op, "offload")
        .buffer(op.getValue())
        .i64(storedBytes(op.getValue()))
        .i64(*host)
        .i64(op.getTransfer())
        .emit();
  });
  set.add<ReloadOp>([](ReloadOp op, LoweringContext &context)
                        -> LogicalResult {
    FailureOr<int64_t> host = hostOffset(op);
    if (failed(host))
      return failure();
    return KernelCallBuilder(context, op, "reload")
        .i64(*host)
        .i64(storedBytes(op.getResult()))
        .buffer(op.getResult())
        .i64(op.getTransfer())
        .emit();
  });
  set.add<OffloadWaitOp>([](OffloadWaitOp op, LoweringContext &context) {
    return KernelCallBuilder(context, op, "offloadWait")
        .i64(op.getTransfer())
        .emit();
  });
  set.add<ReloadWaitOp>([](ReloadWaitOp op, LoweringContext &context) {
    return KernelCallBuilder(context, op, "reloadWait")
        .i64(op.getTransfer())
        .emit();
  });
  set.add<RopeOp>([](RopeOp rope, LoweringContext &context) {
    return lowerRope(rope, "rope", rope.getInput(), rope.getHeadDim(),
                     rope.getTheta().convertToFloat(),
                     rope.getRopeScalingAttr(), context);
  });
  set.add<RopeGradOp>([](RopeGradOp rope, LoweringContext &context) {
    return lowerRope(rope, "ropeGrad", rope.getDy(), rope.getHeadDim(),
                     rope.getTheta().convertToFloat(),
                     rope.getRopeScalingAttr(), context);
  });
  // Without a saved lse (no qlora-save-for-backward), the forward writes it
  // to a workspace.
  set.add<AttentionOp>(
      [](AttentionOp attention, LoweringContext &context) -> LogicalResult {
        ArrayRef<int64_t> q = shapeOf(attention.getQ());
        if (q.size() != 3)
          return attention.emitError() << "expects [batch, seq, heads * "
                                          "head_dim] operands";
        KernelCallBuilder call(context, attention, "attention");
        call.buffer(attention.getQ())
            .buffer(attention.getK())
            .buffer(attention.getV())
            .i64(q[0])
            .i64(q[1])
            .i64(attention.getNumHeads())
            .i64(attention.getNumKvHeads())
            .i64(attention.getHeadDim())
            .f32(attention.getScale().convertToFloat())
            .buffer(attention.getResult());
        if (Value lse = attention.getLse())
          call.buffer(lse);
        else
          call.workspace(0);
        return call.emit();
      },
      [](AttentionOp attention, const TargetDescription &) {
        SmallVector<int64_t> bytes;
        if (!attention.getLse())
          bytes.push_back(4 * numElements(attention.getQ()) /
                          attention.getHeadDim());
        return bytes;
      });
  set.add<SwigluOp>([](SwigluOp swiglu, LoweringContext &context) {
    return KernelCallBuilder(context, swiglu, "swiglu")
        .buffer(swiglu.getGate())
        .buffer(swiglu.getUp())
        .i64(numElements(swiglu))
        .buffer(swiglu)
        .emit();
  });
  set.add<SwigluGradOp>([](SwigluGradOp grad, LoweringContext &context) {
    return KernelCallBuilder(context, grad, "swigluGrad")
        .buffer(grad.getGate())
        .buffer(grad.getUp())
        .buffer(grad.getDout())
        .i64(numElements(grad.getGate()))
        .buffer(grad.getDgate())
        .buffer(grad.getDup())
        .emit();
  });
}

KernelLoweringSet kernelLowerings(const TargetDescription &target) {
  KernelLoweringSet set;
  populateSlotLowerings(set);
  populateSharedKernelLowerings(set);
  if (target.kind() == TargetKind::Cuda)
    populateCudaKernelLowerings(set);
  else
    populateCpuKernelLowerings(set);
  return set;
}

} // namespace mlir::qlora
