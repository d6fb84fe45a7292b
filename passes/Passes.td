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

#endif // QLORA_PASSES_TD
