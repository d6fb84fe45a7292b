// RUN: qlora-opt %s --split-input-file --qlora-fuse-lm-head-loss | FileCheck %s

// Tests that the lm_head, its loss, the loss gradient and the head's input
// gradient become one chunked op where the gradient was (after dloss), with
// the chunk of rows lmHeadChunkRows gives (all 128 rows of this small
// vocabulary), and that nothing holds the logits any more.
// CHECK-LABEL: func.func @head
// CHECK-SAME: (%[[X:.*]]: tensor<2x64x256xbf16>, %[[W:.*]]: tensor<1024x256xbf16>, %[[L:.*]]: tensor<2x64xi32>, %[[D:.*]]: tensor<f32>)
// CHECK-NOT: qlora.linear
// CHECK-NOT: qlora.cross_entropy
// CHECK: %[[LOSS:.*]], %[[DX:.*]] = qlora.lm_head_loss %[[X]], %[[W]], %[[L]], %[[D]] {chunk_rows = 128 : i64}
// CHECK-NOT: qlora.linear_grad_input
// CHECK: return %[[LOSS]], %[[DX]]
func.func @head(%x: tensor<2x64x256xbf16>, %w: tensor<1024x256xbf16>, %labels: tensor<2x64xi32>, %dloss: tensor<f32>) -> (tensor<f32>, tensor<2x64x256xbf16>) {
  %logits = qlora.linear %x, %w : (tensor<2x64x256xbf16>, tensor<1024x256xbf16>) -> tensor<2x64x1024xbf16>
  %loss = qlora.cross_entropy %logits, %labels : (tensor<2x64x1024xbf16>, tensor<2x64xi32>) -> tensor<f32>
  %dlogits = qlora.cross_entropy_grad %logits, %labels, %dloss : (tensor<2x64x1024xbf16>, tensor<2x64xi32>, tensor<f32>) -> tensor<2x64x1024xbf16>
  %dx = qlora.linear_grad_input %dlogits, %w : (tensor<2x64x1024xbf16>, tensor<1024x256xbf16>) -> tensor<2x64x256xbf16>
  return %loss, %dx : tensor<f32>, tensor<2x64x256xbf16>
}

// -----

// Tests that logits someone else reads stay whole: nothing is fused.
// CHECK-LABEL: func.func @logits_escape
// CHECK-NOT: qlora.lm_head_loss
// CHECK: qlora.linear
// CHECK: qlora.cross_entropy
// CHECK: qlora.cross_entropy_grad
// CHECK: qlora.linear_grad_input
func.func @logits_escape(%x: tensor<2x64x256xbf16>, %w: tensor<1024x256xbf16>, %labels: tensor<2x64xi32>, %dloss: tensor<f32>) -> (tensor<f32>, tensor<2x64x256xbf16>, tensor<2x64x1024xbf16>) {
  %logits = qlora.linear %x, %w : (tensor<2x64x256xbf16>, tensor<1024x256xbf16>) -> tensor<2x64x1024xbf16>
  %loss = qlora.cross_entropy %logits, %labels : (tensor<2x64x1024xbf16>, tensor<2x64xi32>) -> tensor<f32>
  %dlogits = qlora.cross_entropy_grad %logits, %labels, %dloss : (tensor<2x64x1024xbf16>, tensor<2x64xi32>, tensor<f32>) -> tensor<2x64x1024xbf16>
  %dx = qlora.linear_grad_input %dlogits, %w : (tensor<2x64x1024xbf16>, tensor<1024x256xbf16>) -> tensor<2x64x256xbf16>
  return %loss, %dx, %logits : tensor<f32>, tensor<2x64x256xbf16>, tensor<2x64x1024xbf16>
}

// -----

// Tests that a loss read before its gradient is computed keeps the ops
// apart: the fused op could not sit where the gradient was.
// CHECK-LABEL: func.func @loss_read_early
// CHECK-NOT: qlora.lm_head_loss
func.func @loss_read_early(%x: tensor<2x64x256xbf16>, %w: tensor<1024x256xbf16>, %labels: tensor<2x64xi32>) -> (tensor<f32>, tensor<2x64x256xbf16>) {
  %logits = qlora.linear %x, %w : (tensor<2x64x256xbf16>, tensor<1024x256xbf16>) -> tensor<2x64x1024xbf16>
  %loss = qlora.cross_entropy %logits, %labels : (tensor<2x64x1024xbf16>, tensor<2x64xi32>) -> tensor<f32>
  %dloss = qlora.mul %loss, %loss : tensor<f32>, tensor<f32>
  %dlogits = qlora.cross_entropy_grad %logits, %labels, %dloss : (tensor<2x64x1024xbf16>, tensor<2x64xi32>, tensor<f32>) -> tensor<2x64x1024xbf16>
  %dx = qlora.linear_grad_input %dlogits, %w : (tensor<2x64x1024xbf16>, tensor<1024x256xbf16>) -> tensor<2x64x256xbf16>
  return %loss, %dx : tensor<f32>, tensor<2x64x256xbf16>
}

// -----

// Tests that the gradient of another weight than the head's is left alone.
// CHECK-LABEL: func.func @other_weight
// CHECK-NOT: qlora.lm_head_loss
func.func @other_weight(%x: tensor<2x64x256xbf16>, %w: tensor<1024x256xbf16>, %v: tensor<1024x256xbf16>, %labels: tensor<2x64xi32>, %dloss: tensor<f32>) -> (tensor<f32>, tensor<2x64x256xbf16>) {
  %logits = qlora.linear %x, %w : (tensor<2x64x256xbf16>, tensor<1024x256xbf16>) -> tensor<2x64x1024xbf16>
  %loss = qlora.cross_entropy %logits, %labels : (tensor<2x64x1024xbf16>, tensor<2x64xi32>) -> tensor<f32>
  %dlogits = qlora.cross_entropy_grad %logits, %labels, %dloss : (tensor<2x64x1024xbf16>, tensor<2x64xi32>, tensor<f32>) -> tensor<2x64x1024xbf16>
  %dx = qlora.linear_grad_input %dlogits, %v : (tensor<2x64x1024xbf16>, tensor<1024x256xbf16>) -> tensor<2x64x256xbf16>
  return %loss, %dx : tensor<f32>, tensor<2x64x256xbf16>
}
