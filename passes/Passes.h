//===- Passes.h - qlora passes and pipeline -------------------*- C++ -*-===//
//
// Declares the qlora passes (generated from Passes.td), their registration,
// and the shared `qlora-pipeline`.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_PASSES_PASSES_H
#define QLORA_PASSES_PASSES_H

#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"

#include <memory>

namespace mlir::qlora {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

/// Options of `qlora-pipeline`; each stage can be switched off to inspect
/// the IR it would have changed.
struct QLoRAPipelineOptions : public PassPipelineOptions<QLoRAPipelineOptions> {
  Option<bool> fuseDequantMatmul{
      *this, "fuse-dequant-matmul",
      llvm::cl::desc("Run qlora-fuse-dequant-matmul"), llvm::cl::init(true)};
  Option<bool> fuseLora{*this, "fuse-lora",
                        llvm::cl::desc("Run qlora-fuse-lora"),
                        llvm::cl::init(true)};
};

/// Appends the qlora compilation pipeline to `pm`. Shared by qlora-opt
/// (`--qlora-pipeline`) and qlora-compile so both run the same passes.
void buildQLoRAPipeline(OpPassManager &pm, const QLoRAPipelineOptions &options);

/// Registers `qlora-pipeline` with the global pass registry.
void registerQLoRAPipeline();

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// Registers every qlora pass and pipeline.
inline void registerAllQLoRAPasses() {
  registerQLoRAPasses();
  registerQLoRAPipeline();
}

} // namespace mlir::qlora

#endif // QLORA_PASSES_PASSES_H
