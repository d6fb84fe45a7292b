//===- ElementwiseKernels.h - __global__ kernels from fused regions -*- C++ -*-===//
//
// The cuda lowering of qlora.fused_elementwise: one generated `__global__`
// function per region, built in EmitC from the region's body (a grid-stride
// loop that loads each input element as f32, computes the body with the
// arithmetic EmitC prints as C++, and stores each result rounded once),
// and printed into step.cu beside the host code that launches it. The
// device helpers it calls are runtime/step/GeneratedKernels.cuh.
//
//===----------------------------------------------------------------------===//
#ifndef QLORA_CODEGEN_ELEMENTWISEKERNELS_H
#define QLORA_CODEGEN_ELEMENTWISEKERNELS_H

#include "dialects/QLoRAOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace mlir::qlora {

class ElementwiseKernelEmitter {
public:
  /// Kernels go after `anchor`, in the order emitted (before the entry
  /// points that launch them).
  explicit ElementwiseKernelEmitter(Operation *anchor)
      : builder_(anchor->getContext()), last_(anchor) {}

  /// Emits the kernel of `op`'s body and returns its name; fails with a
  /// diagnostic on a body op it cannot print.
  FailureOr<std::string> emit(FusedElementwiseOp op);

private:
  OpBuilder builder_;
  Operation *last_;
  unsigned count_ = 0;
};

} // namespace mlir::qlora

#endif // QLORA_CODEGEN_ELEMENTWISEKERNELS_H
