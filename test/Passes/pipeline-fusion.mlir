// RUN: qlora-opt %s --split-input-file --qlora-pipeline="inject-lora=false quantize-weights=false build-train-step=false" | FileCheck %s
// RUN: qlora-opt %s --split-input-file --qlora-pipeline="inject-lora=false quantize-weights=false build-train-step=false fuse-lora=false" | FileCheck %s --check-prefix=NOLORA
// RUN: qlora-opt %s --split-input-file --qlora-fuse-lora --qlora-fuse-dequant-matmul | FileCheck %s

// The fusion stages of qlora-pipeline alone, on graphs that already carry
// their adapters and NF4 weights (pipeline.mlir runs every stage).

// Tests that the pipeline turns one imported, quantized attention projection
// with its LoRA branch into a single lora_linear on the NF4 weight, and that
// running the two fusions in the other order gets the same result.
// CHECK-LABEL: func.func @q_proj
// CHECK-SAME: (%[[X:.*]]: tensor<16x256xbf16>)
// CHECK: %[[W:.*]] = qlora.param "model.layers.0.self_attn.q_proj.weight" : !qlora.nf4<256x256, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
// CHECK: %[[A:.*]] = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable}
// CHECK: %[[B:.*]] = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {trainable}
// CHECK-NOT: qlora.dequantize
// CHECK-NOT: qlora.linear
// CHECK-NOT: qlora.add
// CHECK: %[[Y:.*]] = qlora.lora_linear %[[X]], %[[W]], %[[A]], %[[B]] {scale = 2.000000e+00 : f32}
// CHECK-NEXT: return %[[Y]]
// NOLORA-LABEL: func.func @q_proj
// NOLORA-NOT: qlora.dequantize
// NOLORA: %[[Y0:.*]] = qlora.nf4_matmul
// NOLORA: %[[YL:.*]] = qlora.lora
// NOLORA: qlora.add %[[Y0]], %[[YL]]
func.func @q_proj(%x: tensor<16x256xbf16>) -> tensor<16x256xbf16> {
  %w = qlora.param "model.layers.0.self_attn.q_proj.weight"
         : !qlora.nf4<256x256, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
  %a = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<16x256xf32>
  %b = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {trainable} : tensor<256x16xf32>
  %wd = qlora.dequantize %w : !qlora.nf4<256x256, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>> -> tensor<256x256xbf16>
  %y0 = qlora.linear %x, %wd : (tensor<16x256xbf16>, tensor<256x256xbf16>) -> tensor<16x256xbf16>
  %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32, dropout = 0.0 : f32}
          : (tensor<16x256xbf16>, tensor<16x256xf32>, tensor<256x16xf32>) -> tensor<16x256xbf16>
  %y = qlora.add %y0, %yl : tensor<16x256xbf16>
  return %y : tensor<16x256xbf16>
}

// -----

// Tests that the pipeline leaves a projection whose dequantized weight is
// shared alone, but still fuses its LoRA branch.
// CHECK-LABEL: func.func @shared_dequant
// CHECK: %[[WD:.*]] = qlora.dequantize
// CHECK: %[[Y:.*]] = qlora.lora_linear %{{.*}}, %[[WD]],
// CHECK: return %[[Y]], %[[WD]]
func.func @shared_dequant(%x: tensor<16x256xbf16>, %w: !qlora.nf4<256x256, bf16>, %a: tensor<16x256xf32>, %b: tensor<256x16xf32>) -> (tensor<16x256xbf16>, tensor<256x256xbf16>) {
  %wd = qlora.dequantize %w : !qlora.nf4<256x256, bf16> -> tensor<256x256xbf16>
  %y0 = qlora.linear %x, %wd : (tensor<16x256xbf16>, tensor<256x256xbf16>) -> tensor<16x256xbf16>
  %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<16x256xbf16>, tensor<16x256xf32>, tensor<256x16xf32>) -> tensor<16x256xbf16>
  %y = qlora.add %y0, %yl : tensor<16x256xbf16>
  return %y, %wd : tensor<16x256xbf16>, tensor<256x256xbf16>
}
