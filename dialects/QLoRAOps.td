//===- QLoRAOps.td - qlora ops -----------------------------*- tablegen -*-===//
//
// Ops of the qlora dialect, in groups: parameters, inputs and state;
// quantized weights; projections and LoRA branches; the network; elementwise;
// gradients; the optimizer.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_OPS_TD
#define QLORA_OPS_TD

include "QLoRADialect.td"
include "QLoRAInterfaces.td"
include "QLoRATypes.td"
include "mlir/IR/OpBase.td"
include "mlir/IR/CommonTypeConstraints.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

/// Activations and adapter weights: ranked tensors of floats.
def QLoRA_FloatTensor : RankedTensorOf<[AnyFloat]>;

/// What `qlora.quantize` accepts: the dtypes bitsandbytes quantizes from.
def QLoRA_QuantizableTensor : RankedTensorOf<[BF16, F16, F32]>;

/// A base weight: a dense float tensor or a frozen NF4 weight.
def QLoRA_WeightType : AnyTypeOf<[QLoRA_FloatTensor, QLoRA_NF4Type],
    "ranked tensor of floats or !qlora.nf4">;

/// What a parameter reference may produce.
def QLoRA_ParamType : AnyTypeOf<[AnyRankedTensor, QLoRA_NF4Type],
    "ranked tensor or !qlora.nf4">;

/// Token ids and labels.
def QLoRA_IndexTensor : RankedTensorOf<[I32, I64]>;

/// A scalar: the loss, its gradient, the learning rate, a norm. Buildable, so
/// the assembly format can leave it out.
def QLoRA_ScalarF32 : 0DTensorOf<[F32]>,
    BuildableType<"::mlir::RankedTensorType::get({}, $_builder.getF32Type())">;

/// The persistent arena of named slots (trainable parameters, accumulated
/// gradients, optimizer moments) that `qlora.state` reads and
/// `qlora.assign` writes.
def QLoRA_StateResource : Resource<"::mlir::qlora::StateResource">;

/// Pinned host memory, beside the device arena, that activations are
/// offloaded to between the forward and the backward.
def QLoRA_HostResource : Resource<"::mlir::qlora::HostResource">;

/// Traits of an op that builds its own gradients.
defvar Differentiable =
    DeclareOpInterfaceMethods<QLoRA_DifferentiableOpInterface>;

//===----------------------------------------------------------------------===//
// Parameters, inputs and state
//===----------------------------------------------------------------------===//

def QLoRA_AssignOp : QLoRA_Op<"assign",
    [MemoryEffects<[MemWrite<QLoRA_StateResource>]>]> {
  let summary = "write a persistent state slot";
  let description = [{
    Stores `value` into the named slot of the persistent arena, where it
    survives to the next call of the compiled step. Slots are named like the
    tensors they hold: a trainable parameter's own name (writing the updated
    adapter weight), `grad:<param>` (accumulated gradient), `adam_m:<param>`
    and `adam_v:<param>` (AdamW moments). Every slot starts zero-filled.

    In CUDA terms this is a device-to-device copy into the slot's buffer, or
    nothing at all once memory planning lets the producer write the slot in
    place.

    ```mlir
    qlora.assign "grad:base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", %g
      : tensor<16x4096xf32>
    ```
  }];
  let arguments = (ins StrAttr:$slot, AnyRankedTensor:$value);
  let assemblyFormat = "$slot `,` $value attr-dict `:` type($value)";
  let hasVerifier = 1;
}

