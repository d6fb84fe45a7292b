// RUN: qlora-opt %s --split-input-file --qlora-inject-lora="target-modules=q_proj,v_proj lora-alpha=8" | FileCheck %s
// RUN: qlora-opt %s --split-input-file --qlora-inject-lora | FileCheck %s --check-prefix=DEFAULT
// RUN: qlora-opt %s --split-input-file --qlora-inject-lora="r=16 lora-alpha=32 lora-dropout=0.05 use-rslora target-modules=q_proj" | FileCheck %s --check-prefix=RSLORA
// RUN: qlora-opt %s --split-input-file --qlora-inject-lora="r=4 target-modules=all-linear" | FileCheck %s --check-prefix=ALL
// RUN: qlora-opt %s --split-input-file --qlora-inject-lora="target-modules=self_attn.q_proj" | FileCheck %s --check-prefix=SUFFIX

// Tests that PEFT's default targets for Llama (q_proj and v_proj) get
// adapters named as PEFT names them, scaled by lora_alpha / r, and that every
// use of an adapted projection reads the sum; k_proj and o_proj stay plain.
// CHECK: module attributes {qlora.lora_config = #qlora.lora_config<r = 8, lora_alpha = 8.0, lora_dropout = 0.0, use_rslora = false>}
// CHECK-LABEL: func.func @attention_block
// CHECK-SAME: (%[[X:.*]]: tensor<2x8x64xf32>)
// CHECK: %[[WQ:.*]] = qlora.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
// CHECK-NEXT: %[[AQ:.*]] = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<8x64xf32>
// CHECK-NEXT: %[[BQ:.*]] = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {trainable} : tensor<64x8xf32>
// CHECK-NEXT: %[[Q0:.*]] = qlora.linear %[[X]], %[[WQ]]
// CHECK-NEXT: %[[QL:.*]] = qlora.lora %[[X]], %[[AQ]], %[[BQ]] {scale = 1.000000e+00 : f32} : (tensor<2x8x64xf32>, tensor<8x64xf32>, tensor<64x8xf32>) -> tensor<2x8x64xf32>
// CHECK-NEXT: %[[Q:.*]] = qlora.add %[[Q0]], %[[QL]] : tensor<2x8x64xf32>
// CHECK: %[[K:.*]] = qlora.linear %[[X]], %{{.*}} : (tensor<2x8x64xf32>, tensor<32x64xbf16>) -> tensor<2x8x32xf32>
// CHECK-NOT: k_proj.lora
// CHECK: "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight" {trainable} : tensor<8x64xf32>
// CHECK: "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight" {trainable} : tensor<32x8xf32>
// CHECK: %[[V0:.*]] = qlora.linear %[[X]]
// CHECK-NEXT: %[[VL:.*]] = qlora.lora %[[X]]
// CHECK-NEXT: %[[V:.*]] = qlora.add %[[V0]], %[[VL]] : tensor<2x8x32xf32>
// CHECK: qlora.attention %[[Q]], %[[K]], %[[V]]
// CHECK-NOT: o_proj.lora
// CHECK: return
//
// Tests that the defaults are those of runtime/train/StepOptions.def, which
// qlora-compile and qlora-train share: r 8, lora_alpha 16, every linear
// layer.
// DEFAULT: module attributes {qlora.lora_config = #qlora.lora_config<r = 8, lora_alpha = 16.0, lora_dropout = 0.0, use_rslora = false>}
// DEFAULT-LABEL: func.func @attention_block
// DEFAULT-COUNT-4: lora_A.weight" {trainable} : tensor<8x64xf32>
// DEFAULT: return
//
// RSLORA-LABEL: func.func @attention_block
// RSLORA: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<16x64xf32>
// RSLORA: "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {trainable} : tensor<64x16xf32>
// RSLORA: qlora.lora {{.*}} {dropout = 5.000000e-02 : f32, scale = 8.000000e+00 : f32}
// RSLORA-NOT: v_proj.lora
//
// ALL-LABEL: func.func @attention_block
// ALL-COUNT-4: lora_A.weight" {trainable} : tensor<4x64xf32>
// ALL-NOT: lora_A
//
// SUFFIX-LABEL: func.func @attention_block
// SUFFIX: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
// SUFFIX: %[[Q0:.*]] = qlora.linear
// SUFFIX-NEXT: %[[QL:.*]] = qlora.lora
// SUFFIX-NEXT: %[[Q:.*]] = qlora.add %[[Q0]], %[[QL]]
// SUFFIX-NOT: lora_A
// SUFFIX: qlora.attention %[[Q]]
func.func @attention_block(%x: tensor<2x8x64xf32>) -> tensor<2x8x64xf32> {
  %wq = qlora.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
  %q = qlora.linear %x, %wq : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
  %wk = qlora.param "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xbf16>
  %k = qlora.linear %x, %wk : (tensor<2x8x64xf32>, tensor<32x64xbf16>) -> tensor<2x8x32xf32>
  %wv = qlora.param "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xbf16>
  %v = qlora.linear %x, %wv : (tensor<2x8x64xf32>, tensor<32x64xbf16>) -> tensor<2x8x32xf32>
  %a = qlora.attention %q, %k, %v {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32}
         : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x64xf32>
  %wo = qlora.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xbf16>
  %o = qlora.linear %a, %wo : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
  return %o : tensor<2x8x64xf32>
}

