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

// Tests that projections and LoRA branches accept weights stored in another
// precision than the fp32 activations, with an fp32 result.
// CHECK-LABEL: func.func @mixed_precision
// CHECK-SAME: (%[[X:.*]]: tensor<2x8x64xf32>, %[[W:.*]]: tensor<128x64xbf16>, %[[Q:.*]]: !qlora.nf4<128x64, bf16, block = 64>, %[[A:.*]]: tensor<16x64xf32>, %[[B:.*]]: tensor<128x16xf32>)
// CHECK: qlora.linear %[[X]], %[[W]] : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
// CHECK: qlora.nf4_matmul %[[X]], %[[Q]] : (tensor<2x8x64xf32>, !qlora.nf4<128x64, bf16, block = 64>) -> tensor<2x8x128xf32>
// CHECK: qlora.lora_linear %[[X]], %[[Q]], %[[A]], %[[B]] {scale = 2.000000e+00 : f32} : (tensor<2x8x64xf32>, !qlora.nf4<128x64, bf16, block = 64>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<2x8x128xf32>
func.func @mixed_precision(%x: tensor<2x8x64xf32>, %w: tensor<128x64xbf16>, %q: !qlora.nf4<128x64, bf16>,
                           %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  %0 = qlora.linear %x, %w : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
  %1 = qlora.nf4_matmul %x, %q : (tensor<2x8x64xf32>, !qlora.nf4<128x64, bf16>) -> tensor<2x8x128xf32>
  %2 = qlora.lora_linear %x, %q, %a, %b {scale = 2.0 : f32}
         : (tensor<2x8x64xf32>, !qlora.nf4<128x64, bf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<2x8x128xf32>
  return
}

// Tests that a LoRA branch keeps its dropout stream.
// CHECK-LABEL: func.func @dropout_stream
// CHECK: qlora.lora %{{.*}} {dropout = 1.000000e-01 : f32, dropout_stream = 3 : i64, scale = 2.000000e+00 : f32}
func.func @dropout_stream(%x: tensor<8x64xf32>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  %0 = qlora.lora %x, %a, %b {scale = 2.0 : f32, dropout = 0.1 : f32, dropout_stream = 3 : i64}
         : (tensor<8x64xf32>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xf32>
  return
}

// Tests that the network ops of a Llama forward graph round-trip; ignore_index
// = -100 is the default and is elided.
// CHECK-LABEL: func.func @network
// CHECK: %[[IDS:.*]] = qlora.input "input_ids" : tensor<2x64xi32>
// CHECK: %[[LABELS:.*]] = qlora.input "labels" : tensor<2x64xi64>
// CHECK: %[[EMB:.*]] = qlora.param "model.embed_tokens.weight" : tensor<1024x256xbf16>
// CHECK: %[[H:.*]] = qlora.embedding %[[IDS]], %[[EMB]] : (tensor<2x64xi32>, tensor<1024x256xbf16>) -> tensor<2x64x256xf32>
// CHECK: %[[N:.*]] = qlora.param "model.layers.0.input_layernorm.weight" : tensor<256xbf16>
// CHECK: %[[X:.*]] = qlora.rms_norm %[[H]], %[[N]] {eps = 9.99999974E-6 : f32} : (tensor<2x64x256xf32>, tensor<256xbf16>) -> tensor<2x64x256xf32>
// CHECK: %[[QR:.*]] = qlora.rope %[[X]] {head_dim = 64 : i64, theta = 1.000000e+04 : f32} : tensor<2x64x256xf32>
// CHECK: %[[KR:.*]] = qlora.rope %[[K:.*]] {head_dim = 64 : i64, theta = 5.000000e+05 : f32} : tensor<2x64x128xf32>
// CHECK: %[[A:.*]] = qlora.attention %[[QR]], %[[KR]], %[[K]] {head_dim = 64 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 1.250000e-01 : f32} : (tensor<2x64x256xf32>, tensor<2x64x128xf32>, tensor<2x64x128xf32>) -> tensor<2x64x256xf32>
// CHECK: %[[S:.*]] = qlora.swiglu %[[A]], %[[X]] : tensor<2x64x256xf32>
// CHECK: qlora.cross_entropy %[[S]], %[[LABELS]] : (tensor<2x64x256xf32>, tensor<2x64xi64>) -> tensor<f32>
// CHECK: qlora.cross_entropy %[[S]], %[[LABELS]] {ignore_index = 0 : i64} : (tensor<2x64x256xf32>, tensor<2x64xi64>) -> tensor<f32>
func.func @network(%k: tensor<2x64x128xf32>) -> tensor<f32> {
  %ids = qlora.input "input_ids" : tensor<2x64xi32>
  %labels = qlora.input "labels" : tensor<2x64xi64>
  %emb = qlora.param "model.embed_tokens.weight" : tensor<1024x256xbf16>
  %h = qlora.embedding %ids, %emb : (tensor<2x64xi32>, tensor<1024x256xbf16>) -> tensor<2x64x256xf32>
  %n = qlora.param "model.layers.0.input_layernorm.weight" : tensor<256xbf16>
  %x = qlora.rms_norm %h, %n {eps = 1.0e-05 : f32} : (tensor<2x64x256xf32>, tensor<256xbf16>) -> tensor<2x64x256xf32>
  %qr = qlora.rope %x {head_dim = 64 : i64, theta = 10000.0 : f32} : tensor<2x64x256xf32>
  %kr = qlora.rope %k {head_dim = 64 : i64, theta = 500000.0 : f32} : tensor<2x64x128xf32>
  %a = qlora.attention %qr, %kr, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 64 : i64, scale = 0.125 : f32}
         : (tensor<2x64x256xf32>, tensor<2x64x128xf32>, tensor<2x64x128xf32>) -> tensor<2x64x256xf32>
  %s = qlora.swiglu %a, %x : tensor<2x64x256xf32>
  %loss = qlora.cross_entropy %s, %labels {ignore_index = -100 : i64} : (tensor<2x64x256xf32>, tensor<2x64xi64>) -> tensor<f32>
  %loss0 = qlora.cross_entropy %s, %labels {ignore_index = 0 : i64} : (tensor<2x64x256xf32>, tensor<2x64xi64>) -> tensor<f32>
  return %loss : tensor<f32>
}

// Tests that the gradient ops round-trip.
// CHECK-LABEL: func.func @gradients
// CHECK-SAME: (%[[X:.*]]: tensor<2x8x64xf32>, %[[K:.*]]: tensor<2x8x32xf32>, %[[W:.*]]: tensor<64xbf16>, %[[Q:.*]]: !qlora.nf4<128x64, bf16, block = 64>, %[[D:.*]]: tensor<128x64xbf16>, %[[A:.*]]: tensor<8x64xf32>, %[[B:.*]]: tensor<128x8xf32>, %[[DY:.*]]: tensor<2x8x128xf32>, %[[L:.*]]: tensor<2x8xi32>, %[[S:.*]]: tensor<f32>)
// CHECK: qlora.rms_norm_grad %[[X]], %[[W]], %[[X]] {eps = 9.99999997E-7 : f32} : (tensor<2x8x64xf32>, tensor<64xbf16>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
// CHECK: qlora.rope_grad %[[X]] {head_dim = 16 : i64, theta = 1.000000e+04 : f32} : tensor<2x8x64xf32>
// CHECK: qlora.attention_grad %[[X]], %[[K]], %[[K]], %[[X]], %[[X]] {head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 2.500000e-01 : f32} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>)
// CHECK: qlora.swiglu_grad %[[DY]], %[[DY]], %[[DY]] : tensor<2x8x128xf32>
// CHECK: qlora.linear_grad_input %[[DY]], %[[Q]] : (tensor<2x8x128xf32>, !qlora.nf4<128x64, bf16, block = 64>) -> tensor<2x8x64xf32>
// CHECK: qlora.linear_grad_input %[[DY]], %[[D]] : (tensor<2x8x128xf32>, tensor<128x64xbf16>) -> tensor<2x8x64xf32>
// CHECK: qlora.lora_grad %[[X]], %[[A]], %[[B]], %[[DY]] {dropout = 5.000000e-02 : f32, dropout_stream = 0 : i64, scale = 2.000000e+00 : f32} : (tensor<2x8x64xf32>, tensor<8x64xf32>, tensor<128x8xf32>, tensor<2x8x128xf32>) -> (tensor<2x8x64xf32>, tensor<8x64xf32>, tensor<128x8xf32>)
// CHECK: qlora.cross_entropy_grad %[[DY]], %[[L]], %[[S]] : (tensor<2x8x128xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<2x8x128xf32>
func.func @gradients(%x: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>, %w: tensor<64xbf16>, %q: !qlora.nf4<128x64, bf16>,
                     %d: tensor<128x64xbf16>, %a: tensor<8x64xf32>, %b: tensor<128x8xf32>, %dy: tensor<2x8x128xf32>,
                     %l: tensor<2x8xi32>, %s: tensor<f32>) {
  %0 = qlora.rms_norm_grad %x, %w, %x {eps = 1.0e-6 : f32} : (tensor<2x8x64xf32>, tensor<64xbf16>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %1 = qlora.rope_grad %x {head_dim = 16 : i64, theta = 10000.0 : f32} : tensor<2x8x64xf32>
  %2:3 = qlora.attention_grad %x, %k, %k, %x, %x {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32}
           : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>)
           -> (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>)
  %3:2 = qlora.swiglu_grad %dy, %dy, %dy : tensor<2x8x128xf32>
  %4 = qlora.linear_grad_input %dy, %q : (tensor<2x8x128xf32>, !qlora.nf4<128x64, bf16>) -> tensor<2x8x64xf32>
  %5 = qlora.linear_grad_input %dy, %d : (tensor<2x8x128xf32>, tensor<128x64xbf16>) -> tensor<2x8x64xf32>
  %6:3 = qlora.lora_grad %x, %a, %b, %dy {scale = 2.0 : f32, dropout = 0.05 : f32, dropout_stream = 0 : i64}
           : (tensor<2x8x64xf32>, tensor<8x64xf32>, tensor<128x8xf32>, tensor<2x8x128xf32>)
           -> (tensor<2x8x64xf32>, tensor<8x64xf32>, tensor<128x8xf32>)
  %7 = qlora.cross_entropy_grad %dy, %l, %s {ignore_index = -100 : i64} : (tensor<2x8x128xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<2x8x128xf32>
  return
}

// Tests that the state, elementwise and optimizer ops of a training step
// round-trip.
// CHECK-LABEL: func.func @optimizer
// CHECK: %[[LR:.*]] = qlora.input "learning_rate" : tensor<f32>
// CHECK: %[[STEP:.*]] = qlora.input "step" : tensor<f32>
// CHECK: %[[P:.*]] = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<8x64xf32>
// CHECK: %[[G:.*]] = qlora.state "grad:base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" : tensor<8x64xf32>
// CHECK: %[[SQ:.*]] = qlora.sum_squares %[[G]] : tensor<8x64xf32>
// CHECK: %[[TOTAL:.*]] = qlora.add %[[SQ]], %[[SQ]] : tensor<f32>
// CHECK: %[[C:.*]] = qlora.clip_coefficient %[[TOTAL]] {max_norm = 1.000000e+00 : f32}
// CHECK: %[[GC:.*]] = qlora.mul %[[G]], %[[C]] : tensor<8x64xf32>, tensor<f32>
// CHECK: %[[GG:.*]] = qlora.mul %[[G]], %[[G]] : tensor<8x64xf32>, tensor<8x64xf32>
// CHECK: %[[M:.*]] = qlora.state "adam_m:base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" : tensor<8x64xf32>
// CHECK: %[[NP:.*]], %[[NM:.*]], %[[NV:.*]] = qlora.adamw %[[P]], %[[GC]], %[[M]], %[[M]], %[[LR]], %[[STEP]] {beta1 = 0.899999976 : f32, beta2 = 9.990000e-01 : f32, eps = 9.99999993E-9 : f32, weight_decay = 0.00999999977 : f32} : tensor<8x64xf32>
// CHECK: qlora.assign "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", %[[NP]] : tensor<8x64xf32>
// CHECK: %[[Z:.*]] = qlora.fill 0.000000e+00 : tensor<8x64xf32>
// CHECK: qlora.assign "grad:base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", %[[Z]] : tensor<8x64xf32>
func.func @optimizer() {
  %lr = qlora.input "learning_rate" : tensor<f32>
  %step = qlora.input "step" : tensor<f32>
  %p = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<8x64xf32>
  %g = qlora.state "grad:base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" : tensor<8x64xf32>
  %sq = qlora.sum_squares %g : tensor<8x64xf32>
  %total = qlora.add %sq, %sq : tensor<f32>
  %c = qlora.clip_coefficient %total {max_norm = 1.0 : f32}
  %gc = qlora.mul %g, %c : tensor<8x64xf32>, tensor<f32>
  %gg = qlora.mul %g, %g : tensor<8x64xf32>, tensor<8x64xf32>
  %m = qlora.state "adam_m:base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" : tensor<8x64xf32>
  %np, %nm, %nv = qlora.adamw %p, %gc, %m, %m, %lr, %step
      {beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = 1.0e-8 : f32, weight_decay = 0.01 : f32} : tensor<8x64xf32>
  qlora.assign "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", %np : tensor<8x64xf32>
  %z = qlora.fill 0.0 : tensor<8x64xf32>
  qlora.assign "grad:base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", %z : tensor<8x64xf32>
  return
}

// CHECK-LABEL: func.func @offload_and_reload
// CHECK: qlora.offload "offload:0", %{{.*}} {transfer = 0 : i64} : tensor<8x64xbf16>
// CHECK: qlora.offload_wait "offload:0", %{{.*}} {transfer = 0 : i64} : tensor<8x64xbf16>
// CHECK: %[[R:.*]] = qlora.reload "offload:0" {transfer = 1 : i64} : tensor<8x64xbf16>
// CHECK: qlora.reload_wait "offload:0", %[[R]] {transfer = 1 : i64} : tensor<8x64xbf16>
func.func @offload_and_reload(%x: tensor<8x64xbf16>) -> tensor<8x64xbf16> {
  qlora.offload "offload:0", %x {transfer = 0 : i64} : tensor<8x64xbf16>
  qlora.offload_wait "offload:0", %x {transfer = 0 : i64} : tensor<8x64xbf16>
  %r = qlora.reload "offload:0" {transfer = 1 : i64} : tensor<8x64xbf16>
  qlora.reload_wait "offload:0", %r {transfer = 1 : i64} : tensor<8x64xbf16>
  return %r : tensor<8x64xbf16>
}

// Llama 3's rope scaling on rope and its gradient.
// CHECK-LABEL: func.func @rope_llama3
// CHECK: qlora.rope %{{.*}} {head_dim = 64 : i64, rope_scaling = #qlora.rope_llama3<factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192>, theta = 5.000000e+05 : f32}
// CHECK: qlora.rope_grad %{{.*}} {head_dim = 64 : i64, rope_scaling = #qlora.rope_llama3<factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192>, theta = 5.000000e+05 : f32}
func.func @rope_llama3(%x: tensor<2x64x256xf32>) -> (tensor<2x64x256xf32>, tensor<2x64x256xf32>) {
  %y = qlora.rope %x {head_dim = 64 : i64, theta = 500000.0 : f32, rope_scaling = #qlora.rope_llama3<factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192>} : tensor<2x64x256xf32>
  %dx = qlora.rope_grad %x {head_dim = 64 : i64, theta = 500000.0 : f32, rope_scaling = #qlora.rope_llama3<factor = 8, low_freq_factor = 1, high_freq_factor = 4, original_max_position_embeddings = 8192>} : tensor<2x64x256xf32>
  return %y, %dx : tensor<2x64x256xf32>, tensor<2x64x256xf32>
}
