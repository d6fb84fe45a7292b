// RUN: qlora-opt %s --split-input-file --qlora-plan-memory | FileCheck %s

// Tests that the loss gradient is written over the logits when they die
// there (both targets' kernels compute it in place, row by row): the two
// share one offset, and the arena holds one vocabulary-wide buffer.
// CHECK-LABEL: func.func @train_step
// CHECK: %{{.*}} = qlora.linear {{.*}}qlora.offsets = array<i64: [[LOGITS:[0-9]+]]>
// CHECK: qlora.cross_entropy_grad {{.*}}qlora.offsets = array<i64: [[LOGITS]]>
module {
  func.func @train_step() -> tensor<f32> {
    %x = qlora.input "x" : tensor<2x8x16xf32>
    %labels = qlora.input "labels" : tensor<2x8xi32>
    %w = qlora.param "lm_head.weight" : tensor<64x16xf32>
    %logits = qlora.linear %x, %w : (tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<2x8x64xf32>
    %loss = qlora.cross_entropy %logits, %labels : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
    %seed = qlora.input "grad_scale" : tensor<f32>
    %dlogits = qlora.cross_entropy_grad %logits, %labels, %seed : (tensor<2x8x64xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<2x8x64xf32>
    %dx = qlora.linear_grad_input %dlogits, %w : (tensor<2x8x64xf32>, tensor<64x16xf32>) -> tensor<2x8x16xf32>
    qlora.assign "dx", %dx : tensor<2x8x16xf32>
    return %loss : tensor<f32>
  }
  func.func @apply_gradients() {
    return
  }
}

// -----

// Tests that logits still read after the loss gradient keep their own
// buffer.
// CHECK-LABEL: func.func @train_step
// CHECK: %{{.*}} = qlora.linear {{.*}}qlora.offsets = array<i64: [[KEPT:[0-9]+]]>
// CHECK-NOT: qlora.cross_entropy_grad {{.*}}qlora.offsets = array<i64: [[KEPT]]>
// CHECK: qlora.cross_entropy_grad
module {
  func.func @train_step() -> tensor<f32> {
    %x = qlora.input "x" : tensor<2x8x16xf32>
    %labels = qlora.input "labels" : tensor<2x8xi32>
    %w = qlora.param "lm_head.weight" : tensor<64x16xf32>
    %logits = qlora.linear %x, %w : (tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<2x8x64xf32>
    %loss = qlora.cross_entropy %logits, %labels : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
    %seed = qlora.input "grad_scale" : tensor<f32>
    %dlogits = qlora.cross_entropy_grad %logits, %labels, %seed : (tensor<2x8x64xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<2x8x64xf32>
    %both = qlora.add %dlogits, %logits : tensor<2x8x64xf32>
    qlora.assign "both", %both : tensor<2x8x64xf32>
    return %loss : tensor<f32>
  }
  func.func @apply_gradients() {
    return
  }
}
