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
    arena, ahead of time, stored as the target stores it
    (codegen/Target.h): on the cpu every float as fp32 and an NF4 weight
    as codes and fp32 maxima; on cuda each value in its own element type,
    an NF4 weight in bitsandbytes' four parts (codes, 8-bit maxima codes,
    their scales, the offset) and an adapter with a bf16 `compute` copy
    beside its fp32 master. Named buffers (step inputs, parameters,
    optimizer state, the loss, and the slots the target's runtime needs:
    on cuda the `status` words and cuBLAS's workspace) get fixed slots that
    persist across calls. Temporaries and the workspaces each kernel asks
    for (its pattern in KernelLowering.h sizes them) share the rest by
    lifetime, first fit, so that the arena stays near the peak of live
    bytes. Functions never run at the same time, so they share the
    temporary region. A result whose only use is the write of a slot, made
    by an elementwise op (add, mul, fill, adamw), is computed in the slot
    itself when nothing reads the slot's old value afterwards: gradient
    accumulation and the optimizer update in place.

    The plan is recorded as attributes: on the module `qlora.target`,
    `qlora.arena_bytes` and `qlora.buffers` (a `#qlora.buffer` per slot,
    with its `#qlora.part`s); on every op `qlora.offsets` (one per result)
    and `qlora.workspaces`. The pass reports the arena size as a remark.

    ```mlir
    // before
    %x = qlora.rms_norm %h, %w {eps = 1.0e-05 : f32} : (...) -> tensor<2x64x256xf32>
    // after
    %x = qlora.rms_norm %h, %w {eps = 1.0e-05 : f32, qlora.offsets = array<i64: 1048576>} : ...
    ```
  }];
  let options = [
    Option<"target", "target", "std::string", "\"cpu\"",
           "the backend whose storage the plan follows: cpu or cuda">,
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
    Replaces every planned entry function by an `emitc.func` that calls the
    runtime functions of the plan's target (runtime/step/CpuKernels.def or
    CudaKernels.def), with the arena offsets, sizes and attributes as
    constant arguments; the only runtime value is the step context. Each
    op's call comes from the target's kernel lowering patterns, which also
    choose strategies by shape (the NF4 product's path on cuda); the choices
    are recorded on the module as `qlora.kernels` for the manifest. Exports
    each entry as a C symbol `qlora_<name>`. Functions that are not entry
    points are dropped. The target is the plan's (`qlora.target`).

    ```mlir
    // before (planned)
    %y = qlora.rms_norm %x, %w {eps = 1.0e-05 : f32, qlora.offsets = array<i64: 8192>} : ...
    // after
    emitc.call_opaque "qlora::step::rmsNorm"(%ctx) {args = [0 : index, 4096 : i64, 2048 : i64, 128 : i64, 256 : i64, 1.0e-05 : f32, 8192 : i64]} : (...) -> ()
    ```
  }];
  let dependentDialects = ["::mlir::emitc::EmitCDialect"];
}

#endif // QLORA_CODEGEN_PASSES
