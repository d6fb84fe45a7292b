// RUN: qlora-opt %s --split-input-file --qlora-build-train-step="max-grad-norm=0" | FileCheck %s
// RUN: qlora-opt %s --split-input-file --qlora-build-train-step | FileCheck %s --check-prefix=DEFAULT
// RUN: qlora-opt %s --split-input-file --qlora-build-train-step="max-grad-norm=1.0 adam-beta1=0.8 adam-beta2=0.95 adam-epsilon=1e-6 weight-decay=0.01" | FileCheck %s --check-prefix=CLIP

// Tests that a LoRA branch on the logits gets its gradients from the loss
// seeded by the host's grad_scale, that the frozen embedding and base weight
// get none (and no dx is propagated to the inactive input), that both
// adapters accumulate into grad:<name>, and that apply_gradients runs AdamW
// on each and resets its gradient. @forward is kept as it was.
// CHECK-LABEL: func.func @forward() -> tensor<f32>
// CHECK-NOT: qlora.cross_entropy_grad
// CHECK: return
// CHECK-LABEL: func.func @train_step() -> tensor<f32>
// CHECK: %[[LABELS:.*]] = qlora.input "labels"
// CHECK: %[[X:.*]] = qlora.embedding
// CHECK: %[[A:.*]] = qlora.param "base_model.model.lm.lora_A.weight" {trainable} : tensor<4x16xf32>
// CHECK: %[[B:.*]] = qlora.param "base_model.model.lm.lora_B.weight" {trainable} : tensor<32x4xf32>
// CHECK: %[[LOGITS:.*]] = qlora.add
// CHECK: %[[LOSS:.*]] = qlora.cross_entropy %[[LOGITS]], %[[LABELS]]
// CHECK: %[[SEED:.*]] = qlora.input "grad_scale" : tensor<f32>
// CHECK: %[[DLOGITS:.*]] = qlora.cross_entropy_grad %[[LOGITS]], %[[LABELS]], %[[SEED]] {ignore_index = 0 : i64}
// CHECK-NOT: qlora.linear_grad_input
// CHECK: %[[DX:.*]], %[[DA:.*]], %[[DB:.*]] = qlora.lora_grad %[[X]], %[[A]], %[[B]], %[[DLOGITS]] {scale = 2.000000e+00 : f32}
// CHECK: %[[GA:.*]] = qlora.state "grad:base_model.model.lm.lora_A.weight" : tensor<4x16xf32>
// CHECK: %[[SA:.*]] = qlora.add %[[GA]], %[[DA]] : tensor<4x16xf32>
// CHECK: qlora.assign "grad:base_model.model.lm.lora_A.weight", %[[SA]] : tensor<4x16xf32>
// CHECK: %[[GB:.*]] = qlora.state "grad:base_model.model.lm.lora_B.weight" : tensor<32x4xf32>
// CHECK: %[[SB:.*]] = qlora.add %[[GB]], %[[DB]] : tensor<32x4xf32>
// CHECK: qlora.assign "grad:base_model.model.lm.lora_B.weight", %[[SB]] : tensor<32x4xf32>
// CHECK: return %[[LOSS]] : tensor<f32>
// CHECK-LABEL: func.func @apply_gradients()
// CHECK: %[[LR:.*]] = qlora.input "learning_rate" : tensor<f32>
// CHECK: %[[STEP:.*]] = qlora.input "step" : tensor<f32>
// CHECK: %[[GRADA:.*]] = qlora.state "grad:base_model.model.lm.lora_A.weight" : tensor<4x16xf32>
// CHECK: %[[GRADB:.*]] = qlora.state "grad:base_model.model.lm.lora_B.weight" : tensor<32x4xf32>
// CHECK-NOT: qlora.clip_coefficient
// CHECK: %[[PA:.*]] = qlora.param "base_model.model.lm.lora_A.weight" {trainable} : tensor<4x16xf32>
// CHECK: %[[MA:.*]] = qlora.state "adam_m:base_model.model.lm.lora_A.weight" : tensor<4x16xf32>
// CHECK: %[[VA:.*]] = qlora.state "adam_v:base_model.model.lm.lora_A.weight" : tensor<4x16xf32>
// CHECK: %[[NP:.*]], %[[NM:.*]], %[[NV:.*]] = qlora.adamw %[[PA]], %[[GRADA]], %[[MA]], %[[VA]], %[[LR]], %[[STEP]] {beta1 = 0.899999976 : f32, beta2 = 9.990000e-01 : f32, eps = 9.99999993E-9 : f32, weight_decay = 0.000000e+00 : f32} : tensor<4x16xf32>
// CHECK: qlora.assign "base_model.model.lm.lora_A.weight", %[[NP]] : tensor<4x16xf32>
// CHECK: qlora.assign "adam_m:base_model.model.lm.lora_A.weight", %[[NM]] : tensor<4x16xf32>
// CHECK: qlora.assign "adam_v:base_model.model.lm.lora_A.weight", %[[NV]] : tensor<4x16xf32>
// CHECK: %[[ZERO:.*]] = qlora.fill 0.000000e+00 : tensor<4x16xf32>
// CHECK: qlora.assign "grad:base_model.model.lm.lora_A.weight", %[[ZERO]] : tensor<4x16xf32>
// CHECK: qlora.adamw %{{.*}}, %[[GRADB]]
// CHECK: return
// Tests that the default clips at the global norm 1.0, as TrainingArguments
// and every qlora tool do (runtime/train/StepOptions.def).
// DEFAULT-LABEL: func.func @apply_gradients()
// DEFAULT: qlora.clip_coefficient %{{.*}} {max_norm = 1.000000e+00 : f32}
//
// CLIP-LABEL: func.func @apply_gradients()
// CLIP: %[[GA:.*]] = qlora.state "grad:base_model.model.lm.lora_A.weight"
// CLIP: %[[GB:.*]] = qlora.state "grad:base_model.model.lm.lora_B.weight"
// CLIP: %[[SA:.*]] = qlora.sum_squares %[[GA]] : tensor<4x16xf32>
// CLIP: %[[SB:.*]] = qlora.sum_squares %[[GB]] : tensor<32x4xf32>
// CLIP: %[[TOTAL:.*]] = qlora.add %[[SA]], %[[SB]] : tensor<f32>
// CLIP: %[[C:.*]] = qlora.clip_coefficient %[[TOTAL]] {max_norm = 1.000000e+00 : f32}
// CLIP: %[[CA:.*]] = qlora.mul %[[GA]], %[[C]] : tensor<4x16xf32>, tensor<f32>
// CLIP: %[[CB:.*]] = qlora.mul %[[GB]], %[[C]] : tensor<32x4xf32>, tensor<f32>
// CLIP: qlora.adamw %{{.*}}, %[[CA]], {{.*}} {beta1 = 8.000000e-01 : f32, beta2 = 0.949999988 : f32, eps = 9.99999997E-7 : f32, weight_decay = 0.00999999977 : f32}
// CLIP: qlora.adamw %{{.*}}, %[[CB]],
func.func @forward() -> tensor<f32> {
  %ids = qlora.input "input_ids" : tensor<2x8xi32>
  %labels = qlora.input "labels" : tensor<2x8xi32>
  %emb = qlora.param "model.embed_tokens.weight" : tensor<32x16xbf16>
  %x = qlora.embedding %ids, %emb : (tensor<2x8xi32>, tensor<32x16xbf16>) -> tensor<2x8x16xf32>
  %w = qlora.param "lm.weight" : tensor<32x16xbf16>
  %a = qlora.param "base_model.model.lm.lora_A.weight" {trainable} : tensor<4x16xf32>
  %b = qlora.param "base_model.model.lm.lora_B.weight" {trainable} : tensor<32x4xf32>
  %y0 = qlora.linear %x, %w : (tensor<2x8x16xf32>, tensor<32x16xbf16>) -> tensor<2x8x32xf32>
  %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<2x8x16xf32>, tensor<4x16xf32>, tensor<32x4xf32>) -> tensor<2x8x32xf32>
  %logits = qlora.add %y0, %yl : tensor<2x8x32xf32>
  %loss = qlora.cross_entropy %logits, %labels {ignore_index = 0 : i64} : (tensor<2x8x32xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Tests the attention path: a fused LoRA projection (lora_linear) on q, rope,
// grouped-query attention and an NF4 o_proj. dq flows back through rope_grad
// into the adapter; the frozen k/v projections and the NF4 weights get no
// gradient, while dX flows through the NF4 o_proj by linear_grad_input.
// CHECK-LABEL: func.func @train_step
// CHECK: %[[X:.*]] = qlora.input "hidden"
// CHECK: %[[WQ:.*]] = qlora.param "model.layers.0.self_attn.q_proj.weight"
// CHECK: %[[AQ:.*]] = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable}
// CHECK: %[[BQ:.*]] = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {trainable}
// CHECK: %[[Q:.*]] = qlora.lora_linear %[[X]], %[[WQ]], %[[AQ]], %[[BQ]]
// CHECK: %[[K:.*]] = qlora.nf4_matmul
// CHECK: %[[V:.*]] = qlora.nf4_matmul
// CHECK: %[[QR:.*]] = qlora.rope %[[Q]]
// CHECK: %[[KR:.*]] = qlora.rope %[[K]]
// CHECK: %[[ATT:.*]] = qlora.attention %[[QR]], %[[KR]], %[[V]]
// CHECK: %[[WO:.*]] = qlora.param "model.layers.0.self_attn.o_proj.weight"
// CHECK: %[[O:.*]] = qlora.nf4_matmul %[[ATT]], %[[WO]]
// CHECK: %[[DO:.*]] = qlora.cross_entropy_grad %[[O]]
// CHECK: %[[DATT:.*]] = qlora.linear_grad_input %[[DO]], %[[WO]] : (tensor<2x8x64xf32>, !qlora.nf4<64x64, bf16, block = 64>) -> tensor<2x8x64xf32>
// CHECK: %[[DQ:.*]], %[[DK:.*]], %[[DV:.*]] = qlora.attention_grad %[[QR]], %[[KR]], %[[V]], %[[ATT]], %[[DATT]] {head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 2.500000e-01 : f32}
// CHECK-NOT: qlora.rope_grad %[[DK]]
// CHECK: %[[DQR:.*]] = qlora.rope_grad %[[DQ]] {head_dim = 16 : i64, theta = 1.000000e+04 : f32} : tensor<2x8x64xf32>
// CHECK: %{{.*}}, %[[DAQ:.*]], %[[DBQ:.*]] = qlora.lora_grad %[[X]], %[[AQ]], %[[BQ]], %[[DQR]]
// CHECK-NOT: qlora.linear_grad_input
// CHECK: qlora.add %{{.*}}, %[[DAQ]] : tensor<4x64xf32>
// CHECK: qlora.add %{{.*}}, %[[DBQ]] : tensor<64x4xf32>
// CHECK: return
func.func @forward() -> tensor<f32> {
  %x = qlora.input "hidden" : tensor<2x8x64xf32>
  %labels = qlora.input "labels" : tensor<2x8xi32>
  %wq = qlora.param "model.layers.0.self_attn.q_proj.weight" : !qlora.nf4<64x64, bf16>
  %aq = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<4x64xf32>
  %bq = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {trainable} : tensor<64x4xf32>
  %q = qlora.lora_linear %x, %wq, %aq, %bq {scale = 2.0 : f32}
         : (tensor<2x8x64xf32>, !qlora.nf4<64x64, bf16>, tensor<4x64xf32>, tensor<64x4xf32>) -> tensor<2x8x64xf32>
  %wk = qlora.param "model.layers.0.self_attn.k_proj.weight" : !qlora.nf4<32x64, bf16>
  %k = qlora.nf4_matmul %x, %wk : (tensor<2x8x64xf32>, !qlora.nf4<32x64, bf16>) -> tensor<2x8x32xf32>
  %wv = qlora.param "model.layers.0.self_attn.v_proj.weight" : !qlora.nf4<32x64, bf16>
  %v = qlora.nf4_matmul %x, %wv : (tensor<2x8x64xf32>, !qlora.nf4<32x64, bf16>) -> tensor<2x8x32xf32>
  %qr = qlora.rope %q {head_dim = 16 : i64, theta = 10000.0 : f32} : tensor<2x8x64xf32>
  %kr = qlora.rope %k {head_dim = 16 : i64, theta = 10000.0 : f32} : tensor<2x8x32xf32>
  %att = qlora.attention %qr, %kr, %v {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32}
           : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x64xf32>
  %wo = qlora.param "model.layers.0.self_attn.o_proj.weight" : !qlora.nf4<64x64, bf16>
  %o = qlora.nf4_matmul %att, %wo : (tensor<2x8x64xf32>, !qlora.nf4<64x64, bf16>) -> tensor<2x8x64xf32>
  %loss = qlora.cross_entropy %o, %labels : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Tests the MLP path with a residual: gradients of a value with several uses
// are summed with qlora.add, rms_norm and swiglu get their backward ops, the
// dense frozen down projection passes dX by linear_grad_input, and a LoRA
// branch whose input is itself active (lora_linear on the gate) also passes
// dX through its base weight.
// CHECK-LABEL: func.func @train_step
// CHECK: %[[H:.*]] = qlora.add %[[X:.*]], %[[L:.*]] : tensor<2x8x64xf32>
// CHECK: %[[N:.*]] = qlora.param "model.layers.0.post_attention_layernorm.weight"
// CHECK: %[[XN:.*]] = qlora.rms_norm %[[H]], %[[N]]
// CHECK: %[[G:.*]] = qlora.lora_linear %[[XN]], %[[WG:[^,]*]],
// CHECK: %[[U:.*]] = qlora.linear %[[XN]], %[[WU:[^ ]*]] :
// CHECK: %[[S:.*]] = qlora.swiglu %[[G]], %[[U]]
// CHECK: %[[D:.*]] = qlora.linear %[[S]], %[[WD:[^ ]*]] :
// CHECK: %[[OUT:.*]] = qlora.add %[[H]], %[[D]]
// CHECK: %[[DOUT:.*]] = qlora.cross_entropy_grad %[[OUT]]
// CHECK: %[[DS:.*]] = qlora.linear_grad_input %[[DOUT]], %[[WD]] : (tensor<2x8x64xf32>, tensor<64x128xbf16>) -> tensor<2x8x128xf32>
// CHECK: %[[DG:.*]], %[[DU:.*]] = qlora.swiglu_grad %[[G]], %[[U]], %[[DS]] : tensor<2x8x128xf32>
// CHECK: %[[DXU:.*]] = qlora.linear_grad_input %[[DU]], %[[WU]]
// CHECK: %[[DXL:.*]], %{{.*}}, %{{.*}} = qlora.lora_grad %[[XN]], %{{.*}}, %{{.*}}, %[[DG]]
// CHECK: %[[DXG:.*]] = qlora.linear_grad_input %[[DG]], %[[WG]]
// CHECK: %[[DXG2:.*]] = qlora.add %[[DXG]], %[[DXL]]
// CHECK: %[[DXN:.*]] = qlora.add %[[DXU]], %[[DXG2]]
// CHECK: %[[DH:.*]] = qlora.rms_norm_grad %[[H]], %[[N]], %[[DXN]] {eps = 9.99999974E-6 : f32}
// CHECK: %[[DHSUM:.*]] = qlora.add %[[DOUT]], %[[DH]]
// CHECK: qlora.lora_grad %[[X]], %{{.*}}, %{{.*}}, %[[DHSUM]]
func.func @forward() -> tensor<f32> {
  %x = qlora.input "hidden" : tensor<2x8x64xf32>
  %labels = qlora.input "labels" : tensor<2x8xi32>
  %a0 = qlora.param "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight" {trainable} : tensor<4x64xf32>
  %b0 = qlora.param "base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight" {trainable} : tensor<64x4xf32>
  %l = qlora.lora %x, %a0, %b0 {scale = 1.0 : f32} : (tensor<2x8x64xf32>, tensor<4x64xf32>, tensor<64x4xf32>) -> tensor<2x8x64xf32>
  %h = qlora.add %x, %l : tensor<2x8x64xf32>
  %n = qlora.param "model.layers.0.post_attention_layernorm.weight" : tensor<64xbf16>
  %xn = qlora.rms_norm %h, %n {eps = 1.0e-5 : f32} : (tensor<2x8x64xf32>, tensor<64xbf16>) -> tensor<2x8x64xf32>
  %wg = qlora.param "model.layers.0.mlp.gate_proj.weight" : tensor<128x64xbf16>
  %ag = qlora.param "base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight" {trainable} : tensor<4x64xf32>
  %bg = qlora.param "base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight" {trainable} : tensor<128x4xf32>
  %g = qlora.lora_linear %xn, %wg, %ag, %bg {scale = 1.0 : f32}
         : (tensor<2x8x64xf32>, tensor<128x64xbf16>, tensor<4x64xf32>, tensor<128x4xf32>) -> tensor<2x8x128xf32>
  %wu = qlora.param "model.layers.0.mlp.up_proj.weight" : tensor<128x64xbf16>
  %u = qlora.linear %xn, %wu : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
  %s = qlora.swiglu %g, %u : tensor<2x8x128xf32>
  %wd = qlora.param "model.layers.0.mlp.down_proj.weight" : tensor<64x128xbf16>
  %d = qlora.linear %s, %wd : (tensor<2x8x128xf32>, tensor<64x128xbf16>) -> tensor<2x8x64xf32>
  %out = qlora.add %h, %d : tensor<2x8x64xf32>
  %loss = qlora.cross_entropy %out, %labels : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Tests that LoRA branches with dropout get numbered dropout streams in
// @train_step, shared with their lora_grad, while @forward is unchanged, and
// that a parameter referenced twice gets the sum of both gradients.
// CHECK-LABEL: func.func @forward
// CHECK-NOT: dropout_stream
// CHECK-LABEL: func.func @train_step
// CHECK: %[[A1:.*]] = qlora.param "base_model.model.a.lora_A.weight" {trainable}
// CHECK: qlora.lora {{.*}} {dropout = 1.000000e-01 : f32, dropout_stream = 0 : i64, scale = 1.000000e+00 : f32}
// CHECK: %[[A2:.*]] = qlora.param "base_model.model.a.lora_A.weight" {trainable}
// CHECK: qlora.lora {{.*}} {dropout = 1.000000e-01 : f32, dropout_stream = 1 : i64, scale = 1.000000e+00 : f32}
// CHECK: %{{.*}}, %[[D2:.*]], %{{.*}} = qlora.lora_grad {{.*}} {dropout = 1.000000e-01 : f32, dropout_stream = 1 : i64, scale = 1.000000e+00 : f32}
// CHECK: %{{.*}}, %[[D1:.*]], %{{.*}} = qlora.lora_grad {{.*}} {dropout = 1.000000e-01 : f32, dropout_stream = 0 : i64, scale = 1.000000e+00 : f32}
// CHECK: %[[SUM:.*]] = qlora.add %[[D1]], %[[D2]] : tensor<4x64xf32>
// CHECK: %[[ACC:.*]] = qlora.state "grad:base_model.model.a.lora_A.weight"
// CHECK: qlora.add %[[ACC]], %[[SUM]]
func.func @forward() -> tensor<f32> {
  %x = qlora.input "hidden" : tensor<2x8x64xf32>
  %labels = qlora.input "labels" : tensor<2x8xi32>
  %a1 = qlora.param "base_model.model.a.lora_A.weight" {trainable} : tensor<4x64xf32>
  %b = qlora.param "base_model.model.a.lora_B.weight" {trainable} : tensor<64x4xf32>
  %l1 = qlora.lora %x, %a1, %b {scale = 1.0 : f32, dropout = 0.1 : f32} : (tensor<2x8x64xf32>, tensor<4x64xf32>, tensor<64x4xf32>) -> tensor<2x8x64xf32>
  %a2 = qlora.param "base_model.model.a.lora_A.weight" {trainable} : tensor<4x64xf32>
  %l2 = qlora.lora %l1, %a2, %b {scale = 1.0 : f32, dropout = 0.1 : f32} : (tensor<2x8x64xf32>, tensor<4x64xf32>, tensor<64x4xf32>) -> tensor<2x8x64xf32>
  %loss = qlora.cross_entropy %l2, %labels : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
