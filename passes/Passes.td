//===- Passes.td - qlora passes ----------------------------*- tablegen -*-===//
//
// Every qlora pass, grouped under banners and alphabetical within a group.
// Flags start with `qlora-`; pass records end in `Pass`.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_PASSES_TD
#define QLORA_PASSES_TD

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// Adapters and quantization
//===----------------------------------------------------------------------===//

def InjectLoRAPass : Pass<"qlora-inject-lora", "::mlir::ModuleOp"> {
  let summary = "add PEFT-style LoRA adapters to the targeted projections";
  let description = [{
    For every `qlora.linear` (or `qlora.nf4_matmul`) whose weight is a frozen
    `qlora.param "<path>.<module>.weight"` (possibly through a
    `qlora.dequantize`) and whose module is targeted, adds the two trainable
    adapter parameters under PEFT's names,
    `base_model.model.<path>.<module>.lora_A.weight` (`[r, in]`, f32) and
    `...lora_B.weight` (`[out, r]`, f32), a `qlora.lora` branch of the same
    input with `scale = lora-alpha / r` (`lora-alpha / sqrt(r)` with
    `use-rslora`) and `dropout = lora-dropout`, and replaces every use of
    the projection with `qlora.add` of the projection and the branch. The
    module gets a `qlora.lora_config` attribute recording r, alpha, dropout
    and rsLoRA for the adapter export. Every default is the one of
    `runtime/train/StepOptions.def`, which qlora-compile and qlora-train
    share.

    `target-modules` matches like PEFT's `target_modules` list: a target
    names a module by its last path components (`q_proj`,
    `self_attn.q_proj`). The single value `all-linear`, the default (as
    in the QLoRA paper), targets every linear layer except the output layer
    (`lm_head`, or a projection by a tied embedding table). A target that matches no linear layer is an error, as is a
    projection that already has an adapter.

    Before:
    ```mlir
    %w = qlora.param "model.layers.0.self_attn.q_proj.weight" : tensor<256x256xbf16>
    %y = qlora.linear %x, %w : (tensor<2x64x256xf32>, tensor<256x256xbf16>) -> tensor<2x64x256xf32>
    ```
    After (`r=8 lora-alpha=16`):
    ```mlir
    %w = qlora.param "model.layers.0.self_attn.q_proj.weight" : tensor<256x256xbf16>
    %a = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<8x256xf32>
    %b = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {trainable} : tensor<256x8xf32>
    %y0 = qlora.linear %x, %w : (tensor<2x64x256xf32>, tensor<256x256xbf16>) -> tensor<2x64x256xf32>
    %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<2x64x256xf32>, tensor<8x256xf32>, tensor<256x8xf32>) -> tensor<2x64x256xf32>
    %y = qlora.add %y0, %yl : tensor<2x64x256xf32>
    ```
  }];
  let dependentDialects = ["::mlir::qlora::QLoRADialect"];
  let options = [
    Option<"r", "r", "int64_t", "::qlora::step_option_defaults::r",
           "Rank of the adapters (PEFT's r)">,
    Option<"loraAlpha", "lora-alpha", "double", "::qlora::step_option_defaults::lora_alpha",
           "Scaling numerator (PEFT's lora_alpha)">,
    Option<"loraDropout", "lora-dropout", "double", "::qlora::step_option_defaults::lora_dropout",
           "Dropout probability on the adapter input (PEFT's lora_dropout)">,
    ListOption<"targetModules", "target-modules", "std::string",
               "Modules to adapt (PEFT's target_modules), or all-linear "
               "(the default when empty)">,
    Option<"useRslora", "use-rslora", "bool", "::qlora::step_option_defaults::use_rslora",
           "Scale by lora_alpha / sqrt(r) (PEFT's use_rslora)">
  ];
}

