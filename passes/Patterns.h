//===- Patterns.h - qlora rewrite patterns --------------------*- C++ -*-===//
//
// Pattern sets behind the qlora passes, exposed so other passes and tools
// can reuse them without running the passes.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_PASSES_PATTERNS_H
#define QLORA_PASSES_PATTERNS_H

#include "mlir/IR/PatternMatch.h"

namespace mlir::qlora {

/// Folds `qlora.dequantize` into the `qlora.linear` that is its only user,
/// giving `qlora.nf4_matmul`. With `fuseLoraLinear`, also lets
/// `qlora.lora_linear` take its base weight directly as NF4.
void populateFuseDequantMatmulPatterns(RewritePatternSet &patterns,
                                       bool fuseLoraLinear = true);

/// Folds `qlora.add` of a base projection and a `qlora.lora` branch of the
/// same input into `qlora.lora_linear`.
void populateFuseLoRAPatterns(RewritePatternSet &patterns);

} // namespace mlir::qlora

#endif // QLORA_PASSES_PATTERNS_H
