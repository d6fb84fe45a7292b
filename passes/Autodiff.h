//===- Autodiff.h - reverse-mode differentiation --------------*- C++ -*-===//
//
// The reverse-mode engine behind qlora-build-train-step, exposed so other
// passes (e.g. a future rematerialization pass) can differentiate a graph
// without building a whole training step.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_PASSES_AUTODIFF_H
#define QLORA_PASSES_AUTODIFF_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/Value.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"

namespace mlir::qlora {

/// Differentiates `output`, computed by the ops of `block`, with respect to
/// each value of `wrt` (values defined in `block`, e.g. trainable
/// parameters). The backward ops are created at `builder`'s insertion point,
/// which must come after every op of `block` that `output` depends on;
/// `seed` is the gradient of `output` (of its type).
///
/// Only ops on a path from some `wrt` value to `output` are differentiated,
/// each through its DifferentiableOpInterface; gradients that fan in are
/// summed with qlora.add. Returns one gradient per `wrt` value, null where
/// the value does not reach `output`. Fails, after emitting an error at the
/// op, when an op on such a path does not implement the interface or cannot
/// pass a gradient to an operand that needs one.
FailureOr<SmallVector<Value>> buildReverseMode(OpBuilder &builder,
                                               Block &block, Value output,
                                               Value seed,
                                               ArrayRef<Value> wrt);

} // namespace mlir::qlora

#endif // QLORA_PASSES_AUTODIFF_H
