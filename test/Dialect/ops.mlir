// RUN: qlora-opt %s | qlora-opt | FileCheck %s
// RUN: qlora-opt %s --mlir-print-op-generic | qlora-opt | FileCheck %s

// Round trip of every qlora op, type and attribute: parse, print, parse.

// Tests that the nf4 type prints its defaults and keeps double_quant.
// CHECK-LABEL: func.func @nf4_types
// CHECK-SAME: !qlora.nf4<4096x4096, bf16, block = 64>
// CHECK-SAME: !qlora.nf4<4096x11008, f16, block = 128, double_quant = #qlora.double_quant<block = 256>>
// CHECK-SAME: !qlora.nf4<64, f32, block = 4096, double_quant = #qlora.double_quant<block = 64>>
func.func @nf4_types(
    %a: !qlora.nf4<4096x4096, bf16>,
    %b: !qlora.nf4<4096x11008, f16, block = 128, double_quant = #qlora.double_quant<bits = 8, block = 256>>,
    %c: !qlora.nf4<64, f32, double_quant = #qlora.double_quant<block = 64>, block = 4096>) {
  return
}

// Tests that double_quant fills in bitsandbytes' defaults.
// CHECK-LABEL: func.func @double_quant_defaults
// CHECK-SAME: dq_default = #qlora.double_quant<block = 256>
// CHECK-SAME: dq_empty = #qlora.double_quant<block = 256>
func.func @double_quant_defaults() attributes {
    dq_default = #qlora.double_quant<bits = 8>,
    dq_empty = #qlora.double_quant<>} {
  return
}

// Tests that lora_config keeps every field, in any order, and fills PEFT's
// defaults for the missing ones.
// CHECK-LABEL: func.func @lora_configs
// CHECK-SAME: full = #qlora.lora_config<r = 16, lora_alpha = 32.0, lora_dropout = 0.05, use_rslora = false>
// CHECK-SAME: partial = #qlora.lora_config<r = 8, lora_alpha = 8.0, lora_dropout = 0.0, use_rslora = true>
// CHECK-SAME: reordered = #qlora.lora_config<r = 64, lora_alpha = 1.0e-05, lora_dropout = 0.1, use_rslora = false>
func.func @lora_configs() attributes {
    full = #qlora.lora_config<r = 16, lora_alpha = 32.0, lora_dropout = 0.05, use_rslora = false>,
    partial = #qlora.lora_config<use_rslora = true>,
    reordered = #qlora.lora_config<lora_dropout = 0.1, lora_alpha = 1.0e-5, r = 64>} {
  return
}

// Tests that param round-trips with and without trainable, on tensors and nf4.
// CHECK-LABEL: func.func @params
// CHECK: qlora.param "model.layers.0.self_attn.q_proj.weight" : !qlora.nf4<4096x4096, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
// CHECK: qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<16x4096xf32>
// CHECK: qlora.param "model.norm.weight" : tensor<4096xbf16>
func.func @params() {
  %w = qlora.param "model.layers.0.self_attn.q_proj.weight"
         : !qlora.nf4<4096x4096, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
  %a = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<16x4096xf32>
  %n = qlora.param "model.norm.weight" : tensor<4096xbf16>
  return
}

// Tests that quantize and dequantize round-trip.
// CHECK-LABEL: func.func @quantize_dequantize
// CHECK-SAME: (%[[W:.*]]: tensor<128x64xbf16>)
// CHECK: %[[Q:.*]] = qlora.quantize %[[W]] : tensor<128x64xbf16> -> !qlora.nf4<128x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
// CHECK: qlora.dequantize %[[Q]] : !qlora.nf4<128x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>> -> tensor<128x64xbf16>
func.func @quantize_dequantize(%w: tensor<128x64xbf16>) -> tensor<128x64xbf16> {
  %q = qlora.quantize %w : tensor<128x64xbf16> -> !qlora.nf4<128x64, bf16, double_quant = #qlora.double_quant<block = 256>>
  %d = qlora.dequantize %q : !qlora.nf4<128x64, bf16, double_quant = #qlora.double_quant<block = 256>> -> tensor<128x64xbf16>
  return %d : tensor<128x64xbf16>
}

