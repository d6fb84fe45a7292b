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

/// Options of `qlora-pipeline`: a switch per stage, to inspect the IR a
/// stage would have changed, plus the options of each stage's pass under the
/// same names.
struct QLoRAPipelineOptions : public PassPipelineOptions<QLoRAPipelineOptions> {
  // Stages, in pipeline order.
  Option<bool> injectLora{*this, "inject-lora",
                          llvm::cl::desc("Run qlora-inject-lora"),
                          llvm::cl::init(true)};
  Option<bool> quantizeWeights{*this, "quantize-weights",
                               llvm::cl::desc("Run qlora-quantize-weights"),
                               llvm::cl::init(true)};
  Option<bool> fuseDequantMatmul{
      *this, "fuse-dequant-matmul",
      llvm::cl::desc("Run qlora-fuse-dequant-matmul"), llvm::cl::init(true)};
  Option<bool> fuseLora{*this, "fuse-lora",
                        llvm::cl::desc("Run qlora-fuse-lora"),
                        llvm::cl::init(true)};
  Option<bool> buildTrainStep{*this, "build-train-step",
                              llvm::cl::desc("Run qlora-build-train-step"),
                              llvm::cl::init(true)};

  // qlora-inject-lora.
  Option<int64_t> r{*this, "r", llvm::cl::desc("LoRA rank (PEFT's r)"),
                    llvm::cl::init(8)};
  Option<double> loraAlpha{*this, "lora-alpha",
                           llvm::cl::desc("LoRA scaling numerator"),
                           llvm::cl::init(8.0)};
  Option<double> loraDropout{*this, "lora-dropout",
                             llvm::cl::desc("LoRA dropout probability"),
                             llvm::cl::init(0.0)};
  ListOption<std::string> targetModules{
      *this, "target-modules",
      llvm::cl::desc("Modules to adapt, or all-linear (q_proj,v_proj when "
                     "empty)")};
  Option<bool> useRslora{*this, "use-rslora",
                         llvm::cl::desc("Scale by lora_alpha / sqrt(r)"),
                         llvm::cl::init(false)};

  // qlora-quantize-weights.
  Option<int64_t> blockSize{*this, "block-size",
                            llvm::cl::desc("NF4 elements per absmax block"),
                            llvm::cl::init(64)};
  Option<bool> doubleQuant{*this, "double-quant",
                           llvm::cl::desc("Double-quantize the absmax"),
                           llvm::cl::init(true)};
  Option<int64_t> doubleQuantBlockSize{
      *this, "double-quant-block-size",
      llvm::cl::desc("Absmax constants per second-level scale"),
      llvm::cl::init(256)};
  ListOption<std::string> skipModules{
      *this, "skip-modules",
      llvm::cl::desc("Modules kept dense (llm_int8_skip_modules)")};

  // qlora-fuse-dequant-matmul.
  Option<bool> fuseLoraLinear{
      *this, "fuse-lora-linear",
      llvm::cl::desc("Also fold dequantized base weights into lora_linear"),
      llvm::cl::init(true)};

  // qlora-build-train-step.
  Option<double> maxGradNorm{
      *this, "max-grad-norm",
      llvm::cl::desc("Clip gradients to this global 2-norm (0: off)"),
      llvm::cl::init(0.0)};
  Option<double> adamBeta1{*this, "adam-beta1", llvm::cl::desc("AdamW beta1"),
                           llvm::cl::init(0.9)};
  Option<double> adamBeta2{*this, "adam-beta2", llvm::cl::desc("AdamW beta2"),
                           llvm::cl::init(0.999)};
  Option<double> adamEpsilon{*this, "adam-epsilon",
                             llvm::cl::desc("AdamW epsilon"),
                             llvm::cl::init(1e-8)};
  Option<double> weightDecay{*this, "weight-decay",
                             llvm::cl::desc("AdamW decoupled weight decay"),
                             llvm::cl::init(0.0)};
  // Code generation, off by default so that the pipeline prints the training
  // step in the qlora dialect; qlora-compile turns both on.
  Option<bool> planMemory{*this, "plan-memory",
                          llvm::cl::desc("Run qlora-plan-memory"),
                          llvm::cl::init(false)};
  Option<bool> convertToEmitC{*this, "convert-to-emitc",
                              llvm::cl::desc("Run convert-qlora-to-emitc"),
                              llvm::cl::init(false)};
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
