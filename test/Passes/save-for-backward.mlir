// RUN: qlora-opt %s --split-input-file --qlora-save-for-backward="target=cuda" | FileCheck %s
// RUN: qlora-opt %s --split-input-file --qlora-save-for-backward | FileCheck %s --check-prefix=CPU

// Tests that the attention backward reads the forward's log-sum-exp and the
// RMSNorm backward its reciprocal RMS (on cuda; on the cpu only the lse).
// CHECK-LABEL: func.func @train_step
// CHECK: %[[N:.*]], %[[RSTD:.*]] = qlora.rms_norm %{{.*}} -> (tensor<2x4x16xbf16>, tensor<2x4xf32>)
// CHECK: %[[O:.*]], %[[LSE:.*]] = qlora.attention %[[N]], %{{.*}} -> (tensor<2x4x16xbf16>, tensor<2x2x4xf32>)
// CHECK: qlora.attention_grad %[[N]], %{{.*}}, %{{.*}}, %[[O]], %{{.*}} saved(%[[LSE]])
// CHECK: qlora.rms_norm_grad %{{.*}}, %{{.*}}, %{{.*}} saved(%[[RSTD]])
// CPU: qlora.rms_norm %{{.*}} : (tensor<2x4x16xbf16>, tensor<16xbf16>) -> tensor<2x4x16xbf16>
// CPU: qlora.attention_grad {{.*}} saved(
// CPU-NOT: saved(
module {
  func.func @train_step() {
    %x = qlora.input "x" : tensor<2x4x16xbf16>
    %w = qlora.param "w" : tensor<16xbf16>
    %n = qlora.rms_norm %x, %w {eps = 1.0e-05 : f32} : (tensor<2x4x16xbf16>, tensor<16xbf16>) -> tensor<2x4x16xbf16>
    %o = qlora.attention %n, %n, %n {num_heads = 2 : i64, num_kv_heads = 2 : i64, head_dim = 8 : i64, scale = 0.35 : f32} : (tensor<2x4x16xbf16>, tensor<2x4x16xbf16>, tensor<2x4x16xbf16>) -> tensor<2x4x16xbf16>
    %dq, %dk, %dv = qlora.attention_grad %n, %n, %n, %o, %o {num_heads = 2 : i64, num_kv_heads = 2 : i64, head_dim = 8 : i64, scale = 0.35 : f32} : (tensor<2x4x16xbf16>, tensor<2x4x16xbf16>, tensor<2x4x16xbf16>, tensor<2x4x16xbf16>, tensor<2x4x16xbf16>) -> (tensor<2x4x16xbf16>, tensor<2x4x16xbf16>, tensor<2x4x16xbf16>)
    %dx = qlora.rms_norm_grad %x, %w, %dq {eps = 1.0e-05 : f32} : (tensor<2x4x16xbf16>, tensor<16xbf16>, tensor<2x4x16xbf16>) -> tensor<2x4x16xbf16>
    qlora.assign "dx", %dx : tensor<2x4x16xbf16>
    return
  }
}