// Tests that linear round-trips, with and without batch dims.
// CHECK-LABEL: func.func @linear
// CHECK-SAME: (%[[X:.*]]: tensor<8x64xbf16>, %[[XB:.*]]: tensor<2x?x64xbf16>, %[[W:.*]]: tensor<128x64xbf16>)
// CHECK: qlora.linear %[[X]], %[[W]] : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
// CHECK: qlora.linear %[[XB]], %[[W]] : (tensor<2x?x64xbf16>, tensor<128x64xbf16>) -> tensor<2x?x128xbf16>
func.func @linear(%x: tensor<8x64xbf16>, %xb: tensor<2x?x64xbf16>, %w: tensor<128x64xbf16>) {
  %0 = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
  %1 = qlora.linear %xb, %w : (tensor<2x?x64xbf16>, tensor<128x64xbf16>) -> tensor<2x?x128xbf16>
  return
}

// Tests that nf4_matmul round-trips.
// CHECK-LABEL: func.func @nf4_matmul
// CHECK-SAME: (%[[X:.*]]: tensor<4x8x64xbf16>, %[[W:.*]]: !qlora.nf4<128x64, bf16, block = 64>)
// CHECK: qlora.nf4_matmul %[[X]], %[[W]] : (tensor<4x8x64xbf16>, !qlora.nf4<128x64, bf16, block = 64>) -> tensor<4x8x128xbf16>
func.func @nf4_matmul(%x: tensor<4x8x64xbf16>, %w: !qlora.nf4<128x64, bf16>) -> tensor<4x8x128xbf16> {
  %0 = qlora.nf4_matmul %x, %w : (tensor<4x8x64xbf16>, !qlora.nf4<128x64, bf16>) -> tensor<4x8x128xbf16>
  return %0 : tensor<4x8x128xbf16>
}

// Tests that lora round-trips; dropout = 0.0 is the default and is elided.
// CHECK-LABEL: func.func @lora
// CHECK-SAME: (%[[X:.*]]: tensor<8x64xbf16>, %[[A:.*]]: tensor<16x64xf32>, %[[B:.*]]: tensor<128x16xf32>)
// CHECK: qlora.lora %[[X]], %[[A]], %[[B]] {scale = 2.000000e+00 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
// CHECK: qlora.lora %[[X]], %[[A]], %[[B]] {dropout = 5.000000e-02 : f32, scale = 5.000000e-01 : f32}
// CHECK: qlora.lora %[[X]], %[[A]], %[[B]] {scale = 2.000000e+00 : f32}
func.func @lora(%x: tensor<8x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  %0 = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  %1 = qlora.lora %x, %a, %b {scale = 0.5 : f32, dropout = 0.05 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  %2 = qlora.lora %x, %a, %b {scale = 2.0 : f32, dropout = 0.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  return
}

// Tests that lora_linear round-trips with a dense and with an nf4 weight.
// CHECK-LABEL: func.func @lora_linear
// CHECK-SAME: (%[[X:.*]]: tensor<8x64xbf16>, %[[W:.*]]: tensor<128x64xbf16>, %[[Q:.*]]: !qlora.nf4<128x64, bf16, block = 64>, %[[A:.*]]: tensor<16x64xf32>, %[[B:.*]]: tensor<128x16xf32>)
// CHECK: qlora.lora_linear %[[X]], %[[W]], %[[A]], %[[B]] {scale = 2.000000e+00 : f32} : (tensor<8x64xbf16>, tensor<128x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
// CHECK: qlora.lora_linear %[[X]], %[[Q]], %[[A]], %[[B]] {dropout = 1.000000e-01 : f32, scale = 1.000000e+00 : f32} : (tensor<8x64xbf16>, !qlora.nf4<128x64, bf16, block = 64>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
func.func @lora_linear(%x: tensor<8x64xbf16>, %w: tensor<128x64xbf16>, %q: !qlora.nf4<128x64, bf16>,
                       %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  %0 = qlora.lora_linear %x, %w, %a, %b {scale = 2.0 : f32}
         : (tensor<8x64xbf16>, tensor<128x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  %1 = qlora.lora_linear %x, %q, %a, %b {scale = 1.0 : f32, dropout = 0.1 : f32}
         : (tensor<8x64xbf16>, !qlora.nf4<128x64, bf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  return
}

// Tests that add round-trips.
// CHECK-LABEL: func.func @add
// CHECK-SAME: (%[[L:.*]]: tensor<8x128xbf16>, %[[R:.*]]: tensor<8x128xbf16>)
// CHECK: %[[S:.*]] = qlora.add %[[L]], %[[R]] : tensor<8x128xbf16>
// CHECK: return %[[S]]
func.func @add(%l: tensor<8x128xbf16>, %r: tensor<8x128xbf16>) -> tensor<8x128xbf16> {
  %0 = qlora.add %l, %r : tensor<8x128xbf16>
  return %0 : tensor<8x128xbf16>
}