// -----

// Tests that all-linear leaves the output layer alone, both lm_head and a
// projection by the tied embedding table, and that a dequantized NF4 base
// weight and an nf4_matmul are adapted like dense ones.
// CHECK-LABEL: func.func @output_layers
// CHECK-SAME: (%[[IDS:.*]]: tensor<2x8xi32>, %[[X:.*]]: tensor<2x8x64xf32>)
// CHECK: %[[WQ:.*]] = qlora.param "model.layers.0.self_attn.q_proj.weight" : !qlora.nf4<64x64, bf16, block = 64>
// CHECK: %[[AQ:.*]] = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<8x64xf32>
// CHECK: %[[BQ:.*]] = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {trainable} : tensor<64x8xf32>
// CHECK: %[[WQD:.*]] = qlora.dequantize %[[WQ]]
// CHECK: %[[Q0:.*]] = qlora.linear %[[X]], %[[WQD]]
// CHECK-NEXT: %[[QL:.*]] = qlora.lora %[[X]], %[[AQ]], %[[BQ]]
// CHECK-NEXT: qlora.add %[[Q0]], %[[QL]]
// CHECK: %[[V0:.*]] = qlora.nf4_matmul %[[X]]
// CHECK-NEXT: %[[VL:.*]] = qlora.lora %[[X]]
// CHECK-NEXT: qlora.add %[[V0]], %[[VL]]
// ALL-LABEL: func.func @output_layers
// ALL: q_proj.lora_A
// ALL: v_proj.lora_A
// ALL: up_proj.lora_A
// ALL-NOT: lm_head.lora
// ALL-NOT: embed_tokens.lora
// ALL: return
func.func @output_layers(%ids: tensor<2x8xi32>, %x: tensor<2x8x64xf32>) -> (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x128xf32>, tensor<2x8x128xf32>, tensor<2x8x128xf32>, tensor<2x8x64xf32>) {
  %wq = qlora.param "model.layers.0.self_attn.q_proj.weight" : !qlora.nf4<64x64, bf16>
  %wqd = qlora.dequantize %wq : !qlora.nf4<64x64, bf16> -> tensor<64x64xbf16>
  %q = qlora.linear %x, %wqd : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
  %wv = qlora.param "model.layers.0.self_attn.v_proj.weight" : !qlora.nf4<32x64, bf16>
  %v = qlora.nf4_matmul %x, %wv : (tensor<2x8x64xf32>, !qlora.nf4<32x64, bf16>) -> tensor<2x8x32xf32>
  %wu = qlora.param "model.layers.0.mlp.up_proj.weight" : tensor<128x64xbf16>
  %u = qlora.linear %x, %wu : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
  %lm = qlora.param "lm_head.weight" : tensor<128x64xbf16>
  %logits = qlora.linear %x, %lm : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
  %emb = qlora.param "model.embed_tokens.weight" : tensor<128x64xbf16>
  %h = qlora.embedding %ids, %emb : (tensor<2x8xi32>, tensor<128x64xbf16>) -> tensor<2x8x64xf32>
  %tied = qlora.linear %x, %emb : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
  return %q, %v, %u, %logits, %tied, %h : tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x128xf32>, tensor<2x8x128xf32>, tensor<2x8x128xf32>, tensor<2x8x64xf32>
}

// -----

// Tests that a projection applied twice shares one adapter but gets a
// branch per application.
// CHECK-LABEL: func.func @shared_weight
// CHECK-SAME: (%[[X:.*]]: tensor<2x8x64xf32>, %[[X2:.*]]: tensor<4x64xf32>)
// CHECK: %[[A:.*]] = qlora.param "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"
// CHECK: %[[B:.*]] = qlora.param "base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight"
// CHECK-NOT: lora_A
// CHECK: qlora.lora %[[X]], %[[A]], %[[B]]
// CHECK: qlora.lora %[[X2]], %[[A]], %[[B]]
func.func @shared_weight(%x: tensor<2x8x64xf32>, %x2: tensor<4x64xf32>) -> (tensor<2x8x64xf32>, tensor<4x64xf32>) {
  %w = qlora.param "model.layers.3.self_attn.q_proj.weight" : tensor<64x64xbf16>
  %y = qlora.linear %x, %w : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
  %y2 = qlora.linear %x2, %w : (tensor<4x64xf32>, tensor<64x64xbf16>) -> tensor<4x64xf32>
  %wv = qlora.param "model.layers.3.self_attn.v_proj.weight" : tensor<64x64xbf16>
  %v = qlora.linear %x, %wv : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
  %wo = qlora.param "model.layers.3.self_attn.o_proj.weight" : tensor<64x64xbf16>
  %o = qlora.linear %v, %wo : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
  return %o, %y2 : tensor<2x8x64xf32>, tensor<4x64xf32>
}
