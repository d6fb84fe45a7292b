//===- QLoRAInterfaces.td - qlora op interfaces ------------*- tablegen -*-===//
//
// Op interfaces of the qlora dialect: reverse-mode differentiation, which
// qlora-build-train-step drives to build the backward graph.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_INTERFACES_TD
#define QLORA_INTERFACES_TD

include "mlir/IR/OpBase.td"

def QLoRA_DifferentiableOpInterface : OpInterface<"DifferentiableOpInterface"> {
  let cppNamespace = "::mlir::qlora";
  let description = [{
    An op that knows its own vector-Jacobian product: given the gradients of
    the loss with respect to its results, it builds the ops that compute the
    gradients with respect to its operands.

    `qlora-build-train-step` walks the forward graph backwards and calls
    `buildGradients` on every op that lies on a path from a trainable
    parameter to the loss; it sums gradients that fan in with `qlora.add`.
    Frozen operands (base weights, norm weights, the embedding table, token
    ids, labels) get no gradient: `isDifferentiableOperand` says which
    operands a gradient can reach at all, and the pass reports an error when
    a trainable value reaches an operand that is not differentiable.
  }];
  let methods = [
    InterfaceMethod<[{
        Whether a gradient can flow to operand `index`. Frozen weights and
        integer operands are not differentiable.
      }],
      "bool", "isDifferentiableOperand", (ins "unsigned":$index)>,
    InterfaceMethod<[{
        Builds, at the builder's insertion point, the gradients with respect
        to the operands. `resultGrads` has one entry per result: the gradient
        of the loss with respect to that result, or a null value where it is
        zero. `needGrad` has one entry per operand and says which gradients
        the caller wants. On success `operandGrads` holds one entry per
        operand: a value of the operand's type, or null where `needGrad` is
        false, the operand is not differentiable, or the gradient is zero.
        Fails (after emitting an error) only when the gradient cannot be
        expressed in the dialect.
      }],
      "::llvm::LogicalResult", "buildGradients",
      (ins "::mlir::OpBuilder &":$builder,
           "::llvm::ArrayRef<::mlir::Value>":$resultGrads,
           "::llvm::ArrayRef<bool>":$needGrad,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandGrads)>
  ];
}

#endif // QLORA_INTERFACES_TD
