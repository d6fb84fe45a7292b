// RUN: qlora-opt %s --qlora-pipeline | FileCheck %s --check-prefix=NONE
// RUN: qlora-opt %s --qlora-pipeline="max-memory=1GB" 2>&1 | FileCheck %s --check-prefix=ROOM
// RUN: qlora-opt %s --qlora-pipeline="max-memory=1.2MiB offload-activations=false" 2>&1 | FileCheck %s --check-prefix=TIGHT
// RUN: qlora-opt %s --qlora-pipeline="max-memory=288.75MiB target=cuda offload-activations=false" 2>&1 | FileCheck %s --check-prefix=TIGHT
// RUN: qlora-opt %s --qlora-pipeline="max-memory=1.1MiB" 2>&1 | FileCheck %s --check-prefix=OFFLOAD
// RUN: qlora-opt %s --qlora-pipeline="max-memory=1.1MiB" --qlora-plan-memory 2>&1 | FileCheck %s --check-prefix=HOST
// (cuda's named slots hold cuBLAS's 32 MiB workspace too, and its runtime
// 256 MiB beside the arena.)

// Tests qlora-rematerialize on a one-layer toy Llama of 4 x 64 tokens, whose
// activations outweigh its weights.
//
// Without a budget the pass does not run: nothing is recomputed.
// NONE-NOT: qlora.recomputed
// NONE-NOT: qlora.rematerialization
//
// A budget the step already fits: the plan is reported and left alone.
// ROOM: remark: rematerialize: budget 953.67 MiB (0 B of it for the runtime), arena [[ARENA:.*]] -> [[ARENA]]; recomputing 0 saved values (), offloading 0 to host memory (), keeping
// ROOM-NOT: qlora.recomputed
//
// A tight budget, recomputing only: some saved values are recomputed, every clone sits in the
// backward (after its seed) and feeds a backward reader, and the
// plan is recorded on the module.
// TIGHT: remark: rematerialize: budget {{.*}}, arena {{.*}}; recomputing {{[1-9][0-9]*}} saved values
// TIGHT: qlora.rematerialization = {arena_after = {{[0-9]+}} : i64, arena_before = {{[0-9]+}} : i64, budget = {{[0-9]+}} : i64, host_bytes = 0 : i64, kept = {
// TIGHT-LABEL: func.func @train_step
// TIGHT-NOT: qlora.recomputed
// TIGHT: qlora.input "grad_scale"
// TIGHT: %[[CLONE:[a-z_0-9]+]]{{(, %[a-z_0-9]+)*}} = qlora.{{[a-z_]+}} {{.*}}qlora.recomputed
// TIGHT: qlora.{{[a-z_]+}}{{.*}} %[[CLONE]]
// TIGHT-LABEL: func.func @apply_gradients
// TIGHT-NOT: qlora.recomputed
//
// With offloading (the default), values go to host memory: the copy
// starts after the value's op in the forward, its device memory is released
// after the last forward reader, and the backward reads the reloaded copy,
// which is waited for before its first reader.
// OFFLOAD: remark: rematerialize: {{.*}}, offloading {{[1-9][0-9]*}} to host memory (
// OFFLOAD-LABEL: func.func @train_step
// OFFLOAD-NOT: qlora.cross_entropy_grad
// OFFLOAD: qlora.offload "[[SLOT:offload:[0-9]+]]", %[[V:[^ ]+]] {transfer = [[OUT:[0-9]+]] : i64}
// OFFLOAD: qlora.offload_wait "[[SLOT]]", %[[V]] {transfer = [[OUT]] : i64}
// OFFLOAD: qlora.cross_entropy_grad
// OFFLOAD: %[[R:[^ ]+]] = qlora.reload "[[SLOT]]"
// OFFLOAD: qlora.reload_wait "[[SLOT]]", %[[R]]
// OFFLOAD: = qlora.{{[a-z_]+}} {{.*}}%[[R]]
//
// The planner gives the host slot its offset and sizes the host arena.
// HOST: qlora.host_arena_bytes = {{[1-9][0-9]*}} : i64
// HOST-SAME: qlora.transfers = {{[1-9][0-9]*}} : i64
// HOST: qlora.offload "[[HSLOT:offload:[0-9]+]]", {{.*}}qlora.host_offset = [[HOFF:[0-9]+]] : i64
// HOST: qlora.reload "[[HSLOT]]" {{.*}}qlora.host_offset = [[HOFF]] : i64
func.func @forward() -> tensor<f32> {
  %ids = qlora.input "input_ids" : tensor<4x64xi32>
  %labels = qlora.input "labels" : tensor<4x64xi32>
  %emb = qlora.param "model.embed_tokens.weight" : tensor<128x64xbf16>
  %h0 = qlora.embedding %ids, %emb : (tensor<4x64xi32>, tensor<128x64xbf16>) -> tensor<4x64x64xf32>
  %n1 = qlora.param "model.layers.0.input_layernorm.weight" : tensor<64xbf16>
  %x1 = qlora.rms_norm %h0, %n1 {eps = 1.0e-05 : f32} : (tensor<4x64x64xf32>, tensor<64xbf16>) -> tensor<4x64x64xf32>
  %wq = qlora.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
  %q = qlora.linear %x1, %wq : (tensor<4x64x64xf32>, tensor<64x64xbf16>) -> tensor<4x64x64xf32>
  %wk = qlora.param "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xbf16>
  %k = qlora.linear %x1, %wk : (tensor<4x64x64xf32>, tensor<32x64xbf16>) -> tensor<4x64x32xf32>
  %wv = qlora.param "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xbf16>
  %v = qlora.linear %x1, %wv : (tensor<4x64x64xf32>, tensor<32x64xbf16>) -> tensor<4x64x32xf32>
  %qr = qlora.rope %q {head_dim = 16 : i64, theta = 10000.0 : f32} : tensor<4x64x64xf32>
  %kr = qlora.rope %k {head_dim = 16 : i64, theta = 10000.0 : f32} : tensor<4x64x32xf32>
  %a = qlora.attention %qr, %kr, %v {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<4x64x64xf32>, tensor<4x64x32xf32>, tensor<4x64x32xf32>) -> tensor<4x64x64xf32>
  %wo = qlora.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xbf16>
  %o = qlora.linear %a, %wo : (tensor<4x64x64xf32>, tensor<64x64xbf16>) -> tensor<4x64x64xf32>
  %h1 = qlora.add %h0, %o : tensor<4x64x64xf32>
  %n2 = qlora.param "model.layers.0.post_attention_layernorm.weight" : tensor<64xbf16>
  %x2 = qlora.rms_norm %h1, %n2 {eps = 1.0e-05 : f32} : (tensor<4x64x64xf32>, tensor<64xbf16>) -> tensor<4x64x64xf32>
  %wg = qlora.param "model.layers.0.mlp.gate_proj.weight" : tensor<128x64xbf16>
  %g = qlora.linear %x2, %wg : (tensor<4x64x64xf32>, tensor<128x64xbf16>) -> tensor<4x64x128xf32>
  %wu = qlora.param "model.layers.0.mlp.up_proj.weight" : tensor<128x64xbf16>
  %u = qlora.linear %x2, %wu : (tensor<4x64x64xf32>, tensor<128x64xbf16>) -> tensor<4x64x128xf32>
  %s = qlora.swiglu %g, %u : tensor<4x64x128xf32>
  %wd = qlora.param "model.layers.0.mlp.down_proj.weight" : tensor<64x128xbf16>
  %d = qlora.linear %s, %wd : (tensor<4x64x128xf32>, tensor<64x128xbf16>) -> tensor<4x64x64xf32>
  %h2 = qlora.add %h1, %d : tensor<4x64x64xf32>
  %nf = qlora.param "model.norm.weight" : tensor<64xbf16>
  %xf = qlora.rms_norm %h2, %nf {eps = 1.0e-05 : f32} : (tensor<4x64x64xf32>, tensor<64xbf16>) -> tensor<4x64x64xf32>
  %lm = qlora.param "lm_head.weight" : tensor<128x64xbf16>
  %logits = qlora.linear %xf, %lm : (tensor<4x64x64xf32>, tensor<128x64xbf16>) -> tensor<4x64x128xf32>
  %loss = qlora.cross_entropy %logits, %labels {ignore_index = -100 : i64} : (tensor<4x64x128xf32>, tensor<4x64xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