def QuantizeWeightsPass : Pass<"qlora-quantize-weights", "::mlir::ModuleOp"> {
  let summary = "store the frozen projection weights of the decoder as NF4";
  let description = [{
    Gives every frozen 2-D `qlora.param` that is the weight of a
    `qlora.linear` inside the decoder layers the type
    `!qlora.nf4<NxK, <dtype>, block = block-size, double_quant = ...>` and
    inserts one `qlora.dequantize` before each of its uses, so that
    `qlora-fuse-dequant-matmul` can then fold them into `qlora.nf4_matmul`.
    The rule is the one transformers applies when it loads a checkpoint with
    bitsandbytes' 4-bit config (`BitsAndBytesConfig(load_in_4bit=True)`):
    names ending in `.weight` under `.layers.`, never embeddings, norms or
    `lm_head`, and not under a module of `skip-modules`
    (`llm_int8_skip_modules`, matched by whole dotted components). The
    parameter keeps its name, which is also the bnb checkpoint's key. Any
    element count is fine: blocks run across rows.

    Before:
    ```mlir
    %w = qlora.param "model.layers.0.mlp.down_proj.weight" : tensor<256x688xbf16>
    %y = qlora.linear %x, %w : (tensor<2x64x688xf32>, tensor<256x688xbf16>) -> tensor<2x64x256xf32>
    ```
    After:
    ```mlir
    %w = qlora.param "model.layers.0.mlp.down_proj.weight"
           : !qlora.nf4<256x688, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
    %wd = qlora.dequantize %w : !qlora.nf4<256x688, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
            -> tensor<256x688xbf16>
    %y = qlora.linear %x, %wd : (tensor<2x64x688xf32>, tensor<256x688xbf16>) -> tensor<2x64x256xf32>
    ```
  }];
  let dependentDialects = ["::mlir::qlora::QLoRADialect"];
  let options = [
    Option<"blockSize", "block-size", "int64_t", "::qlora::step_option_defaults::blocksize",
           "Elements per absmax block (bnb_4bit blocksize)">,
    Option<"doubleQuant", "double-quant", "bool", "::qlora::step_option_defaults::bnb_4bit_use_double_quant",
           "Quantize the absmax constants too (bnb_4bit_use_double_quant)">,
    Option<"doubleQuantBlockSize", "double-quant-block-size", "int64_t",
           /*default=*/"256",
           "Absmax constants per second-level scale">,
    ListOption<"skipModules", "skip-modules", "std::string",
               "Modules kept dense (llm_int8_skip_modules)">
  ];
}

//===----------------------------------------------------------------------===//
// Fusion
//===----------------------------------------------------------------------===//

def FuseDequantMatmulPass : Pass<"qlora-fuse-dequant-matmul"> {
  let summary = "fuse NF4 dequantization into the projection that consumes it";
  let description = [{
    Replaces a `qlora.dequantize` whose only user is the weight operand of a
    `qlora.linear` with a single `qlora.nf4_matmul`, so the dense weight is
    never written to memory. With `fuse-lora-linear` (on by default) it also
    lets a `qlora.lora_linear` read its base weight straight from NF4.

    A dequantized weight with any other user is left alone: the dense copy
    is needed anyway, and one dequantization is cheaper than several fused
    ones.

    Before:
    ```mlir
    %wd = qlora.dequantize %w : !qlora.nf4<4096x4096, bf16, block = 64> -> tensor<4096x4096xbf16>
    %y = qlora.linear %x, %wd : (tensor<8x4096xbf16>, tensor<4096x4096xbf16>) -> tensor<8x4096xbf16>
    ```
    After:
    ```mlir
    %y = qlora.nf4_matmul %x, %w : (tensor<8x4096xbf16>, !qlora.nf4<4096x4096, bf16, block = 64>) -> tensor<8x4096xbf16>
    ```
  }];
  let dependentDialects = ["::mlir::qlora::QLoRADialect"];
  let options = [
    Option<"fuseLoraLinear", "fuse-lora-linear", "bool", /*default=*/"true",
           "Also fold dequantized base weights into qlora.lora_linear">
  ];
}

