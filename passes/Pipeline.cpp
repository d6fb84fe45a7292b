//===- Pipeline.cpp - qlora-pipeline --------------------------------------===//
//
// The one qlora pipeline, shared by qlora-opt and qlora-compile.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "codegen/Passes.h"

#include "mlir/Pass/PassRegistry.h"

using namespace mlir;

void mlir::qlora::buildQLoRAPipeline(OpPassManager &pm,
                                     const QLoRAPipelineOptions &options) {
  // Adapters first, on the dense weights; quantization keeps their names.
  if (options.injectLora) {
    InjectLoRAPassOptions inject;
    inject.r = options.r;
    inject.loraAlpha = options.loraAlpha;
    inject.loraDropout = options.loraDropout;
    inject.targetModules.assign(options.targetModules.begin(),
                                options.targetModules.end());
    inject.useRslora = options.useRslora;
    pm.addPass(createInjectLoRAPass(std::move(inject)));
  }
  if (options.quantizeWeights) {
    QuantizeWeightsPassOptions quantize;
    quantize.blockSize = options.blockSize;
    quantize.doubleQuant = options.doubleQuant;
    quantize.doubleQuantBlockSize = options.doubleQuantBlockSize;
    quantize.skipModules.assign(options.skipModules.begin(),
                                options.skipModules.end());
    pm.addPass(createQuantizeWeightsPass(std::move(quantize)));
  }
  // Dequantize fusion before fuse-lora, so fuse-lora sees nf4_matmul bases.
  if (options.fuseDequantMatmul)
    pm.addPass(createFuseDequantMatmulPass({options.fuseLoraLinear}));
  if (options.fuseLora)
    pm.addPass(createFuseLoRAPass());
  // Differentiate the fused graph: the backward pass then reads NF4 weights
  // directly (linear_grad_input) and gets one lora_grad per branch.
  if (options.buildTrainStep) {
    BuildTrainStepPassOptions train;
    train.maxGradNorm = options.maxGradNorm;
    train.adamBeta1 = options.adamBeta1;
    train.adamBeta2 = options.adamBeta2;
    train.adamEpsilon = options.adamEpsilon;
    train.weightDecay = options.weightDecay;
    pm.addPass(createBuildTrainStepPass(train));
  }
  // Then the lowering: a static arena plan and the kernel calls.
  if (options.planMemory)
    pm.addPass(createPlanMemoryPass());
  if (options.convertToEmitC)
    pm.addPass(createConvertQLoRAToEmitCPass());
}

void mlir::qlora::registerQLoRAPipeline() {
  PassPipelineRegistration<QLoRAPipelineOptions>(
      "qlora-pipeline",
      "The qlora compilation pipeline: inject-lora, quantize-weights, "
      "fuse-dequant-matmul, fuse-lora, build-train-step (and, when asked, "
      "plan-memory and convert-qlora-to-emitc)",
      buildQLoRAPipeline);
}
