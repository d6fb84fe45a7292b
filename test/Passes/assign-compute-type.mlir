// RUN: qlora-opt %s --split-input-file --qlora-assign-compute-type | FileCheck %s

// Tests that activations, their gradients and frozen dense weights become
// bf16, while what the optimizer owns stays fp32: the adapters, the state,
// the adapter gradients of lora_grad and the accumulation into the state,
// and scalars.
// CHECK-LABEL: func.func @train_step
// CHECK: qlora.param "emb" : tensor<16x8xbf16>
// CHECK: qlora.embedding {{.*}} -> tensor<2x4x8xbf16>
// CHECK: qlora.param "a" {trainable} : tensor<2x8xf32>
// CHECK: qlora.lora {{.*}} -> tensor<2x4x8xbf16>
// CHECK: qlora.lora_grad {{.*}} -> (tensor<2x4x8xbf16>, tensor<2x8xf32>, tensor<8x2xf32>)
// CHECK: %[[G:.*]] = qlora.state "grad:a" : tensor<2x8xf32>
// CHECK: qlora.add %[[G]], %{{.*}} : tensor<2x8xf32>
// CHECK: qlora.sum_squares %{{.*}} : tensor<2x4x8xbf16>
module {
  func.func @train_step() -> tensor<f32> {
    %ids = qlora.input "input_ids" : tensor<2x4xi32>
    %table = qlora.param "emb" : tensor<16x8xf32>
    %x = qlora.embedding %ids, %table : (tensor<2x4xi32>, tensor<16x8xf32>) -> tensor<2x4x8xf32>
    %a = qlora.param "a" {trainable} : tensor<2x8xf32>
    %b = qlora.param "b" {trainable} : tensor<8x2xf32>
    %y = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>) -> tensor<2x4x8xf32>
    %dx, %da, %db = qlora.lora_grad %x, %a, %b, %y {scale = 2.0 : f32} : (tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>, tensor<2x4x8xf32>) -> (tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>)
    %g = qlora.state "grad:a" : tensor<2x8xf32>
    %sum = qlora.add %g, %da : tensor<2x8xf32>
    qlora.assign "grad:a", %sum : tensor<2x8xf32>
    %loss = qlora.sum_squares %dx : tensor<2x4x8xf32>
    return %loss : tensor<f32>
  }
}
