//===- Passes.td - qlora code generation passes ------------*- tablegen -*-===//
//
// Lowering of a training step: the memory plan, then the conversion to EmitC
// that the C++ emitter prints.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_CODEGEN_PASSES
#define QLORA_CODEGEN_PASSES

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// Memory planning
//===----------------------------------------------------------------------===//

def PlanMemoryPass : Pass<"qlora-plan-memory", "::mlir::ModuleOp"> {
  let summary = "assign every buffer of the training step a static offset in one arena";
  let description = [{
    Gives every tensor of the entry functions a byte offset in a single
    arena, ahead of time. Named buffers (step inputs, parameters, optimizer
    state, the loss) get fixed slots that persist across calls; temporaries
    share the rest by lifetime, first fit, so that the arena stays near the
    peak of live bytes. Functions never run at the same time, so they share
    the temporary region.

    The plan is recorded as attributes: `qlora.offsets` on every op (one
    offset per result; packed codes and fp32 absmax for an NF4 parameter),
    and on the module `qlora.arena_bytes` and `qlora.buffers`, the named
    slots. The pass reports the arena size as a remark.

    ```mlir
    // before
    %x = qlora.rms_norm %h, %w {eps = 1.0e-05 : f32} : (...) -> tensor<2x64x256xf32>
    // after
    %x = qlora.rms_norm %h, %w {eps = 1.0e-05 : f32, qlora.offsets = array<i64: 1048576>} : ...
    ```

    On the `cpu` target frozen parameters are stored as fp32 (the reference
    casts them so) and NF4 block constants as fp32 maxima.
  }];
  let options = [
    Option<"target", "target", "std::string", "\"cpu\"",
           "the backend whose storage the plan follows (cpu)">,
    ListOption<"entryPoints", "entry-points", "std::string",
               "functions to plan (default: train_step, apply_gradients)">,
  ];
}

//===----------------------------------------------------------------------===//
// Conversions
//===----------------------------------------------------------------------===//

def ConvertQLoRAToEmitCPass : Pass<"convert-qlora-to-emitc", "::mlir::ModuleOp"> {
  let summary = "lower a planned training step to EmitC kernel calls";
  let description = [{
    Replaces every planned entry function by an `emitc.func` that calls one
    runtime kernel per op, with the arena offsets, sizes and attributes as
    constant arguments; the only runtime value is the step context. Exports
    each entry as a C symbol `qlora_<name>`. Functions that are not entry
    points are dropped.

    ```mlir
    // before (planned)
    %y = qlora.rms_norm %x, %w {eps = 1.0e-05 : f32, qlora.offsets = array<i64: 8192>} : ...
    // after
    emitc.call_opaque "qlora::step::rmsNorm"(%ctx) {args = [0 : index, 4096 : i64, 2048 : i64, 128 : i64, 256 : i64, 1.0e-05 : f32, 8192 : i64]} : (...) -> ()
    ```
  }];
  let dependentDialects = ["::mlir::emitc::EmitCDialect"];
  let options = [
    Option<"target", "target", "std::string", "\"cpu\"",
           "the backend whose runtime the calls target (cpu)">,
  ];
}

#endif // QLORA_CODEGEN_PASSES
