#include "codegen/CostModel.h"

#include "dialects/QLoRAOps.h"
#include "dialects/QLoRATypes.h"

#include "llvm/ADT/TypeSwitch.h"

#include <fmt/format.h>

#include <algorithm>

namespace mlir::qlora {
namespace {

double lastDim(Value value) {
  auto type = dyn_cast<RankedTensorType>(value.getType());
  return type && type.getRank() > 0 ? double(type.getShape().back()) : 0.0;
}

double elements(Value value) {
  auto type = dyn_cast<RankedTensorType>(value.getType());
  return type ? double(type.getNumElements()) : 0.0;
}

/// Rows of `input` ([..., K]): the product of its leading dimensions.
double rows(Value input) {
  double k = lastDim(input);
  return k > 0 ? elements(input) / k : 0.0;
}

/// A projection [M, K] x [N, K]^T -> [M, N].
double projection(Value input, Value result) {
  return 2.0 * rows(input) * lastDim(input) * lastDim(result);
}

/// A LoRA branch of rank r on the same shapes (both low-rank products).
double loraBranch(Value input, Value loraA, Value result) {
  auto a = cast<RankedTensorType>(loraA.getType());
  return 2.0 * rows(input) * double(a.getShape().front()) *
         (lastDim(input) + lastDim(result));
}

/// Causal attention over q [B, S, H * D]: QK^T and PV on half the scores.
double attention(Value q) {
  auto type = cast<RankedTensorType>(q.getType());
  double seq = type.getRank() >= 2 ? double(type.getShape()[type.getRank() - 2])
                                   : 1.0;
  return 2.0 * elements(q) * seq;
}

} // namespace

double valueBytes(Type type) {
  if (auto tensor = dyn_cast<RankedTensorType>(type))
    return double(tensor.getNumElements()) *
           std::max<double>(1.0, tensor.getElementTypeBitWidth() / 8.0);
  if (auto nf4 = dyn_cast<NF4Type>(type))
    return double(nf4.getNumElements()) / 2.0;
  return 0.0;
}

std::string formatFlops(double flops) {
  if (flops >= 1e12)
    return fmt::format("{:.1f} TFLOP", flops / 1e12);
  if (flops >= 1e9)
    return fmt::format("{:.1f} GFLOP", flops / 1e9);
  return fmt::format("{:.0f} MFLOP", flops / 1e6);
}

double OpCost::seconds(const TargetDescription &target) const {
  return std::max(flops / target.peakFlopsPerSecond(),
                  bytes / target.memoryBytesPerSecond());
}

OpCost estimateCost(Operation *op) {
  OpCost cost;
  for (Value operand : op->getOperands())
    cost.bytes += valueBytes(operand.getType());
  for (Value result : op->getResults())
    cost.bytes += valueBytes(result.getType());
  cost.flops =
      llvm::TypeSwitch<Operation *, double>(op)
          .Case<LinearOp, NF4MatmulOp>([](auto linear) {
            return projection(linear.getInput(), linear.getResult());
          })
          .Case([](LoraOp lora) {
            return loraBranch(lora.getInput(), lora.getLoraA(),
                              lora.getResult());
          })
          .Case([](LoraLinearOp lora) {
            return projection(lora.getInput(), lora.getResult()) +
                   loraBranch(lora.getInput(), lora.getLoraA(),
                              lora.getResult());
          })
          .Case([](LinearGradInputOp grad) {
            return projection(grad.getDy(), grad.getResult());
          })
          // The head's forward and input gradient.
          .Case([](LmHeadLossOp op) {
            return 4.0 * rows(op.getInput()) * lastDim(op.getInput()) *
                   double(cast<RankedTensorType>(op.getWeight().getType())
                              .getDimSize(0));
          })
          // dX, dA and dB: twice the branch's products, plus recomputing
          // the input's down-projection.
          .Case([](LoraGradOp grad) {
            return 1.5 * loraBranch(grad.getInput(), grad.getLoraA(),
                                    grad.getDy());
          })
          .Case([](AttentionOp op) { return attention(op.getQ()); })
          .Case([](AttentionGradOp op) { return 2.5 * attention(op.getQ()); })
          .Default([](Operation *) { return 0.0; });
  return cost;
}

} // namespace mlir::qlora
