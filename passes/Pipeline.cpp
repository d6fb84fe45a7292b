//===- Pipeline.cpp - qlora-pipeline --------------------------------------===//
//
// The one qlora pipeline, shared by qlora-opt and qlora-compile.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"

using namespace mlir;

void mlir::qlora::buildQLoRAPipeline(OpPassManager &pm,
                                     const QLoRAPipelineOptions &options) {
  // Dequantize fusion first, so fuse-lora sees nf4_matmul bases.
  if (options.fuseDequantMatmul)
    pm.addPass(createFuseDequantMatmulPass());
  if (options.fuseLora)
    pm.addPass(createFuseLoRAPass());
}

void mlir::qlora::registerQLoRAPipeline() {
  PassPipelineRegistration<QLoRAPipelineOptions>(
      "qlora-pipeline",
      "The qlora compilation pipeline (for now: fuse-dequant-matmul, "
      "fuse-lora)",
      buildQLoRAPipeline);
}
