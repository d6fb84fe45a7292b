//===- LlamaImporter.h - HF Llama checkpoint -> qlora forward graph -*- C++ -*-===//
//
// Builds `func.func @forward() -> tensor<f32>` in the qlora dialect: the
// causal-LM loss of a Llama-family model for one batch of the given static
// shape, with every parameter referenced by its checkpoint name. Parameter
// types come from the checkpoint (bitsandbytes 4-bit weights by their
// logical shape and dtype), and every tensor the graph needs is checked
// against config.json before any IR is built.
//
//===----------------------------------------------------------------------===//
#ifndef QLORA_TOOLS_LLAMAIMPORTER_H
#define QLORA_TOOLS_LLAMAIMPORTER_H

#include "ModelConfig.h"
#include "runtime/Checkpoint.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace mlir::qlora {

struct ImportOptions {
  int64_t batchSize = 1;
  int64_t seqLen = 64;
};

/// Imports the checkpoint; errors (a missing tensor, a shape that does not
/// match config.json, a sequence longer than the model allows) are returned
/// as text naming the cause.
::qlora::Expected<OwningOpRef<ModuleOp>>
importLlama(MLIRContext &context, const ::qlora::ModelConfig &config,
            const ::qlora::CheckpointDir &checkpoint,
            const ImportOptions &options);

/// The same graph from a bare config (no checkpoint): every parameter bf16
/// of the shape the config implies; `source` names the config in
/// locations.
::qlora::Expected<OwningOpRef<ModuleOp>>
importLlamaConfig(MLIRContext &context, const ::qlora::ModelConfig &config,
                  const ImportOptions &options, const std::string &source);

} // namespace mlir::qlora

#endif // QLORA_TOOLS_LLAMAIMPORTER_H