def QLoRA_InputOp : QLoRA_Op<"input", [Pure]> {
  let summary = "a named per-call input of the compiled step";
  let description = [{
    A tensor the host passes on every call of the compiled step: token ids,
    labels, or a scalar such as `learning_rate`, `step` (the 1-based AdamW
    step) or `grad_scale` (the seed of the backward pass, 1 / the number of
    accumulated micro-batches). The name is how the runtime binds it.

    In CUDA terms this is a device pointer the host fills (or passes) before
    launching the step; nothing is computed.

    ```mlir
    %ids = qlora.input "input_ids" : tensor<2x64xi32>
    %lr = qlora.input "learning_rate" : tensor<f32>
    ```
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def QLoRA_ParamOp : QLoRA_Op<"param",
    [DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "a reference to a named checkpoint tensor";
  let description = [{
    Names one tensor of the checkpoint or adapter by the key it has in the
    safetensors file, e.g. the Hugging Face name of a base weight or the PEFT
    name of an adapter weight. `trainable` marks adapter parameters that the
    training step updates; NF4 base weights are frozen and cannot be marked.
    A trainable parameter is also a state slot of the same name, which
    `qlora.assign` writes; reading it is therefore a read of the state.

    In CUDA terms this is a device pointer into the weight arena that the
    runtime fills when it loads the checkpoint; nothing is computed.

    ```mlir
    %w = qlora.param "model.layers.0.self_attn.q_proj.weight"
           : !qlora.nf4<4096x4096, bf16, block = 64>
    %a = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
           {trainable} : tensor<16x4096xf32>
    ```
  }];
  let arguments = (ins StrAttr:$name, UnitAttr:$trainable);
  let results = (outs QLoRA_ParamType:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def QLoRA_StateOp : QLoRA_Op<"state",
    [MemoryEffects<[MemRead<QLoRA_StateResource>]>]> {
  let summary = "read a persistent state slot";
  let description = [{
    Reads the named slot of the persistent arena (see `qlora.assign`): an
    accumulated gradient `grad:<param>` or an AdamW moment
    `adam_m:<param>` / `adam_v:<param>`. A slot that was never assigned
    holds zeros.

    In CUDA terms this is a device pointer into the state arena; nothing is
    computed.

    ```mlir
    %m = qlora.state "adam_m:base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
           : tensor<16x4096xf32>
    ```
  }];
  let arguments = (ins StrAttr:$slot);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$slot attr-dict `:` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Offloading activations to host memory
//===----------------------------------------------------------------------===//

def QLoRA_OffloadOp : QLoRA_Op<"offload",
    [MemoryEffects<[MemWrite<QLoRA_HostResource>]>]> {
  let summary = "start copying an activation to a host slot";
  let description = [{
    Starts copying `value` into the named slot of pinned host memory, from
    which a `qlora.reload` of the same slot brings it back for the backward.
    `qlora-rematerialize` inserts the pair when a saved activation is
    offloaded instead of kept or recomputed. The copy overlaps the work
    after it; `transfer` numbers the copy's events.

    In CUDA terms: an event on the step's stream, a wait for it on the copy
    stream, and a device-to-host `cudaMemcpyAsync` there.

    ```mlir
    qlora.offload "offload:3", %x {transfer = 6 : i64} : tensor<4x2048x4096xbf16>
    ```
  }];
  let arguments = (ins StrAttr:$slot, I64Attr:$transfer,
                       AnyRankedTensor:$value);
  let assemblyFormat = "$slot `,` $value attr-dict `:` type($value)";
  let hasVerifier = 1;
}

def QLoRA_OffloadWaitOp : QLoRA_Op<"offload_wait",
    [MemoryEffects<[MemWrite<QLoRA_HostResource>]>]> {
  let summary = "wait until an offload has left the device";
  let description = [{
    The work after this op waits for the copy that the `qlora.offload` of
    the same `transfer` started, so that `value`'s device memory may be
    reused once this op has run. Placed after the last forward reader.

    ```mlir
    qlora.offload_wait "offload:3", %x {transfer = 6 : i64} : tensor<4x2048x4096xbf16>
    ```
  }];
  let arguments = (ins StrAttr:$slot, I64Attr:$transfer,
                       AnyRankedTensor:$value);
  let assemblyFormat = "$slot `,` $value attr-dict `:` type($value)";
  let hasVerifier = 1;
}

def QLoRA_ReloadOp : QLoRA_Op<"reload",
    [MemoryEffects<[MemRead<QLoRA_HostResource>]>]> {
  let summary = "start copying an offloaded activation back to the device";
  let description = [{
    Starts copying the named host slot into a new device tensor, on the
    copy stream, once the work before this op has run (so that the tensor's
    memory is free). Placed ahead of the backward that reads it, so that the
    copy overlaps the work between; `qlora.reload_wait` marks where the
    tensor must have arrived.

    ```mlir
    %x = qlora.reload "offload:3" {transfer = 7 : i64} : tensor<4x2048x4096xbf16>
    ```
  }];
  let arguments = (ins StrAttr:$slot, I64Attr:$transfer);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$slot attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def QLoRA_ReloadWaitOp : QLoRA_Op<"reload_wait",
    [MemoryEffects<[MemWrite<QLoRA_HostResource>]>]> {
  let summary = "wait until a reloaded activation is on the device";
  let description = [{
    The work after this op waits for the copy that the `qlora.reload` of
    the same `transfer` started into `value`. Placed before the first reader
    of the reloaded tensor.

    ```mlir
    qlora.reload_wait "offload:3", %x {transfer = 7 : i64} : tensor<4x2048x4096xbf16>
    ```
  }];
  let arguments = (ins StrAttr:$slot, I64Attr:$transfer,
                       AnyRankedTensor:$value);
  let assemblyFormat = "$slot `,` $value attr-dict `:` type($value)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Quantized weights
//===----------------------------------------------------------------------===//

def QLoRA_DequantizeOp : QLoRA_Op<"dequantize", [Pure, Differentiable]> {
  let summary = "expand an NF4 weight to a dense tensor";
  let description = [{
    Restores the original-precision values of an NF4 weight: each 4-bit code
    indexes the NF4 table and is multiplied by its block's absmax (itself
    dequantized first under double quantization). The result has the logical
    shape and original element type of the NF4 type. NF4 weights are frozen,
    so no gradient flows back through it.

    In CUDA terms this is bitsandbytes' `dequantize_4bit` kernel writing a
    full dense copy of the weight; `qlora-fuse-dequant-matmul` removes it
    when the only consumer is a projection.

    ```mlir
    %wd = qlora.dequantize %w : !qlora.nf4<4096x4096, bf16> -> tensor<4096x4096xbf16>
    ```
  }];
  let arguments = (ins QLoRA_NF4Type:$input);
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $input attr-dict `:` qualified(type($input)) `->` qualified(type($result))
  }];
  let hasVerifier = 1;
}

def QLoRA_QuantizeOp : QLoRA_Op<"quantize", [Pure]> {
  let summary = "quantize a dense weight to NF4";
  let description = [{
    Quantizes a dense weight blockwise to NF4 with the block size and double
    quantization its result type names, bit-identical to bitsandbytes'
    `quantize_4bit(quant_type="nf4")`. The input must have exactly the
    logical shape and element type of the result.

    In CUDA terms this is one blockwise absmax reduction plus a packing
    kernel, run once when the base weights are loaded.

    ```mlir
    %q = qlora.quantize %w : tensor<4096x4096xbf16>
           -> !qlora.nf4<4096x4096, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
    ```
  }];
  let arguments = (ins QLoRA_QuantizableTensor:$input);
  let results = (outs QLoRA_NF4Type:$result);
  let assemblyFormat = [{
    $input attr-dict `:` qualified(type($input)) `->` qualified(type($result))
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Projections and LoRA branches
//===----------------------------------------------------------------------===//

def QLoRA_LinearOp : QLoRA_Op<"linear", [Pure, Differentiable]> {
  let summary = "a dense projection y = x · wᵀ";
  let description = [{
    Multiplies the activations by the transpose of a weight stored as
    `[out_features, in_features]`, the convention of `torch.nn.Linear`.
    `x` is `[..., M, K]` (leading batch dims are kept), `w` is `[N, K]` and
    the result is `[..., M, N]` in `x`'s element type. The weight may be
    stored in another precision than the activations (fp32 activations with
    a bf16 weight); accumulation is in fp32. The weight is frozen: the
    gradient flows to `x` only.

    In CUDA terms this is one GEMM (cuBLASLt or a wgmma kernel) with the
    weight operand in column-major ("TN") layout.

    ```mlir
    %y = qlora.linear %x, %w : (tensor<2x64x256xf32>, tensor<688x256xbf16>)
           -> tensor<2x64x688xf32>
    ```
  }];
  let arguments = (ins QLoRA_FloatTensor:$input, QLoRA_FloatTensor:$weight);
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let builders = [
    /// Infers the result [..., M, N] in the input's element type.
    OpBuilder<(ins "::mlir::Value":$input, "::mlir::Value":$weight)>
  ];
  let hasVerifier = 1;
}

def QLoRA_NF4MatmulOp : QLoRA_Op<"nf4_matmul", [Pure, Differentiable]> {
  let summary = "a projection by an NF4 weight, dequantized on the fly";
  let description = [{
    The fused form of `qlora.dequantize` followed by `qlora.linear`: the same
    `y = x · wᵀ` with `w` given by the logical shape `[N, K]` of an NF4
    weight. The result has `x`'s element type, whatever the weight's
    original dtype. The gradient flows to `x` only.

    In CUDA terms this is a GEMM whose weight tiles are dequantized from
    packed nibbles in registers or shared memory, never materialized in
    global memory (for large M the compiler may instead dequantize into a
    reused scratch tile and call a tensor-core GEMM; for small M it is a
    bandwidth-bound GEMV).

    ```mlir
    %y = qlora.nf4_matmul %x, %w : (tensor<8192x4096xf32>, !qlora.nf4<4096x4096, bf16>)
           -> tensor<8192x4096xf32>
    ```
  }];
  let arguments = (ins QLoRA_FloatTensor:$input, QLoRA_NF4Type:$weight);
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let builders = [
    /// Infers the result [..., M, N] in the input's element type.
    OpBuilder<(ins "::mlir::Value":$input, "::mlir::Value":$weight)>
  ];
  let hasVerifier = 1;
}

def QLoRA_LoraOp : QLoRA_Op<"lora",
    [DeclareOpInterfaceMethods<MemoryEffectsOpInterface>, Differentiable]> {
  let summary = "a LoRA branch scale · B(A(dropout(x)))";
  let description = [{
    The low-rank update of one adapted projection: dropout (probability
    `dropout`, 0 by default) on the input, a down-projection by `lora_A`
    (`[r, K]`), an up-projection by `lora_B` (`[N, r]`) and a multiplication
    by `scale` (lora_alpha / r, or lora_alpha / sqrt(r) for rsLoRA).
    `x` is `[..., M, K]` and the result `[..., M, N]` in `x`'s element type;
    the adapters may be kept in fp32 (master weights). `dropout_stream`,
    when present, names the RNG subsequence the dropout mask is drawn from,
    so that `qlora.lora_grad` can redraw the same mask.

    In CUDA terms this is two skinny GEMMs (M x K x r, then M x r x N) with
    dropout and scaling fused into their prologue and epilogue. With a
    non-zero dropout the op draws from the step's RNG stream, so it is not
    pure.

    ```mlir
    %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32, dropout = 0.05 : f32}
            : (tensor<8192x4096xbf16>, tensor<16x4096xf32>, tensor<4096x16xf32>)
            -> tensor<8192x4096xbf16>
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$input,
    QLoRA_FloatTensor:$lora_a,
    QLoRA_FloatTensor:$lora_b,
    F32Attr:$scale,
    DefaultValuedAttr<F32Attr, "0.0f">:$dropout,
    OptionalAttr<I64Attr>:$dropout_stream
  );
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $lora_a `,` $lora_b attr-dict `:` functional-type(operands, results)
  }];
  let builders = [
    /// Infers the result [..., M, N] (N from lora_B) in the input's element
    /// type.
    OpBuilder<(ins "::mlir::Value":$input, "::mlir::Value":$loraA,
                   "::mlir::Value":$loraB, "float":$scale,
                   CArg<"float", "0.0f">:$dropout)>
  ];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Whether the branch draws dropout masks (and so touches the RNG).
    bool hasDropout() { return !getDropout().isZero(); }
  }];
}

def QLoRA_LoraLinearOp : QLoRA_Op<"lora_linear",
    [DeclareOpInterfaceMethods<MemoryEffectsOpInterface>, Differentiable]> {
  let summary = "a base projection fused with its LoRA branch";
  let description = [{
    `x · wᵀ + scale · B(A(dropout(x)))` in one op: the base weight `w` is a
    dense `[N, K]` tensor or an NF4 weight with that logical shape, and the
    LoRA branch is as in `qlora.lora`. The result is `[..., M, N]` in `x`'s
    element type. Gradients flow to `x`, `lora_A` and `lora_B`; the base
    weight is frozen.

    In CUDA terms this is the base GEMM (fused NF4 dequantization when `w` is
    NF4) whose epilogue adds the up-projected LoRA branch, so the two partial
    results never round-trip through global memory separately.

    ```mlir
    %y = qlora.lora_linear %x, %w, %a, %b {scale = 2.0 : f32}
           : (tensor<8192x4096xf32>, !qlora.nf4<4096x4096, bf16>,
              tensor<16x4096xf32>, tensor<4096x16xf32>) -> tensor<8192x4096xf32>
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$input,
    QLoRA_WeightType:$weight,
    QLoRA_FloatTensor:$lora_a,
    QLoRA_FloatTensor:$lora_b,
    F32Attr:$scale,
    DefaultValuedAttr<F32Attr, "0.0f">:$dropout,
    OptionalAttr<I64Attr>:$dropout_stream
  );
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight `,` $lora_a `,` $lora_b attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Whether the branch draws dropout masks (and so touches the RNG).
    bool hasDropout() { return !getDropout().isZero(); }
  }];
}

//===----------------------------------------------------------------------===//
// The network
//===----------------------------------------------------------------------===//

def QLoRA_AttentionOp : QLoRA_Op<"attention", [Pure, Differentiable]> {
  let summary = "causal scaled dot-product attention with grouped KV heads";
  let description = [{
    `softmax(scale · q kᵀ + causal mask) v` per head, as HF Llama's
    `sdpa` attention with `is_causal=True`. The heads live side by side in
    the last dimension: `q` is `[..., S, num_heads * head_dim]`, `k` and `v`
    are `[..., S, num_kv_heads * head_dim]`, and query head `h` reads KV head
    `h / (num_heads / num_kv_heads)` (grouped-query attention). Position `i`
    attends to positions `0..i`. The result has `q`'s type, heads again side
    by side, ready for `o_proj`. Softmax runs in fp32.

    In CUDA terms this is one FlashAttention-style kernel (tiles of q in
    shared memory, online softmax, K/V streamed), never materializing the
    S x S scores. qlora-save-for-backward may add a second result, `lse`
    (`[..., num_heads, S]`, f32): the natural log of each query row's
    softmax denominator, which `qlora.attention_grad` then reads instead of
    recomputing the forward.

    ```mlir
    %a = qlora.attention %q, %k, %v
           {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 64 : i64, scale = 0.125 : f32}
           : (tensor<2x64x256xf32>, tensor<2x64x128xf32>, tensor<2x64x128xf32>) -> tensor<2x64x256xf32>
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$q,
    QLoRA_FloatTensor:$k,
    QLoRA_FloatTensor:$v,
    I64Attr:$num_heads,
    I64Attr:$num_kv_heads,
    I64Attr:$head_dim,
    F32Attr:$scale
  );
  let results = (outs QLoRA_FloatTensor:$result,
                      Optional<F32Tensor>:$lse);
  let assemblyFormat = [{
    $q `,` $k `,` $v attr-dict `:` functional-type(operands, results)
  }];
  let builders = [
    /// The result has q's type; no lse unless `saveLse`.
    OpBuilder<(ins "::mlir::Value":$q, "::mlir::Value":$k, "::mlir::Value":$v,
                   "int64_t":$numHeads, "int64_t":$numKvHeads,
                   "int64_t":$headDim, "float":$scale,
                   CArg<"bool", "false">:$saveLse)>
  ];
  let extraClassDeclaration = [{
    /// The type of the saved log-sum-exp, `[..., num_heads, S]` in f32.
    static ::mlir::RankedTensorType lseType(::mlir::RankedTensorType q,
                                            int64_t numHeads);
  }];
  let hasVerifier = 1;
}

def QLoRA_CrossEntropyOp : QLoRA_Op<"cross_entropy", [Pure, Differentiable]> {
  let summary = "the causal language-modelling loss";
  let description = [{
    The loss of Hugging Face's causal LM heads: the logits are shifted by
    one inside the op, so position `t` of a row predicts `labels[t + 1]` of
    the same row and the last position has no target. Targets equal to
    `ignore_index` (-100 by default) are skipped. The result is the mean
    negative log-likelihood over the counted positions, computed in fp32
    with a log-sum-exp over the vocabulary (0 when nothing is counted).
    `logits` is `[..., S, V]` and `labels` is `[..., S]`.

    In CUDA terms this is one kernel per row block: a max / log-sum-exp
    reduction over V, the target's logit, and an atomic (or second-pass)
    sum plus count.

    ```mlir
    %loss = qlora.cross_entropy %logits, %labels {ignore_index = -100 : i64}
              : (tensor<2x64x1024xf32>, tensor<2x64xi32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$logits,
    QLoRA_IndexTensor:$labels,
    DefaultValuedAttr<I64Attr, "-100">:$ignore_index
  );
  let results = (outs QLoRA_ScalarF32:$result);
  let assemblyFormat = [{
    $logits `,` $labels attr-dict `:` functional-type(operands, results)
  }];
  let builders = [
    OpBuilder<(ins "::mlir::Value":$logits, "::mlir::Value":$labels,
                   CArg<"int64_t", "-100">:$ignoreIndex)>
  ];
  let hasVerifier = 1;
}

def QLoRA_EmbeddingOp : QLoRA_Op<"embedding", [Pure, Differentiable]> {
  let summary = "gather rows of an embedding table";
  let description = [{
    Looks every token id up in a `[vocab, hidden]` table: the result is
    `ids.shape + [hidden]`, converted to the result's element type (fp32
    activations from a bf16 table). The table is frozen and ids are
    integers, so no gradient flows back. An id outside `[0, vocab)` is
    undefined behaviour, as in `torch.nn.functional.embedding`.

    In CUDA terms this is a gather kernel: one block per token copying one
    row, converting on the fly.

    ```mlir
    %h = qlora.embedding %ids, %table
           : (tensor<2x64xi32>, tensor<1024x256xbf16>) -> tensor<2x64x256xf32>
    ```
  }];
  let arguments = (ins QLoRA_IndexTensor:$ids, QLoRA_FloatTensor:$table);
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $ids `,` $table attr-dict `:` functional-type(operands, results)
  }];
  let builders = [
    /// Infers `ids.shape + [hidden]` in `elementType` (f32 when null).
    OpBuilder<(ins "::mlir::Value":$ids, "::mlir::Value":$table,
                   CArg<"::mlir::Type", "{}">:$elementType)>
  ];
  let hasVerifier = 1;
}

def QLoRA_RmsNormOp : QLoRA_Op<"rms_norm", [Pure, Differentiable]> {
  let summary = "RMS normalization over the last dimension";
  let description = [{
    `y = x / sqrt(mean(x², last dim) + eps) · weight`, as HF's
    `LlamaRMSNorm`: computed in fp32 and converted to the result type (the
    type of `x`). `weight` is `[hidden]` in any float type; it is frozen, so
    the gradient flows to `x` only.

    In CUDA terms this is one row-wise kernel: a warp or block reduction of
    the squares, then a scaled elementwise pass. qlora-save-for-backward
    may add a second result, `rstd` (f32, one per row): the reciprocal RMS
    that `qlora.rms_norm_grad` then reads.

    ```mlir
    %y = qlora.rms_norm %x, %w {eps = 1.0e-05 : f32}
           : (tensor<2x64x256xf32>, tensor<256xbf16>) -> tensor<2x64x256xf32>
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$input,
    QLoRA_FloatTensor:$weight,
    F32Attr:$eps
  );
  let results = (outs QLoRA_FloatTensor:$result,
                      Optional<F32Tensor>:$rstd);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let builders = [
    /// The result has the input's type; no rstd unless `saveRstd`.
    OpBuilder<(ins "::mlir::Value":$input, "::mlir::Value":$weight,
                   "float":$eps, CArg<"bool", "false">:$saveRstd)>
  ];
  let extraClassDeclaration = [{
    /// The type of the saved reciprocal RMS: the input's shape without its
    /// last dimension, f32.
    static ::mlir::RankedTensorType rstdType(::mlir::RankedTensorType input);
  }];
  let hasVerifier = 1;
}

def QLoRA_RopeOp : QLoRA_Op<"rope", [Pure, Differentiable]> {
  let summary = "rotary position embedding, HF's default rotate_half form";
  let description = [{
    Rotates every head of `x` (`[..., S, heads * head_dim]`) by its
    position `p` in `0..S-1` (dimension -2), as HF Llama's default rotary
    embedding: with `inv_freq[i] = theta^(-2i / head_dim)` for
    `i < head_dim / 2`, angles `p · inv_freq` repeated twice, and
    `rotate_half(x) = cat(-x[half:], x[:half])`,
    `y = x · cos + rotate_half(x) · sin`. The result has `x`'s type. With
    `rope_scaling` (Llama 3), the inverse frequencies are rescaled as
    `#qlora.rope_llama3` describes.

    In CUDA terms this is an elementwise kernel that computes sin/cos on the
    fly (or reads a small [S, head_dim / 2] table) and pairs element `i`
    with element `i + head_dim / 2` of each head.

    ```mlir
    %qr = qlora.rope %q {head_dim = 64 : i64, theta = 10000.0 : f32} : tensor<2x64x256xf32>
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$input,
    I64Attr:$head_dim,
    F32Attr:$theta,
    OptionalAttr<QLoRA_RopeLlama3Attr>:$rope_scaling
  );
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $input attr-dict `:` custom<SameType>(type($input), type($result))
  }];
  let builders = [
    OpBuilder<(ins "::mlir::Value":$input, "int64_t":$headDim,
                   "float":$theta,
                   CArg<"::mlir::qlora::RopeLlama3Attr", "{}">:$ropeScaling)>
  ];
  let hasVerifier = 1;
}

def QLoRA_SwigluOp : QLoRA_Op<"swiglu", [Pure, Differentiable]> {
  let summary = "the SwiGLU gate silu(gate) · up";
  let description = [{
    The gated activation of Llama's MLP: `silu(gate) · up` element by
    element, with `silu(g) = g · sigmoid(g)`. Both operands and the result
    have one type.

    In CUDA terms this is a bandwidth-bound elementwise kernel, or the
    epilogue of the gate/up GEMM.

    ```mlir
    %s = qlora.swiglu %g, %u : tensor<2x64x688xf32>
    ```
  }];
  let arguments = (ins QLoRA_FloatTensor:$gate, QLoRA_FloatTensor:$up);
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $gate `,` $up attr-dict `:`
    custom<SameType>(type($gate), type($up), type($result))
  }];
  let builders = [
    OpBuilder<(ins "::mlir::Value":$gate, "::mlir::Value":$up)>
  ];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

def QLoRA_AddOp : QLoRA_Op<"add", [Pure, Commutative, Differentiable]> {
  let summary = "elementwise addition of two tensors of one type";
  let description = [{
    Adds two tensors of the same type element by element, e.g. a residual
    connection or a base projection plus its LoRA branch (which
    `qlora-fuse-lora` folds into `qlora.lora_linear`), or two gradients that
    fan in.

    In CUDA terms this is a bandwidth-bound elementwise kernel, usually fused
    into the epilogue of whatever produces one of its operands.

    ```mlir
    %y = qlora.add %y0, %yl : tensor<8192x4096xbf16>
    ```
  }];
  let arguments = (ins QLoRA_FloatTensor:$lhs, QLoRA_FloatTensor:$rhs);
  let results = (outs QLoRA_FloatTensor:$result);
  let hasCustomAssemblyFormat = 1;
  let builders = [
    /// The result has the lhs's type.
    OpBuilder<(ins "::mlir::Value":$lhs, "::mlir::Value":$rhs)>
  ];
  let hasVerifier = 1;
}

def QLoRA_FillOp : QLoRA_Op<"fill", [Pure]> {
  let summary = "a tensor with every element set to one value";
  let description = [{
    A statically shaped tensor whose elements all equal `value` (converted to
    the element type): zeros to reset an accumulated gradient, or the seed of
    a backward pass.

    In CUDA terms this is a memset (or a fill kernel for non-zero values).

    ```mlir
    %z = qlora.fill 0.0 : tensor<16x4096xf32>
    ```
  }];
  let arguments = (ins F32Attr:$value);
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = "$value attr-dict `:` type($result)";
  let builders = [
    OpBuilder<(ins "::mlir::Type":$type, "float":$value)>
  ];
  let hasVerifier = 1;
}

def QLoRA_MulOp : QLoRA_Op<"mul", [Pure]> {
  let summary = "elementwise multiplication, optionally by a scalar";
  let description = [{
    Multiplies `lhs` element by element by `rhs`, which has `lhs`'s type or
    is a 0-d tensor (of any float type) broadcast to every element, e.g. the
    fp32 gradient-clipping coefficient. The result has `lhs`'s type; the
    product is computed in fp32.

    In CUDA terms this is a bandwidth-bound elementwise kernel that reads the
    scalar once per thread block.

    ```mlir
    %gc = qlora.mul %g, %coef : tensor<16x4096xf32>, tensor<f32>
    ```
  }];
  let arguments = (ins QLoRA_FloatTensor:$lhs, QLoRA_FloatTensor:$rhs);
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` custom<SameType>(type($lhs), type($result))
    `,` type($rhs)
  }];
  let builders = [
    /// The result has the lhs's type.
    OpBuilder<(ins "::mlir::Value":$lhs, "::mlir::Value":$rhs)>
  ];
  let hasVerifier = 1;
}

def QLoRA_FusedElementwiseOp : QLoRA_Op<"fused_elementwise",
    [Pure, SingleBlockImplicitTerminator<"YieldOp">]> {
  let summary = "a chain of elementwise work in one kernel";
  let description = [{
    The elementwise ops of a region, computed in one pass over the data:
    for every element index, the body maps the inputs' elements (widened to
    f32; a 0-d input is the same scalar for every element) to the results'
    elements (rounded once to each result's element type). Every result
    has the shape of the fusion; every input has it too, or is 0-d.
    qlora-fuse-elementwise builds these from chains of `qlora.add` and
    `qlora.mul`.

    In CUDA terms this is one generated `__global__` kernel with a
    grid-stride loop: each input element is read once and each result
    written once, instead of a round trip through memory per op.

    ```mlir
    %sum = qlora.fused_elementwise (%a, %b, %c) : (tensor<8x64xbf16>, tensor<8x64xbf16>, tensor<8x64xbf16>) -> tensor<8x64xbf16> {
    ^bb0(%x: f32, %y: f32, %z: f32):
      %s = arith.addf %x, %y : f32
      %t = arith.addf %s, %z : f32
      qlora.yield %t : f32
    }
    ```
  }];
  let arguments = (ins Variadic<QLoRA_FloatTensor>:$inputs);
  let results = (outs Variadic<QLoRA_FloatTensor>:$results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    `(` $inputs `)` attr-dict `:` functional-type($inputs, $results) $body
  }];
  let hasVerifier = 1;
}

def QLoRA_YieldOp : QLoRA_Op<"yield",
    [Pure, Terminator, HasParent<"FusedElementwiseOp">]> {
  let summary = "the elements a qlora.fused_elementwise body produces";
  let description = [{
    Ends the body of a `qlora.fused_elementwise` with one f32 value per
    result.

    ```mlir
    qlora.yield %t : f32
    ```
  }];
  let arguments = (ins Variadic<F32>:$values);
  let assemblyFormat = "$values attr-dict `:` type($values)";
  let builders = [OpBuilder<(ins), [{ /* an empty yield */ }]>];
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

def QLoRA_AttentionGradOp : QLoRA_Op<"attention_grad", [Pure]> {
  let summary = "the backward pass of qlora.attention";
  let description = [{
    Given the forward operands `q`, `k`, `v`, the forward result `out` and
    the gradient `dout` of the loss with respect to it, returns the
    gradients with respect to `q`, `k` and `v`, for the same causal GQA
    attention (same attributes). The gradients of query heads that share a
    KV head are summed into that KV head.

    In CUDA terms this is FlashAttention's backward kernel: it recomputes the
    softmax from `q`, `k` and the row statistics, and accumulates dk, dv per
    KV tile. The statistics are the forward's saved `lse` when the op has
    one (`saved(%lse)`, from qlora-save-for-backward); without it a backend
    recomputes them.

    ```mlir
    %dq, %dk, %dv = qlora.attention_grad %q, %k, %v, %out, %dout
           {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 64 : i64, scale = 0.125 : f32}
           : (tensor<2x64x256xf32>, tensor<2x64x128xf32>, tensor<2x64x128xf32>,
              tensor<2x64x256xf32>, tensor<2x64x256xf32>)
           -> (tensor<2x64x256xf32>, tensor<2x64x128xf32>, tensor<2x64x128xf32>)
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$q,
    QLoRA_FloatTensor:$k,
    QLoRA_FloatTensor:$v,
    QLoRA_FloatTensor:$out,
    QLoRA_FloatTensor:$dout,
    Optional<F32Tensor>:$lse,
    I64Attr:$num_heads,
    I64Attr:$num_kv_heads,
    I64Attr:$head_dim,
    F32Attr:$scale
  );
  let results = (outs QLoRA_FloatTensor:$dq, QLoRA_FloatTensor:$dk,
                      QLoRA_FloatTensor:$dv);
  let assemblyFormat = [{
    $q `,` $k `,` $v `,` $out `,` $dout (`saved` `(` $lse^ `)`)? attr-dict
    `:` functional-type(operands, results)
  }];
  let builders = [
    /// dq, dk and dv have the types of q, k and v; `lse` may be null.
    OpBuilder<(ins "::mlir::Value":$q, "::mlir::Value":$k, "::mlir::Value":$v,
                   "::mlir::Value":$out, "::mlir::Value":$dout,
                   "int64_t":$numHeads, "int64_t":$numKvHeads,
                   "int64_t":$headDim, "float":$scale,
                   CArg<"::mlir::Value", "{}">:$lse)>
  ];
  let hasVerifier = 1;
}

def QLoRA_CrossEntropyGradOp : QLoRA_Op<"cross_entropy_grad", [Pure]> {
  let summary = "the backward pass of qlora.cross_entropy";
  let description = [{
    The gradient of the shifted, masked, mean cross-entropy with respect to
    the logits, scaled by `dloss` (the gradient of the final objective with
    respect to the loss): for a counted position `t` with target
    `y = labels[t + 1]`, `(softmax(logits[t]) - onehot(y)) · dloss / count`;
    zero for the last position of each row and for ignored targets. The
    result has the logits' type.

    In CUDA terms this is one row-wise kernel (recompute the log-sum-exp,
    write softmax minus one-hot), usually fused with the lm_head's backward
    GEMM.

    ```mlir
    %dlogits = qlora.cross_entropy_grad %logits, %labels, %dloss {ignore_index = -100 : i64}
                 : (tensor<2x64x1024xf32>, tensor<2x64xi32>, tensor<f32>) -> tensor<2x64x1024xf32>
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$logits,
    QLoRA_IndexTensor:$labels,
    QLoRA_ScalarF32:$dloss,
    DefaultValuedAttr<I64Attr, "-100">:$ignore_index
  );
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $logits `,` $labels `,` $dloss attr-dict `:`
    functional-type(operands, results)
  }];
  let builders = [
    /// The result has the logits' type.
    OpBuilder<(ins "::mlir::Value":$logits, "::mlir::Value":$labels,
                   "::mlir::Value":$dloss, CArg<"int64_t", "-100">:$ignoreIndex)>
  ];
  let hasVerifier = 1;
}

def QLoRA_LmHeadLossOp : QLoRA_Op<"lm_head_loss", [Pure]> {
  let summary = "the lm_head, its loss and the loss's input gradient, fused";
  let description = [{
    What `qlora.linear` (the lm_head), `qlora.cross_entropy`,
    `qlora.cross_entropy_grad` and `qlora.linear_grad_input` compute
    together: for `input` `[..., S, H]`, the head `weight` `[V, H]` and
    `labels` `[..., S]`, `loss` is the mean shifted cross-entropy of
    `input · weightᵀ` and `dinput` its gradient with respect to `input`,
    scaled by `dloss`. The logits exist only `chunk_rows` rows at a time, so
    the op never holds the batch's logits (2 GiB in bf16 at 8192 tokens
    and a 128,256-word vocabulary). `qlora-fuse-lm-head-loss` forms it.

    ```mlir
    %loss, %dx = qlora.lm_head_loss %x, %w, %labels, %dloss {chunk_rows = 64 : i64}
        : (tensor<2x64x256xbf16>, tensor<1024x256xbf16>, tensor<2x64xi32>, tensor<f32>)
        -> (tensor<f32>, tensor<2x64x256xbf16>)
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$input,
    QLoRA_FloatTensor:$weight,
    QLoRA_IndexTensor:$labels,
    QLoRA_ScalarF32:$dloss,
    DefaultValuedAttr<I64Attr, "-100">:$ignore_index,
    I64Attr:$chunk_rows
  );
  let results = (outs QLoRA_ScalarF32:$loss, QLoRA_FloatTensor:$dinput);
  let assemblyFormat = [{
    $input `,` $weight `,` $labels `,` $dloss attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def QLoRA_LinearGradInputOp : QLoRA_Op<"linear_grad_input", [Pure]> {
  let summary = "the input gradient of a projection, dx = dy · w";
  let description = [{
    The gradient of `y = x · wᵀ` with respect to `x`: `dy` is `[..., M, N]`,
    `w` is `[N, K]` (a dense tensor in any float type, or an NF4 weight with
    that logical shape) and the result `[..., M, K]` in `dy`'s element type.
    It is how gradients flow through the frozen base weights to the adapters
    of earlier layers.

    In CUDA terms this is one GEMM with the weight in row-major ("NN")
    layout, dequantizing NF4 tiles on the fly like `qlora.nf4_matmul`.

    ```mlir
    %dx = qlora.linear_grad_input %dy, %w
            : (tensor<2x64x688xf32>, !qlora.nf4<688x256, bf16, block = 64>) -> tensor<2x64x256xf32>
    ```
  }];
  let arguments = (ins QLoRA_FloatTensor:$dy, QLoRA_WeightType:$weight);
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $dy `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let builders = [
    /// Infers [..., M, K] in dy's element type.
    OpBuilder<(ins "::mlir::Value":$dy, "::mlir::Value":$weight)>
  ];
  let hasVerifier = 1;
}

def QLoRA_LoraGradOp : QLoRA_Op<"lora_grad",
    [DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "the backward pass of a LoRA branch";
  let description = [{
    For the branch `y = scale · (dropout(x) · Aᵀ) · Bᵀ` of `qlora.lora`
    (same `scale`, `dropout` and `dropout_stream`) and the gradient `dy` of
    the loss with respect to `y`, returns `dx`, `dA` and `dB`:
    with `h = dropout(x) · Aᵀ` (`[..., M, r]`) and `dh = scale · dy · B`,
    `dB = scale · dyᵀ h`, `dA = dhᵀ dropout(x)` (both summed over every
    leading dimension), and `dx = dropout_mask(dh · A)`. The types are those
    of `x`, `lora_A` and `lora_B`. With dropout, the mask is the one the
    forward op drew from the same `dropout_stream`.

    In CUDA terms this is a handful of skinny GEMMs (recomputing `h`, or
    reading it back from the forward pass) with the scale and mask fused.

    ```mlir
    %dx, %da, %db = qlora.lora_grad %x, %a, %b, %dy {scale = 2.0 : f32}
           : (tensor<2x64x256xf32>, tensor<8x256xf32>, tensor<256x8xf32>, tensor<2x64x256xf32>)
           -> (tensor<2x64x256xf32>, tensor<8x256xf32>, tensor<256x8xf32>)
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$input,
    QLoRA_FloatTensor:$lora_a,
    QLoRA_FloatTensor:$lora_b,
    QLoRA_FloatTensor:$dy,
    F32Attr:$scale,
    DefaultValuedAttr<F32Attr, "0.0f">:$dropout,
    OptionalAttr<I64Attr>:$dropout_stream
  );
  let results = (outs QLoRA_FloatTensor:$dx, QLoRA_FloatTensor:$da,
                      QLoRA_FloatTensor:$db);
  let assemblyFormat = [{
    $input `,` $lora_a `,` $lora_b `,` $dy attr-dict `:`
    functional-type(operands, results)
  }];
  let builders = [
    /// dx, dA and dB have the types of x, lora_A and lora_B.
    OpBuilder<(ins "::mlir::Value":$input, "::mlir::Value":$loraA,
                   "::mlir::Value":$loraB, "::mlir::Value":$dy,
                   "::mlir::FloatAttr":$scale, "::mlir::FloatAttr":$dropout,
                   "::mlir::IntegerAttr":$dropoutStream)>
  ];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Whether the branch redraws dropout masks (and so reads the RNG).
    bool hasDropout() { return !getDropout().isZero(); }
  }];
}

def QLoRA_RmsNormGradOp : QLoRA_Op<"rms_norm_grad", [Pure]> {
  let summary = "the input gradient of qlora.rms_norm";
  let description = [{
    The gradient of `y = x · rsqrt(mean(x²) + eps) · w` with respect to `x`,
    given the forward operands and `dy`: with `r = rsqrt(mean(x²) + eps)`
    and `g = dy · w`, `dx = r · (g - x · r² · mean(g · x))` row by row, in
    fp32. The result has `x`'s type (the norm weight is frozen: no dw).

    In CUDA terms this is one row-wise kernel with two reductions; with the
    forward's saved `rstd` (`saved(%rstd)`), one.

    ```mlir
    %dx = qlora.rms_norm_grad %x, %w, %dy {eps = 1.0e-05 : f32}
            : (tensor<2x64x256xf32>, tensor<256xbf16>, tensor<2x64x256xf32>) -> tensor<2x64x256xf32>
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$input,
    QLoRA_FloatTensor:$weight,
    QLoRA_FloatTensor:$dy,
    Optional<F32Tensor>:$rstd,
    F32Attr:$eps
  );
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight `,` $dy (`saved` `(` $rstd^ `)`)? attr-dict `:`
    functional-type(operands, results)
  }];
  let builders = [
    /// The result has the input's type; `rstd` may be null.
    OpBuilder<(ins "::mlir::Value":$input, "::mlir::Value":$weight,
                   "::mlir::Value":$dy, "float":$eps,
                   CArg<"::mlir::Value", "{}">:$rstd)>
  ];
  let hasVerifier = 1;
}

def QLoRA_RopeGradOp : QLoRA_Op<"rope_grad", [Pure]> {
  let summary = "the backward pass of qlora.rope";
  let description = [{
    The gradient of the rotary embedding with respect to its input: the
    rotation by the opposite angle, `dx = dy · cos - rotate_half(dy) · sin`
    with the angles of `qlora.rope` (same `head_dim` and `theta`). The
    result has `dy`'s type.

    In CUDA terms this is the forward rope kernel with the sign of sin
    flipped.

    ```mlir
    %dx = qlora.rope_grad %dy {head_dim = 64 : i64, theta = 10000.0 : f32} : tensor<2x64x256xf32>
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$dy,
    I64Attr:$head_dim,
    F32Attr:$theta,
    OptionalAttr<QLoRA_RopeLlama3Attr>:$rope_scaling
  );
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $dy attr-dict `:` custom<SameType>(type($dy), type($result))
  }];
  let builders = [
    OpBuilder<(ins "::mlir::Value":$dy, "int64_t":$headDim,
                   "float":$theta,
                   CArg<"::mlir::qlora::RopeLlama3Attr", "{}">:$ropeScaling)>
  ];
  let hasVerifier = 1;
}

def QLoRA_SwigluGradOp : QLoRA_Op<"swiglu_grad", [Pure]> {
  let summary = "the backward pass of qlora.swiglu";
  let description = [{
    Given the forward operands and `dout`, returns
    `dgate = dout · up · sigmoid(gate) · (1 + gate · (1 - sigmoid(gate)))`
    and `dup = dout · silu(gate)`. Every operand and result has one type.

    In CUDA terms this is one elementwise kernel with two outputs.

    ```mlir
    %dg, %du = qlora.swiglu_grad %g, %u, %ds : tensor<2x64x688xf32>
    ```
  }];
  let arguments = (ins QLoRA_FloatTensor:$gate, QLoRA_FloatTensor:$up,
                       QLoRA_FloatTensor:$dout);
  let results = (outs QLoRA_FloatTensor:$dgate, QLoRA_FloatTensor:$dup);
  let assemblyFormat = [{
    $gate `,` $up `,` $dout attr-dict `:`
    custom<SameType>(type($gate), type($up), type($dout), type($dgate),
                     type($dup))
  }];
  let builders = [
    OpBuilder<(ins "::mlir::Value":$gate, "::mlir::Value":$up,
                   "::mlir::Value":$dout)>
  ];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

def QLoRA_AdamWOp : QLoRA_Op<"adamw", [Pure]> {
  let summary = "one AdamW update of a parameter and its moments";
  let description = [{
    `torch.optim.AdamW` (amsgrad off, not maximizing) for one parameter, at
    the 1-based step `step` with learning rate `lr` (both 0-d f32 tensors
    passed per call):

    ```
    param' = param · (1 - lr · weight_decay)
    m'     = beta1 · m + (1 - beta1) · grad
    v'     = beta2 · v + (1 - beta2) · grad²
    param' = param' - lr / (1 - beta1^step) · m' / (sqrt(v') / sqrt(1 - beta2^step) + eps)
    ```

    Returns the new parameter and moments; `param`, `grad`, `m`, `v` and the
    results all have one type.

    In CUDA terms this is one fused elementwise kernel over the parameter
    (torch's `_fused_adamw`), a few FLOPs per byte.

    ```mlir
    %p2, %m2, %v2 = qlora.adamw %p, %g, %m, %v, %lr, %step
        {beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = 1.0e-08 : f32, weight_decay = 0.0 : f32}
        : tensor<16x4096xf32>
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$param,
    QLoRA_FloatTensor:$grad,
    QLoRA_FloatTensor:$m,
    QLoRA_FloatTensor:$v,
    QLoRA_ScalarF32:$lr,
    QLoRA_ScalarF32:$step,
    F32Attr:$beta1,
    F32Attr:$beta2,
    F32Attr:$eps,
    F32Attr:$weight_decay
  );
  let results = (outs QLoRA_FloatTensor:$new_param, QLoRA_FloatTensor:$new_m,
                      QLoRA_FloatTensor:$new_v);
  let assemblyFormat = [{
    $param `,` $grad `,` $m `,` $v `,` $lr `,` $step attr-dict `:`
    custom<SameType>(type($param), type($grad), type($m), type($v),
                     type($new_param), type($new_m), type($new_v))
  }];
  let builders = [
    /// The results have the parameter's type.
    OpBuilder<(ins "::mlir::Value":$param, "::mlir::Value":$grad,
                   "::mlir::Value":$m, "::mlir::Value":$v, "::mlir::Value":$lr,
                   "::mlir::Value":$step, "float":$beta1, "float":$beta2,
                   "float":$eps, "float":$weightDecay)>
  ];
  let hasVerifier = 1;
}

def QLoRA_ClipCoefficientOp : QLoRA_Op<"clip_coefficient", [Pure]> {
  let summary = "the gradient-clipping factor of a global norm";
  let description = [{
    Given the sum of squares of every gradient (`qlora.sum_squares`, added
    up), returns `min(1, max_norm / (sqrt(total) + 1e-6))`, the factor by
    which `torch.nn.utils.clip_grad_norm_` multiplies every gradient.

    In CUDA terms this is a single-thread kernel (or it is folded into the
    kernel that finishes the norm reduction).

    ```mlir
    %c = qlora.clip_coefficient %total {max_norm = 1.0 : f32}
    ```
  }];
  let arguments = (ins QLoRA_ScalarF32:$total, F32Attr:$max_norm);
  let results = (outs QLoRA_ScalarF32:$result);
  let assemblyFormat = "$total attr-dict";
  let builders = [
    OpBuilder<(ins "::mlir::Value":$total, "float":$maxNorm)>
  ];
  let hasVerifier = 1;
}

def QLoRA_SumSquaresOp : QLoRA_Op<"sum_squares", [Pure]> {
  let summary = "the sum of the squares of every element";
  let description = [{
    Returns `sum(x²)` over all elements of a tensor as a 0-d f32 tensor,
    accumulated in fp32: one term of a global gradient norm.

    In CUDA terms this is a grid-wide reduction (block partial sums, then a
    second pass or atomics).

    ```mlir
    %s = qlora.sum_squares %g : tensor<16x4096xf32>
    ```
  }];
  let arguments = (ins QLoRA_FloatTensor:$input);
  let results = (outs QLoRA_ScalarF32:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let builders = [
    OpBuilder<(ins "::mlir::Value":$input)>
  ];
}

#endif // QLORA_OPS_TD
