// RUN: qlora-opt %s --split-input-file --qlora-quantize-weights | FileCheck %s
// RUN: qlora-opt %s --split-input-file --qlora-quantize-weights="block-size=128 double-quant=false skip-modules=mlp" | FileCheck %s --check-prefix=NODQ
// RUN: qlora-opt %s --split-input-file --qlora-quantize-weights --qlora-fuse-dequant-matmul | FileCheck %s --check-prefix=FUSED

// Tests that the frozen projection weights of the decoder layers become NF4
// (bitsandbytes' defaults: block 64, double quantization in blocks of 256)
// dequantized right before their projection, and that embeddings, norms,
// lm_head, trainable adapters and weights of other ops stay dense.
// CHECK-LABEL: func.func @decoder
// CHECK-SAME: (%[[X:.*]]: tensor<2x8x64xf32>, %[[IDS:.*]]: tensor<2x8xi32>)
// CHECK: qlora.param "model.embed_tokens.weight" : tensor<128x64xbf16>
// CHECK: qlora.param "model.layers.0.input_layernorm.weight" : tensor<64xbf16>
// CHECK: %[[WQ:.*]] = qlora.param "model.layers.0.self_attn.q_proj.weight" : !qlora.nf4<64x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
// CHECK: qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<8x64xf32>
// CHECK: %[[WQD:.*]] = qlora.dequantize %[[WQ]] : !qlora.nf4<64x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>> -> tensor<64x64xbf16>
// CHECK-NEXT: qlora.linear %[[X]], %[[WQD]] : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
// CHECK: %[[WD:.*]] = qlora.param "model.layers.0.mlp.down_proj.weight" : !qlora.nf4<64x688, f16, block = 64, double_quant = #qlora.double_quant<block = 256>>
// CHECK: qlora.dequantize %[[WD]]
// CHECK: qlora.param "lm_head.weight" : tensor<128x64xbf16>
// CHECK-NOT: qlora.dequantize
// CHECK: return
// NODQ-LABEL: func.func @decoder
// NODQ: qlora.param "model.layers.0.self_attn.q_proj.weight" : !qlora.nf4<64x64, bf16, block = 128>
// NODQ: qlora.param "model.layers.0.mlp.down_proj.weight" : tensor<64x688xf16>
// FUSED-LABEL: func.func @decoder
// FUSED: %[[WQ:.*]] = qlora.param "model.layers.0.self_attn.q_proj.weight" : !qlora.nf4
// FUSED-NOT: qlora.dequantize
// FUSED: qlora.nf4_matmul %{{.*}}, %[[WQ]] : (tensor<2x8x64xf32>, !qlora.nf4<64x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>) -> tensor<2x8x64xf32>
func.func @decoder(%x: tensor<2x8x64xf32>, %ids: tensor<2x8xi32>) -> (tensor<2x8x64xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf16>, tensor<2x8x128xf32>) {
  %emb = qlora.param "model.embed_tokens.weight" : tensor<128x64xbf16>
  %h = qlora.embedding %ids, %emb : (tensor<2x8xi32>, tensor<128x64xbf16>) -> tensor<2x8x64xf32>
  %n = qlora.param "model.layers.0.input_layernorm.weight" : tensor<64xbf16>
  %xn = qlora.rms_norm %h, %n {eps = 1.0e-5 : f32} : (tensor<2x8x64xf32>, tensor<64xbf16>) -> tensor<2x8x64xf32>
  %wq = qlora.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
  %a = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<8x64xf32>
  %q = qlora.linear %x, %wq : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
  %xs = qlora.param "model.layers.0.mlp.act_in.weight" : tensor<2x8x688xf16>
  %wd = qlora.param "model.layers.0.mlp.down_proj.weight" : tensor<64x688xf16>
  %d = qlora.linear %xs, %wd : (tensor<2x8x688xf16>, tensor<64x688xf16>) -> tensor<2x8x64xf16>
  %lm = qlora.param "lm_head.weight" : tensor<128x64xbf16>
  %logits = qlora.linear %x, %lm : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
  return %q, %xn, %d, %logits : tensor<2x8x64xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf16>, tensor<2x8x128xf32>
}

// -----

// Tests that a weight with several uses gets one dequantize per use, so each
// projection can fuse its own, and that an odd element count is fine (blocks
// run across rows).
// CHECK-LABEL: func.func @shared
// CHECK: %[[W:.*]] = qlora.param "model.layers.1.self_attn.o_proj.weight" : !qlora.nf4<40x12, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
// CHECK: %[[D1:.*]] = qlora.dequantize %[[W]]
// CHECK-NEXT: qlora.linear %{{.*}}, %[[D1]]
// CHECK: %[[D2:.*]] = qlora.dequantize %[[W]]
// CHECK-NEXT: qlora.linear %{{.*}}, %[[D2]]
// FUSED-LABEL: func.func @shared
// FUSED-COUNT-2: qlora.nf4_matmul
func.func @shared(%x: tensor<3x12xbf16>, %x2: tensor<5x12xbf16>) -> (tensor<3x40xbf16>, tensor<5x40xbf16>) {
  %w = qlora.param "model.layers.1.self_attn.o_proj.weight" : tensor<40x12xbf16>
  %y = qlora.linear %x, %w : (tensor<3x12xbf16>, tensor<40x12xbf16>) -> tensor<3x40xbf16>
  %y2 = qlora.linear %x2, %w : (tensor<5x12xbf16>, tensor<40x12xbf16>) -> tensor<5x40xbf16>
  return %y, %y2 : tensor<3x40xbf16>, tensor<5x40xbf16>
}
