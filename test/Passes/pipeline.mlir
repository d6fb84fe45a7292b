// RUN: qlora-opt %s --qlora-pipeline="target-modules=q_proj,v_proj lora-alpha=8 max-grad-norm=0" | FileCheck %s
// RUN: qlora-opt %s --qlora-pipeline="target-modules=all-linear r=4 lora-alpha=16 lora-dropout=0.05 double-quant=false max-grad-norm=1.0 weight-decay=0.01" | FileCheck %s --check-prefix=ALL
// RUN: qlora-opt %s --qlora-inject-lora="target-modules=q_proj,v_proj lora-alpha=8" --qlora-quantize-weights --qlora-fuse-dequant-matmul --qlora-fuse-lora --qlora-build-train-step="max-grad-norm=0" | FileCheck %s
// RUN: qlora-opt %s --qlora-pipeline="build-train-step=false fuse-lora=false" | FileCheck %s --check-prefix=NOTRAIN
// RUN: qlora-opt %s --qlora-pipeline="target=cuda" | FileCheck %s --check-prefix=CUDA

// Tests that the whole pipeline turns a one-layer toy Llama forward graph, as
// the importer emits it (fp32 activations, bf16 weights), into PEFT's default
// q/v adapters, NF4 for every projection of the decoder layer, both fusions
// and the training step, and that running the passes one by one gives the
// same IR.
// CHECK-LABEL: func.func @forward() -> tensor<f32>
// CHECK: %[[X:.*]] = qlora.rms_norm
// CHECK: %[[WQ:.*]] = qlora.param "model.layers.0.self_attn.q_proj.weight" : !qlora.nf4<64x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
// CHECK: %[[AQ:.*]] = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<8x64xf32>
// CHECK: %[[BQ:.*]] = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {trainable} : tensor<64x8xf32>
// CHECK: qlora.lora_linear %[[X]], %[[WQ]], %[[AQ]], %[[BQ]] {scale = 1.000000e+00 : f32} : (tensor<2x8x64xf32>, !qlora.nf4<64x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>, tensor<8x64xf32>, tensor<64x8xf32>) -> tensor<2x8x64xf32>
// CHECK: qlora.nf4_matmul %[[X]], %{{.*}} : (tensor<2x8x64xf32>, !qlora.nf4<32x64, bf16
// CHECK: qlora.lora_linear %[[X]], %{{.*}} : (tensor<2x8x64xf32>, !qlora.nf4<32x64, bf16
// CHECK-COUNT-4: qlora.nf4_matmul
// CHECK: %[[LM:.*]] = qlora.param "lm_head.weight" : tensor<128x64xbf16>
// CHECK: qlora.linear %{{.*}}, %[[LM]]
// CHECK-NOT: qlora.dequantize
// CHECK-LABEL: func.func @train_step() -> tensor<f32>
// CHECK: %[[SEED:.*]] = qlora.input "grad_scale"
// CHECK: qlora.cross_entropy_grad %{{.*}}, %{{.*}}, %[[SEED]]
// CHECK: qlora.linear_grad_input %{{.*}}, %[[LM2:.*]] : (tensor<2x8x128xf32>, tensor<128x64xbf16>) -> tensor<2x8x64xf32>
// CHECK: qlora.rms_norm_grad
// CHECK: qlora.linear_grad_input {{.*}} : (tensor<2x8x64xf32>, !qlora.nf4<64x128, bf16
// CHECK: qlora.swiglu_grad
// CHECK: qlora.rms_norm_grad
// CHECK: qlora.attention_grad
// CHECK: qlora.rope_grad
// Each adapter's gradient is accumulated as soon as its lora_grad made it.
// CHECK: qlora.lora_grad
// CHECK-COUNT-2: qlora.assign "grad:base_model.model.model.layers.0.self_attn.v_proj.
// CHECK: qlora.lora_grad
// CHECK-COUNT-2: qlora.assign "grad:base_model.model.model.layers.0.self_attn.q_proj.
// CHECK-LABEL: func.func @apply_gradients()
// CHECK-NOT: qlora.clip_coefficient
// CHECK-COUNT-4: qlora.adamw
//
// ALL-LABEL: func.func @forward
// ALL-COUNT-7: qlora.lora_linear {{.*}} {dropout = 5.000000e-02 : f32, scale = 4.000000e+00 : f32} : (tensor<2x8x{{[0-9]+}}xf32>, !qlora.nf4<{{[0-9]+}}x{{[0-9]+}}, bf16, block = 64>
// ALL-NOT: qlora.nf4_matmul
// ALL: qlora.linear
// ALL-LABEL: func.func @train_step
// ALL-COUNT-7: qlora.lora_grad {{.*}}dropout_stream
// ALL-LABEL: func.func @apply_gradients
// ALL-COUNT-14: qlora.sum_squares
// ALL: qlora.clip_coefficient
// ALL-COUNT-14: qlora.mul
// ALL-COUNT-14: qlora.adamw {{.*}}weight_decay = 0.00999999977 : f32
//
// NOTRAIN-LABEL: func.func @forward
// NOTRAIN: %[[Y0:.*]] = qlora.nf4_matmul
// NOTRAIN: %[[YL:.*]] = qlora.lora
// NOTRAIN: qlora.add %[[Y0]], %[[YL]]
// NOTRAIN-NOT: func.func @train_step
func.func @forward() -> tensor<f32> {
  %ids = qlora.input "input_ids" : tensor<2x8xi32>
  %labels = qlora.input "labels" : tensor<2x8xi32>
  %emb = qlora.param "model.embed_tokens.weight" : tensor<128x64xbf16>
  %h0 = qlora.embedding %ids, %emb : (tensor<2x8xi32>, tensor<128x64xbf16>) -> tensor<2x8x64xf32>
  %n1 = qlora.param "model.layers.0.input_layernorm.weight" : tensor<64xbf16>
  %x1 = qlora.rms_norm %h0, %n1 {eps = 1.0e-05 : f32} : (tensor<2x8x64xf32>, tensor<64xbf16>) -> tensor<2x8x64xf32>
  %wq = qlora.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
  %q = qlora.linear %x1, %wq : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
  %wk = qlora.param "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xbf16>
  %k = qlora.linear %x1, %wk : (tensor<2x8x64xf32>, tensor<32x64xbf16>) -> tensor<2x8x32xf32>
  %wv = qlora.param "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xbf16>
  %v = qlora.linear %x1, %wv : (tensor<2x8x64xf32>, tensor<32x64xbf16>) -> tensor<2x8x32xf32>
  %qr = qlora.rope %q {head_dim = 16 : i64, theta = 10000.0 : f32} : tensor<2x8x64xf32>
  %kr = qlora.rope %k {head_dim = 16 : i64, theta = 10000.0 : f32} : tensor<2x8x32xf32>
  %a = qlora.attention %qr, %kr, %v {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x64xf32>
  %wo = qlora.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xbf16>
  %o = qlora.linear %a, %wo : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
  %h1 = qlora.add %h0, %o : tensor<2x8x64xf32>
  %n2 = qlora.param "model.layers.0.post_attention_layernorm.weight" : tensor<64xbf16>
  %x2 = qlora.rms_norm %h1, %n2 {eps = 1.0e-05 : f32} : (tensor<2x8x64xf32>, tensor<64xbf16>) -> tensor<2x8x64xf32>
  %wg = qlora.param "model.layers.0.mlp.gate_proj.weight" : tensor<128x64xbf16>
  %g = qlora.linear %x2, %wg : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
  %wu = qlora.param "model.layers.0.mlp.up_proj.weight" : tensor<128x64xbf16>
  %u = qlora.linear %x2, %wu : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
  %s = qlora.swiglu %g, %u : tensor<2x8x128xf32>
  %wd = qlora.param "model.layers.0.mlp.down_proj.weight" : tensor<64x128xbf16>
  %d = qlora.linear %s, %wd : (tensor<2x8x128xf32>, tensor<64x128xbf16>) -> tensor<2x8x64xf32>
  %h2 = qlora.add %h1, %d : tensor<2x8x64xf32>
  %nf = qlora.param "model.norm.weight" : tensor<64xbf16>
  %xf = qlora.rms_norm %h2, %nf {eps = 1.0e-05 : f32} : (tensor<2x8x64xf32>, tensor<64xbf16>) -> tensor<2x8x64xf32>
  %lm = qlora.param "lm_head.weight" : tensor<128x64xbf16>
  %logits = qlora.linear %xf, %lm : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
  %loss = qlora.cross_entropy %logits, %labels {ignore_index = -100 : i64} : (tensor<2x8x128xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
//
// Tests that for cuda the step computes in bf16, its backward kernels read
// the forward's saved statistics, and chains of elementwise work (the input
// gradients that several branches add up; the squared norms of the
// gradients) become fused regions.
// CUDA-LABEL: func.func @train_step
// CUDA: qlora.embedding {{.*}} -> tensor<2x8x64xbf16>
// CUDA: qlora.rms_norm_grad {{.*}} saved(
// CUDA: qlora.fused_elementwise({{.*}}) : (tensor<2x8x64xbf16>, tensor<2x8x64xbf16>, tensor<2x8x64xbf16>, tensor<2x8x64xbf16>) -> tensor<2x8x64xbf16>
// CUDA: qlora.attention_grad {{.*}} saved(
// CUDA-LABEL: func.func @apply_gradients
// CUDA: qlora.fused_elementwise({{.*}}) : (tensor<f32>,