def FuseElementwisePass : Pass<"qlora-fuse-elementwise", "::mlir::ModuleOp"> {
  let summary = "group chains of elementwise ops into one generated kernel each";
  let description = [{
    Grows a region backwards from each `qlora.add` or `qlora.mul` through
    the elementwise ops that produce its operands, as long as a producer's
    result is used only inside the region and has the region's shape, and
    replaces the region by one `qlora.fused_elementwise` whose body computes
    it per element in f32. A region of one op stays as it is (the runtime's
    kernel for it is as good). Inputs that are 0-d broadcast. A region takes
    at most `max-inputs` inputs (kernel arguments). The cuda lowering emits
    one `__global__` kernel per region from its body.

    Before:
    ```mlir
    %s = qlora.add %a, %b : tensor<8x64xbf16>
    %t = qlora.add %s, %c : tensor<8x64xbf16>
    ```
    After:
    ```mlir
    %t = qlora.fused_elementwise (%a, %b, %c) : (tensor<8x64xbf16>, tensor<8x64xbf16>, tensor<8x64xbf16>) -> tensor<8x64xbf16> {
    ^bb0(%x: f32, %y: f32, %z: f32):
      %0 = arith.addf %x, %y : f32
      %1 = arith.addf %0, %z : f32
      qlora.yield %1 : f32
    }
    ```
  }];
  let dependentDialects = ["::mlir::qlora::QLoRADialect",
                           "::mlir::arith::ArithDialect"];
  let options = [
    Option<"maxInputs", "max-inputs", "int64_t", /*default=*/"16",
           "The most inputs (kernel arguments) a region takes">,
  ];
}

def FuseLmHeadLossPass : Pass<"qlora-fuse-lm-head-loss", "::mlir::ModuleOp"> {
  let summary = "fuse the lm_head, the loss and the loss's input gradient";
  let description = [{
    In a training step, the logits of `qlora.linear` (the lm_head, a dense
    weight) feed only `qlora.cross_entropy` and `qlora.cross_entropy_grad`,
    whose gradient feeds only the lm_head's `qlora.linear_grad_input`.
    Together they become one `qlora.lm_head_loss` that produces the loss and
    the input gradient row chunk by row chunk, so that no value holds the
    batch's logits. Its chunk is as many rows as keep a chunk's bf16 logits
    within 64 MiB (runtime/cuda/Workspaces.h). The fused op takes the place
    of `qlora.cross_entropy_grad` (where `dloss` is known); anything else in
    that shape stays as it is. For the cuda target, after
    `qlora-assign-compute-type`.

    Before:
    ```mlir
    %logits = qlora.linear %x, %w : (tensor<2x64x256xbf16>, tensor<1024x256xbf16>) -> tensor<2x64x1024xbf16>
    %loss = qlora.cross_entropy %logits, %labels : (tensor<2x64x1024xbf16>, tensor<2x64xi32>) -> tensor<f32>
    %dlogits = qlora.cross_entropy_grad %logits, %labels, %dloss : (tensor<2x64x1024xbf16>, tensor<2x64xi32>, tensor<f32>) -> tensor<2x64x1024xbf16>
    %dx = qlora.linear_grad_input %dlogits, %w : (tensor<2x64x1024xbf16>, tensor<1024x256xbf16>) -> tensor<2x64x256xbf16>
    ```
    After:
    ```mlir
    %loss, %dx = qlora.lm_head_loss %x, %w, %labels, %dloss {chunk_rows = 128 : i64} : (tensor<2x64x256xbf16>, tensor<1024x256xbf16>, tensor<2x64xi32>, tensor<f32>) -> (tensor<f32>, tensor<2x64x256xbf16>)
    ```
  }];
  let dependentDialects = ["::mlir::qlora::QLoRADialect"];
}

