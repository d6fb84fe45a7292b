// RUN: qlora-opt %s --split-input-file --qlora-save-for-backward="target=cuda" -verify-diagnostics

module {
  func.func @train_step() {
    %x = qlora.input "x" : tensor<2x4x16xbf16>
    %w = qlora.param "w" : tensor<16xbf16>
    // expected-error @below {{qlora-save-for-backward: no qlora.rms_norm of the same input, weight and eps precedes this backward}}
    %dx = qlora.rms_norm_grad %x, %w, %x {eps = 1.0e-05 : f32} : (tensor<2x4x16xbf16>, tensor<16xbf16>, tensor<2x4x16xbf16>) -> tensor<2x4x16xbf16>
    return
  }
}

// -----

module {
  func.func @train_step() {
    %x = qlora.input "x" : tensor<2x4x16xbf16>
    // expected-error @below {{qlora-save-for-backward: expects `out` to be the qlora.attention of the same q, k and v}}
    %dq, %dk, %dv = qlora.attention_grad %x, %x, %x, %x, %x {num_heads = 2 : i64, num_kv_heads = 2 : i64, head_dim = 8 : i64, scale = 0.35 : f32} : (tensor<2x4x16xbf16>, tensor<2x4x16xbf16>, tensor<2x4x16xbf16>, tensor<2x4x16xbf16>, tensor<2x4x16xbf16>) -> (tensor<2x4x16xbf16>, tensor<2x4x16xbf16>, tensor<2x4x16xbf16>)
    return
  }
}
