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
    inject.loraAlpha = options.lora_alpha;
    inject.loraDropout = options.lora_dropout;
    inject.targetModules.assign(options.target_modules.begin(),
                                options.target_modules.end());
    inject.useRslora = options.use_rslora;
    pm.addPass(createInjectLoRAPass(std::move(inject)));
  }
  if (options.quantizeWeights) {
    QuantizeWeightsPassOptions quantize;
    quantize.blockSize = options.blocksize;
    quantize.doubleQuant = options.bnb_4bit_use_double_quant;
    quantize.doubleQuantBlockSize = options.doubleQuantBlockSize;
    quantize.skipModules.assign(options.llm_int8_skip_modules.begin(),
                                options.llm_int8_skip_modules.end());
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
    train.maxGradNorm = options.max_grad_norm;
    train.adamBeta1 = options.adam_beta1;
    train.adamBeta2 = options.adam_beta2;
    train.adamEpsilon = options.adam_epsilon;
    train.weightDecay = options.weight_decay;
    pm.addPass(createBuildTrainStepPass(train));
  }
  // Then the lowering for the target: its compute type and the statistics
  // its backward kernels read (both only with a training step), a static
  // arena plan and the kernel calls.
  if (options.buildTrainStep && options.target == "cuda") {
    pm.addPass(createAssignComputeTypePass());
    // The batch's logits are never held: the lm_head, its loss and their
    // input gradient go chunk by chunk.
    pm.addPass(createFuseLmHeadLossPass());
  }
  if (options.buildTrainStep)
    pm.addPass(createSaveForBackwardPass({options.target}));
  // Chains of elementwise work become generated kernels (cuda).
  if (options.buildTrainStep && options.target == "cuda")
    pm.addPass(createFuseElementwisePass());
  // A memory budget recomputes activations until the plan fits it.
  if (options.buildTrainStep && options.max_memory.getValue() != "0") {
    RematerializePassOptions remat;
    remat.maxMemory = options.max_memory;
    remat.offloadActivations = options.offload_activations;
    remat.target = options.target;
    pm.addPass(createRematerializePass(remat));
  }
  if (options.planMemory) {
    PlanMemoryPassOptions plan;
    plan.target = options.target;
    pm.addPass(createPlanMemoryPass(plan));
  }
  if (options.convertToEmitC)
    pm.addPass(createConvertQLoRAToEmitCPass());
}

namespace {
void copyOption(llvm::cl::opt<int64_t> &to, int64_t value) { to = value; }
void copyOption(llvm::cl::opt<double> &to, double value) { to = value; }
void copyOption(llvm::cl::opt<bool> &to, bool value) { to = value; }
void copyOption(llvm::cl::opt<std::string> &to, ::qlora::ByteSize value) {
  to = std::to_string(value.bytes);
}
void copyOption(mlir::detail::PassOptions::ListOption<std::string> &to,
                const std::string &list) {
  std::vector<std::string> names = ::qlora::StepOptions::names(list);
  to = ArrayRef<std::string>(names);
}
} // namespace

void mlir::qlora::setStepOptions(QLoRAPipelineOptions &pipeline,
                                 const ::qlora::StepOptions &options) {
#define QLORA_STEP_OPTION(Field, Kind, Default, HfName, PipelineName, Help)    \
  copyOption(pipeline.Field, options.Field);
#include "runtime/train/StepOptions.def"
}

void mlir::qlora::registerQLoRAPipeline() {
  PassPipelineRegistration<QLoRAPipelineOptions>(
      "qlora-pipeline",
      "The qlora compilation pipeline: inject-lora, quantize-weights, "
      "fuse-dequant-matmul, fuse-lora, build-train-step, the target's "
      "assign-compute-type, fuse-lm-head-loss, save-for-backward and "
      "fuse-elementwise, "
      "rematerialize under a max-memory budget (and, when asked, "
      "plan-memory and convert-qlora-to-emitc)",
      buildQLoRAPipeline);
}