def FuseLoRAPass : Pass<"qlora-fuse-lora"> {
  let summary = "fuse a base projection with its LoRA branch";
  let description = [{
    Matches `qlora.add(base, branch)` in either operand order, where `base`
    is a `qlora.linear` or `qlora.nf4_matmul` of some `%x` and `branch` is a
    `qlora.lora` of the same `%x`, and replaces all three with one
    `qlora.lora_linear`. The base and the branch must have no other users,
    since the fused op no longer produces them separately.

    Before:
    ```mlir
    %y0 = qlora.nf4_matmul %x, %w : (tensor<8x4096xbf16>, !qlora.nf4<4096x4096, bf16, block = 64>) -> tensor<8x4096xbf16>
    %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x4096xbf16>, tensor<16x4096xf32>, tensor<4096x16xf32>) -> tensor<8x4096xbf16>
    %y = qlora.add %y0, %yl : tensor<8x4096xbf16>
    ```
    After:
    ```mlir
    %y = qlora.lora_linear %x, %w, %a, %b {scale = 2.0 : f32}
           : (tensor<8x4096xbf16>, !qlora.nf4<4096x4096, bf16, block = 64>,
              tensor<16x4096xf32>, tensor<4096x16xf32>) -> tensor<8x4096xbf16>
    ```
  }];
  let dependentDialects = ["::mlir::qlora::QLoRADialect"];
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

def BuildTrainStepPass : Pass<"qlora-build-train-step", "::mlir::ModuleOp"> {
  let summary = "differentiate the loss and add the optimizer step";
  let description = [{
    Takes a module whose `func.func @forward() -> tensor<f32>` computes the
    loss of one micro-batch and adds two functions next to it:

    * `@train_step() -> tensor<f32>`: the forward pass, then the reverse-mode
      backward pass built through `DifferentiableOpInterface` (seeded with
      `qlora.input "grad_scale"`, which the host sets to 1 / the number of
      accumulated micro-batches; gradients that fan in are summed with
      `qlora.add`; frozen parameters get none), then, for every trainable
      parameter `P`, `grad:P += dP` in the state arena. It returns the loss.
    * `@apply_gradients()`: reads `learning_rate` and `step` (1-based), the
      accumulated gradients, optionally clips them to a global norm of
      `max-grad-norm` (`qlora.sum_squares`, `qlora.clip_coefficient`,
      `qlora.mul`, as `torch.nn.utils.clip_grad_norm_`), runs `qlora.adamw`
      on every parameter with its `adam_m:P` / `adam_v:P` moments, writes
      the new parameter and moments back and resets `grad:P` to zeros.

    LoRA branches with dropout get a `dropout_stream` so that each
    `qlora.lora_grad` redraws its forward mask. A trainable parameter that
    does not reach the loss gets a warning and no update (as torch skips
    parameters whose `.grad` is None). Errors: no `@forward`, a `@forward`
    that does not return one `tensor<f32>`, no trainable parameter, and an
    op on the path from a parameter to the loss that cannot be
    differentiated.

    Before:
    ```mlir
    func.func @forward() -> tensor<f32> {
      ...
      %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32} : ...
      ...
      %loss = qlora.cross_entropy %logits, %labels : (...) -> tensor<f32>
      return %loss : tensor<f32>
    }
    ```
    After (in addition to `@forward`):
    ```mlir
    func.func @train_step() -> tensor<f32> {
      ... forward ...
      %seed = qlora.input "grad_scale" : tensor<f32>
      %dlogits = qlora.cross_entropy_grad %logits, %labels, %seed : ...
      ...
      %dx, %da, %db = qlora.lora_grad %x, %a, %b, %dy {scale = 2.0 : f32} : ...
      %acc = qlora.state "grad:<A>" : tensor<8x256xf32>
      %sum = qlora.add %acc, %da : tensor<8x256xf32>
      qlora.assign "grad:<A>", %sum : tensor<8x256xf32>
      ...
      return %loss : tensor<f32>
    }
    func.func @apply_gradients() {
      %lr = qlora.input "learning_rate" : tensor<f32>
      %step = qlora.input "step" : tensor<f32>
      %g = qlora.state "grad:<A>" : tensor<8x256xf32>
      %p = qlora.param "<A>" {trainable} : tensor<8x256xf32>
      %m = qlora.state "adam_m:<A>" : tensor<8x256xf32>
      %v = qlora.state "adam_v:<A>" : tensor<8x256xf32>
      %p2, %m2, %v2 = qlora.adamw %p, %g, %m, %v, %lr, %step {...} : tensor<8x256xf32>
      qlora.assign "<A>", %p2 : tensor<8x256xf32>
      qlora.assign "adam_m:<A>", %m2 : tensor<8x256xf32>
      qlora.assign "adam_v:<A>", %v2 : tensor<8x256xf32>
      %z = qlora.fill 0.0 : tensor<8x256xf32>
      qlora.assign "grad:<A>", %z : tensor<8x256xf32>
      return
    }
    ```
  }];
  let dependentDialects = ["::mlir::qlora::QLoRADialect",
                           "::mlir::func::FuncDialect"];
  let options = [
    Option<"maxGradNorm", "max-grad-norm", "double", "::qlora::step_option_defaults::max_grad_norm",
           "Clip gradients to this global 2-norm (0: no clipping)">,
    Option<"adamBeta1", "adam-beta1", "double", "::qlora::step_option_defaults::adam_beta1",
           "AdamW beta1">,
    Option<"adamBeta2", "adam-beta2", "double", "::qlora::step_option_defaults::adam_beta2",
           "AdamW beta2">,
    Option<"adamEpsilon", "adam-epsilon", "double", "::qlora::step_option_defaults::adam_epsilon",
           "AdamW epsilon">,
    Option<"weightDecay", "weight-decay", "double", "::qlora::step_option_defaults::weight_decay",
           "AdamW decoupled weight decay">
  ];
}

//===----------------------------------------------------------------------===//
// Lowering decisions of a target
//===----------------------------------------------------------------------===//

def AssignComputeTypePass
    : Pass<"qlora-assign-compute-type", "::mlir::ModuleOp"> {
  let summary = "store and compute the step's activations in bf16";
  let description = [{
    The compute-type decision of targets that run in bf16 (cuda): every
    float tensor of the step becomes bf16, activations, their gradients and
    the frozen dense weights alike, except what the optimizer owns, which
    stays fp32: the adapters (their master weights), the optimizer state,
    the adapter gradients a `qlora.lora_grad` produces and everything
    computed from those (accumulation, clipping, AdamW), the saved
    statistics, and scalars (the loss, the learning rate). bf16 operands with
    fp32 accumulation is the numerics contract; the kernels accumulate in
    fp32 and round each result once. NF4 weights keep their type.

    ```mlir
    // before
    %h = qlora.embedding %ids, %table : (tensor<2x64xi32>, tensor<1024x256xbf16>) -> tensor<2x64x256xf32>
    %dx, %da, %db = qlora.lora_grad %x, %a, %b, %dy {scale = 2.0 : f32} : (tensor<2x64x256xf32>, tensor<8x256xf32>, tensor<256x8xf32>, tensor<2x64x256xf32>) -> (tensor<2x64x256xf32>, tensor<8x256xf32>, tensor<256x8xf32>)
    // after
    %h = qlora.embedding %ids, %table : (tensor<2x64xi32>, tensor<1024x256xbf16>) -> tensor<2x64x256xbf16>
    %dx, %da, %db = qlora.lora_grad %x, %a, %b, %dy {scale = 2.0 : f32} : (tensor<2x64x256xbf16>, tensor<8x256xf32>, tensor<256x8xf32>, tensor<2x64x256xbf16>) -> (tensor<2x64x256xbf16>, tensor<8x256xf32>, tensor<256x8xf32>)
    ```
  }];
  let dependentDialects = ["::mlir::qlora::QLoRADialect"];
}

def SaveForBackwardPass : Pass<"qlora-save-for-backward", "::mlir::ModuleOp"> {
  let summary = "keep the forward's statistics for the backward kernels";
  let description = [{
    Gives a forward op the statistics its backward kernel reads on the
    target (codegen/Target.h), as an extra result the planner sizes and
    keeps alive until the backward, instead of recomputing them there:
    attention's log-sum-exp per query row (every target) and RMSNorm's
    reciprocal RMS per row (cuda). A `qlora.attention_grad` finds its
    forward through its `out` operand; a `qlora.rms_norm_grad` through the
    `qlora.rms_norm` of the same input, weight and eps. A backward op whose
    forward cannot be found is an error.

    ```mlir
    // before
    %o = qlora.attention %q, %k, %v {...} : (...) -> tensor<2x64x256xf32>
    %dq, %dk, %dv = qlora.attention_grad %q, %k, %v, %o, %do {...} : ...
    // after
    %o, %lse = qlora.attention %q, %k, %v {...} : (...) -> (tensor<2x64x256xf32>, tensor<2x4x64xf32>)
    %dq, %dk, %dv = qlora.attention_grad %q, %k, %v, %o, %do saved(%lse) {...} : ...
    ```
  }];
  let dependentDialects = ["::mlir::qlora::QLoRADialect"];
  let options = [
    Option<"target", "target", "std::string", "\"cpu\"",
           "the backend whose kernels read the statistics: cpu or cuda">,
  ];
}

def RematerializePass : Pass<"qlora-rematerialize", "::mlir::ModuleOp"> {
  let summary = "recompute saved activations in the backward until the step "
                "fits a memory budget";
  let description = [{
    Fits `@train_step` into `max-memory` bytes of device memory (accelerate's
    spelling: `6.1GiB`, `48GB` or bytes; `0` leaves the step as it is), as
    the arena plan of `qlora-plan-memory` measures it on `target`, plus
    what the target's runtime holds beside the arena (cuda: 256 MiB).

    A value the forward computes and the backward reads is *saved*. The
    pass ranks every saved value by what recomputing it costs per byte it
    frees: its op and the unsaved forward values that op needs, on the
    target's roofline (codegen/CostModel.h). Saved values of the same op,
    result and cost (one per layer) form a group. Groups are tried cheapest
    first: cheap elementwise results (RMSNorm and SwiGLU outputs) go first,
    projections and attention later, a layer's input last. A group is kept
    recomputed when the plan shrinks with it; the group that reaches the
    budget is cut to the fewest members that do. Every plan is measured by
    planning the rewritten step, never estimated.

    When recomputation alone cannot reach the budget, the saved values it
    leaves kept are offloaded to pinned host memory,
    largest group first: `qlora.offload` after the value's op,
    `qlora.offload_wait` after its last forward reader and after the copy
    is done, `qlora.reload` early enough that the copy is back half its
    time before the first backward reader, and `qlora.reload_wait` before
    that reader, which reads the reloaded tensor from then on. Copies take
    their size over the target's host link speed, one after another on the
    copy stream (in both directions), beside ops that take their roofline
    time.

    The rewrite clones each recomputed value's op right before its first
    backward reader, with its operands recomputed the same way or read
    where they are kept, and marks the clones `qlora.recomputed`. Later
    readers share the clone. Dropout masks are drawn from the op's
    `dropout_stream`, so a recomputed branch sees the forward's mask.

    The plan (what is kept, what is recomputed, the arena before and after
    and the recomputed work) is a remark and the module attribute
    `qlora.rematerialization`. A budget that no plan fits is an error that
    names the named slots' size and the smallest plan found.
  }];
  let dependentDialects = ["::mlir::qlora::QLoRADialect"];
  let options = [
    Option<"maxMemory", "max-memory", "std::string", "\"0\"",
           "the budget: 6.1GiB, 48GB, bytes, or 0 for none">,
    Option<"offloadActivations", "offload-activations", "bool",
           "::qlora::step_option_defaults::offload_activations",
           "offload what recomputation leaves kept to host memory when the "
           "budget needs it">,
    Option<"target", "target", "std::string", "\"cpu\"",
           "the backend whose plan is measured: cpu or cuda">,
  ];
}

#endif // QLORA_PASSES_TD
