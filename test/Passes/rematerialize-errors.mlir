// RUN: qlora-opt %s --qlora-pipeline="max-memory=300KiB" -verify-diagnostics

// Tests that a budget no plan fits is refused at compile time with the
// numbers: the named slots, the plan as built and the smallest plan found.
// expected-error-re @+1 {{qlora-rematerialize: max-memory 300.00 KiB cannot be met: the runtime holds 0 B beside the arena, the named slots (weights, adapters, optimizer state, inputs) take {{[0-9.]+}} KiB, the step as built plans {{[0-9.]+}} MiB, and the smallest plan found, recomputing {{[0-9]+}} and offloading {{[0-9]+}} of {{[0-9]+}} saved activations, plans {{[0-9.]+ [KM]iB}}, at its peak at qlora.{{[a-z_]+}} at {{.*}}}}
module {
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
}

