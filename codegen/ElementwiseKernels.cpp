//===- ElementwiseKernels.cpp - __global__ kernels from fused regions -------===//
#include "codegen/ElementwiseKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/IR/IRMapping.h"

namespace mlir::qlora {
namespace {

/// The C type of a tensor's elements in the arena.
FailureOr<StringRef> elementCType(Operation *op, Value value) {
  Type element = cast<RankedTensorType>(value.getType()).getElementType();
  if (element.isBF16())
    return StringRef("uint16_t");
  if (element.isF32())
    return StringRef("float");
  return op->emitError() << "a generated kernel cannot store " << element;
}

} // namespace

FailureOr<std::string> ElementwiseKernelEmitter::emit(FusedElementwiseOp op) {
  MLIRContext *context = op.getContext();
  std::string name = "qlora_fused_" + std::to_string(count_++);
  Type i64 = builder_.getI64Type(), f32 = builder_.getF32Type();
  auto pointer = [&](StringRef element, bool isConst) {
    return emitc::PointerType::get(emitc::OpaqueType::get(
        context, (isConst ? "const " : "") + element.str()));
  };

  // (int64_t n, const T *in0, ..., T *out0, ...)
  SmallVector<Type> params = {i64};
  for (Value input : op.getInputs()) {
    FailureOr<StringRef> element = elementCType(op, input);
    if (failed(element))
      return failure();
    params.push_back(pointer(*element, true));
  }
  for (Value result : op.getResults()) {
    FailureOr<StringRef> element = elementCType(op, result);
    if (failed(element))
      return failure();
    params.push_back(pointer(*element, false));
  }
  builder_.setInsertionPointAfter(last_);
  auto kernel = emitc::FuncOp::create(builder_, op.getLoc(), name,
                                      builder_.getFunctionType(params, {}));
  last_ = kernel;
  kernel.setSpecifiersAttr(builder_.getStrArrayAttr({"static", "__global__"}));
  Block *entry = kernel.addEntryBlock();
  OpBuilder body = OpBuilder::atBlockEnd(entry);
  Location loc = op.getLoc();
  Value n = entry->getArgument(0);
  auto call = [&](StringRef callee, Type result, ValueRange args) -> Value {
    auto called = emitc::CallOpaqueOp::create(
        body, loc, result ? TypeRange{result} : TypeRange{}, callee, args);
    return result ? called.getResult(0) : Value();
  };
  Value first = call("qlora::gen::firstIndex", i64, {});
  Value stride = call("qlora::gen::indexStride", i64, {});
  LogicalResult converted = success();
  emitc::ForOp::create(
      body, loc, first, n, stride,
      [&](OpBuilder &loop, Location, Value index) {
        OpBuilder saved = body;
        body = loop;
        IRMapping scalars;
        Block &region = op.getBody().front();
        for (auto [i, input] : llvm::enumerate(op.getInputs())) {
          Value data = entry->getArgument(1 + i);
          bool scalar = cast<RankedTensorType>(input.getType()).getRank() == 0;
          scalars.map(region.getArgument(i),
                      scalar ? call("qlora::gen::loadScalar", f32, {data})
                             : call("qlora::gen::load", f32, {data, index}));
        }
        for (Operation &inner : region.without_terminator()) {
          Value lhs = scalars.lookupOrNull(inner.getOperand(0));
          Value rhs = inner.getNumOperands() > 1
                          ? scalars.lookupOrNull(inner.getOperand(1))
                          : Value();
          Value result;
          if (isa<arith::AddFOp>(inner))
            result = emitc::AddOp::create(body, loc, f32, lhs, rhs);
          else if (isa<arith::SubFOp>(inner))
            result = emitc::SubOp::create(body, loc, f32, lhs, rhs);
          else if (isa<arith::MulFOp>(inner))
            result = emitc::MulOp::create(body, loc, f32, lhs, rhs);
          else if (isa<arith::DivFOp>(inner))
            result = emitc::DivOp::create(body, loc, f32, lhs, rhs);
          if (!result) {
            converted = inner.emitError()
                        << "a generated elementwise kernel cannot print this "
                           "op";
            break;
          }
          scalars.map(inner.getResult(0), result);
        }
        auto yield = cast<YieldOp>(region.getTerminator());
        size_t outputs = 1 + op.getInputs().size();
        for (auto [i, value] : llvm::enumerate(yield.getValues()))
          if (succeeded(converted))
            call("qlora::gen::store", Type(),
                 {entry->getArgument(outputs + i), index,
                  scalars.lookup(value)});
        emitc::YieldOp::create(body, loc);
        body = saved;
      });
  emitc::ReturnOp::create(body, loc, Value());
  if (failed(converted)) {
    last_ = kernel->getPrevNode();
    kernel.erase();
    return failure();
  }
  return name;
}

} // namespace mlir::qlora
