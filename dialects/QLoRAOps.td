//===- QLoRAOps.td - qlora ops -----------------------------*- tablegen -*-===//
//
// Ops of the qlora dialect, in groups: parameters, quantized weights,
// projections and LoRA branches, elementwise.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_OPS_TD
#define QLORA_OPS_TD

include "QLoRADialect.td"
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

//===----------------------------------------------------------------------===//
// Parameters
//===----------------------------------------------------------------------===//

def QLoRA_ParamOp : QLoRA_Op<"param", [Pure]> {
  let summary = "a reference to a named checkpoint tensor";
  let description = [{
    Names one tensor of the checkpoint or adapter by the key it has in the
    safetensors file, e.g. the Hugging Face name of a base weight or the PEFT
    name of an adapter weight. `trainable` marks adapter parameters that the
    training step updates; NF4 base weights are frozen and cannot be marked.

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

//===----------------------------------------------------------------------===//
// Quantized weights
//===----------------------------------------------------------------------===//

def QLoRA_DequantizeOp : QLoRA_Op<"dequantize", [Pure]> {
  let summary = "expand an NF4 weight to a dense tensor";
  let description = [{
    Restores the original-precision values of an NF4 weight: each 4-bit code
    indexes the NF4 table and is multiplied by its block's absmax (itself
    dequantized first under double quantization). The result has the logical
    shape and original element type of the NF4 type.

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

def QLoRA_LinearOp : QLoRA_Op<"linear", [Pure]> {
  let summary = "a dense projection y = x · wᵀ";
  let description = [{
    Multiplies the activations by the transpose of a weight stored as
    `[out_features, in_features]`, the convention of `torch.nn.Linear`.
    `x` is `[..., M, K]` (leading batch dims are kept), `w` is `[N, K]` and
    the result is `[..., M, N]`. All element types agree; accumulation is in
    fp32.

    In CUDA terms this is one GEMM (cuBLASLt or a wgmma kernel) with the
    weight operand in column-major ("TN") layout.

    ```mlir
    %y = qlora.linear %x, %w : (tensor<8192x4096xbf16>, tensor<11008x4096xbf16>)
           -> tensor<8192x11008xbf16>
    ```
  }];
  let arguments = (ins QLoRA_FloatTensor:$input, QLoRA_FloatTensor:$weight);
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def QLoRA_NF4MatmulOp : QLoRA_Op<"nf4_matmul", [Pure]> {
  let summary = "a projection by an NF4 weight, dequantized on the fly";
  let description = [{
    The fused form of `qlora.dequantize` followed by `qlora.linear`: the same
    `y = x · wᵀ` with `w` given by the logical shape `[N, K]` of an NF4 weight
    whose original element type matches `x`.

    In CUDA terms this is a GEMM whose weight tiles are dequantized from
    packed nibbles in registers or shared memory, never materialized in
    global memory (for large M the compiler may instead dequantize into a
    reused scratch tile and call a tensor-core GEMM; for small M it is a
    bandwidth-bound GEMV).

    ```mlir
    %y = qlora.nf4_matmul %x, %w : (tensor<8192x4096xbf16>, !qlora.nf4<4096x4096, bf16>)
           -> tensor<8192x4096xbf16>
    ```
  }];
  let arguments = (ins QLoRA_FloatTensor:$input, QLoRA_NF4Type:$weight);
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def QLoRA_LoraOp : QLoRA_Op<"lora",
    [DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "a LoRA branch scale · B(A(dropout(x)))";
  let description = [{
    The low-rank update of one adapted projection: dropout (probability
    `dropout`, 0 by default) on the input, a down-projection by `lora_A`
    (`[r, K]`), an up-projection by `lora_B` (`[N, r]`) and a multiplication
    by `scale` (lora_alpha / r, or lora_alpha / sqrt(r) for rsLoRA).
    `x` is `[..., M, K]` and the result `[..., M, N]` in `x`'s element type;
    the adapters may be kept in fp32 (master weights).

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
    DefaultValuedAttr<F32Attr, "0.0f">:$dropout
  );
  let results = (outs QLoRA_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $lora_a `,` $lora_b attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Whether the branch draws dropout masks (and so touches the RNG).
    bool hasDropout() { return !getDropout().isZero(); }
  }];
}

def QLoRA_LoraLinearOp : QLoRA_Op<"lora_linear",
    [DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "a base projection fused with its LoRA branch";
  let description = [{
    `x · wᵀ + scale · B(A(dropout(x)))` in one op: the base weight `w` is a
    dense `[N, K]` tensor or an NF4 weight with that logical shape, and the
    LoRA branch is as in `qlora.lora`. The result is `[..., M, N]`.

    In CUDA terms this is the base GEMM (fused NF4 dequantization when `w` is
    NF4) whose epilogue adds the up-projected LoRA branch, so the two partial
    results never round-trip through global memory separately.

    ```mlir
    %y = qlora.lora_linear %x, %w, %a, %b {scale = 2.0 : f32}
           : (tensor<8192x4096xbf16>, !qlora.nf4<4096x4096, bf16>,
              tensor<16x4096xf32>, tensor<4096x16xf32>) -> tensor<8192x4096xbf16>
    ```
  }];
  let arguments = (ins
    QLoRA_FloatTensor:$input,
    QLoRA_WeightType:$weight,
    QLoRA_FloatTensor:$lora_a,
    QLoRA_FloatTensor:$lora_b,
    F32Attr:$scale,
    DefaultValuedAttr<F32Attr, "0.0f">:$dropout
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
// Elementwise
//===----------------------------------------------------------------------===//

def QLoRA_AddOp : QLoRA_Op<"add", [Pure, Commutative]> {
  let summary = "elementwise addition of two tensors of one type";
  let description = [{
    Adds two tensors of the same type element by element, e.g. a residual
    connection or a base projection plus its LoRA branch (which
    `qlora-fuse-lora` folds into `qlora.lora_linear`).

    In CUDA terms this is a bandwidth-bound elementwise kernel, usually fused
    into the epilogue of whatever produces one of its operands.

    ```mlir
    %y = qlora.add %y0, %yl : tensor<8192x4096xbf16>
    ```
  }];
  let arguments = (ins QLoRA_FloatTensor:$lhs, QLoRA_FloatTensor:$rhs);
  let results = (outs QLoRA_FloatTensor:$result);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
}

#endif // QLORA_OPS_TD
