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
#include "runtime/train/StepOptions.h"

#include <memory>

namespace mlir::qlora {

/// The module attribute qlora-rematerialize writes its plan to: budget,
/// runtime_reserve, arena_before, arena_after, named_slots (bytes), kept and recomputed
/// (saved values by op name), recomputed_flops and step_flops.
inline constexpr llvm::StringLiteral kRematerializationAttr =
    "qlora.rematerialization";

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

/// Options of `qlora-pipeline`: a switch per stage, to inspect the IR a
/// stage would have changed; the options of runtime/train/StepOptions.def
/// (the ones qlora-compile takes under their Hugging Face names), generated
/// from it; and the pipeline's own.
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

  // StepOptions.def: Int, Double and Bool options with their defaults; List
  // options are empty by default, which each pass reads as the default.
#define QLORA_PIPELINE_OPTION_Int(Field, Default, Name, Help)                  \
  Option<int64_t> Field{*this, Name, llvm::cl::desc(Help),                     \
                        llvm::cl::init(Default)};
#define QLORA_PIPELINE_OPTION_Double(Field, Default, Name, Help)               \
  Option<double> Field{*this, Name, llvm::cl::desc(Help),                      \
                       llvm::cl::init(Default)};
#define QLORA_PIPELINE_OPTION_Bool(Field, Default, Name, Help)                 \
  Option<bool> Field{*this, Name, llvm::cl::desc(Help),                        \
                     llvm::cl::init(Default)};
#define QLORA_PIPELINE_OPTION_List(Field, Default, Name, Help)                 \
  ListOption<std::string> Field{*this, Name, llvm::cl::desc(Help)};
#define QLORA_PIPELINE_OPTION_Size(Field, Default, Name, Help)                 \
  Option<std::string> Field{*this, Name, llvm::cl::desc(Help),                 \
                            llvm::cl::init(#Default)};
#define QLORA_STEP_OPTION(Field, Kind, Default, HfName, PipelineName, Help)    \
  QLORA_PIPELINE_OPTION_##Kind(Field, Default, PipelineName, Help)
#include "runtime/train/StepOptions.def"
#undef QLORA_PIPELINE_OPTION_Int
#undef QLORA_PIPELINE_OPTION_Double
#undef QLORA_PIPELINE_OPTION_Bool
#undef QLORA_PIPELINE_OPTION_List
#undef QLORA_PIPELINE_OPTION_Size

  // Pipeline-only options.
  Option<int64_t> doubleQuantBlockSize{
      *this, "double-quant-block-size",
      llvm::cl::desc("Absmax constants per second-level scale"),
      llvm::cl::init(256)};
  Option<bool> fuseLoraLinear{
      *this, "fuse-lora-linear",
      llvm::cl::desc("Also fold dequantized base weights into lora_linear"),
      llvm::cl::init(true)};
  // The lowering: the target's decisions, then code generation, off by
  // default so that the pipeline prints the training step in the qlora
  // dialect; qlora-compile turns both on.
  Option<std::string> target{
      *this, "target",
      llvm::cl::desc("The backend to lower for: cpu or cuda (its compute "
                     "type, saved statistics, storage and kernels)"),
      llvm::cl::init("cpu")};
  Option<bool> planMemory{*this, "plan-memory",
                          llvm::cl::desc("Run qlora-plan-memory"),
                          llvm::cl::init(false)};
  Option<bool> convertToEmitC{*this, "convert-to-emitc",
                              llvm::cl::desc("Run convert-qlora-to-emitc"),
                              llvm::cl::init(false)};
};

/// The pipeline options of a qlora-compile invocation: every StepOptions
/// field copied under its pipeline name.
void setStepOptions(QLoRAPipelineOptions &pipeline,
                    const ::qlora::StepOptions &options);

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
