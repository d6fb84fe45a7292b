// RUN: qlora-opt %s --split-input-file --qlora-fuse-lora | FileCheck %s

// Tests that linear + lora of the same input become one lora_linear.
// CHECK-LABEL: func.func @fuse_linear
// CHECK-SAME: (%[[X:.*]]: tensor<8x64xbf16>, %[[W:.*]]: tensor<128x64xbf16>, %[[A:.*]]: tensor<16x64xf32>, %[[B:.*]]: tensor<128x16xf32>)
// CHECK-NOT: qlora.linear
// CHECK-NOT: qlora.lora {{.*}}
// CHECK-NOT: qlora.add
// CHECK: %[[Y:.*]] = qlora.lora_linear %[[X]], %[[W]], %[[A]], %[[B]] {scale = 2.000000e+00 : f32} : (tensor<8x64xbf16>, tensor<128x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
// CHECK-NEXT: return %[[Y]]
func.func @fuse_linear(%x: tensor<8x64xbf16>, %w: tensor<128x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) -> tensor<8x128xbf16> {
  %y0 = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
  %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  %y = qlora.add %y0, %yl : tensor<8x128xbf16>
  return %y : tensor<8x128xbf16>
}

// -----

// Tests that nf4_matmul + lora fuse with the branch as the add's lhs, and
// that the fused op keeps the NF4 weight and the dropout.
// CHECK-LABEL: func.func @fuse_nf4_swapped
// CHECK-SAME: (%[[X:.*]]: tensor<2x8x64xbf16>, %[[W:.*]]: !qlora.nf4<128x64, bf16, block = 64>, %[[A:.*]]: tensor<16x64xf32>, %[[B:.*]]: tensor<128x16xf32>)
// CHECK-NOT: qlora.nf4_matmul
// CHECK-NOT: qlora.add
// CHECK: %[[Y:.*]] = qlora.lora_linear %[[X]], %[[W]], %[[A]], %[[B]] {dropout = 5.000000e-02 : f32, scale = 2.000000e+00 : f32} : (tensor<2x8x64xbf16>, !qlora.nf4<128x64, bf16, block = 64>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<2x8x128xbf16>
// CHECK-NEXT: return %[[Y]]
func.func @fuse_nf4_swapped(%x: tensor<2x8x64xbf16>, %w: !qlora.nf4<128x64, bf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) -> tensor<2x8x128xbf16> {
  %y0 = qlora.nf4_matmul %x, %w : (tensor<2x8x64xbf16>, !qlora.nf4<128x64, bf16>) -> tensor<2x8x128xbf16>
  %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32, dropout = 0.05 : f32} : (tensor<2x8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<2x8x128xbf16>
  %y = qlora.add %yl, %y0 : tensor<2x8x128xbf16>
  return %y : tensor<2x8x128xbf16>
}

// -----

// Tests that a projection and a branch of different inputs are not fused.
// CHECK-LABEL: func.func @different_inputs
// CHECK: %[[Y0:.*]] = qlora.linear
// CHECK: %[[YL:.*]] = qlora.lora
// CHECK: qlora.add %[[Y0]], %[[YL]]
// CHECK-NOT: qlora.lora_linear
func.func @different_inputs(%x: tensor<8x64xbf16>, %x2: tensor<8x64xbf16>, %w: tensor<128x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) -> tensor<8x128xbf16> {
  %y0 = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
  %yl = qlora.lora %x2, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  %y = qlora.add %y0, %yl : tensor<8x128xbf16>
  return %y : tensor<8x128xbf16>
}

// -----

// Tests that a base projection with another user is not fused.
// CHECK-LABEL: func.func @base_other_user
// CHECK: %[[Y0:.*]] = qlora.nf4_matmul
// CHECK: %[[YL:.*]] = qlora.lora
// CHECK: %[[Y:.*]] = qlora.add %[[Y0]], %[[YL]]
// CHECK-NOT: qlora.lora_linear
// CHECK: return %[[Y]], %[[Y0]]
func.func @base_other_user(%x: tensor<8x64xbf16>, %w: !qlora.nf4<128x64, bf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) -> (tensor<8x128xbf16>, tensor<8x128xbf16>) {
  %y0 = qlora.nf4_matmul %x, %w : (tensor<8x64xbf16>, !qlora.nf4<128x64, bf16>) -> tensor<8x128xbf16>
  %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  %y = qlora.add %y0, %yl : tensor<8x128xbf16>
  return %y, %y0 : tensor<8x128xbf16>, tensor<8x128xbf16>
}

// -----

// Tests that a LoRA branch with another user is not fused.
// CHECK-LABEL: func.func @branch_other_user
// CHECK: %[[Y0:.*]] = qlora.linear
// CHECK: %[[YL:.*]] = qlora.lora
// CHECK: %[[Y:.*]] = qlora.add %[[Y0]], %[[YL]]
// CHECK: %[[Z:.*]] = qlora.add %[[Y]], %[[YL]]
// CHECK-NOT: qlora.lora_linear
// CHECK: return %[[Z]]
func.func @branch_other_user(%x: tensor<8x64xbf16>, %w: tensor<128x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) -> tensor<8x128xbf16> {
  %y0 = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
  %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  %y = qlora.add %y0, %yl : tensor<8x128xbf16>
  %z = qlora.add %y, %yl : tensor<8x128xbf16>
  return %z : tensor<8x128xbf16>
}

// -----

// Tests that a residual add of two projections (no LoRA branch) is left alone.
// CHECK-LABEL: func.func @no_branch
// CHECK: qlora.linear
// CHECK: qlora.linear
// CHECK: qlora.add
// CHECK-NOT: qlora.lora_linear
func.func @no_branch(%x: tensor<8x64xbf16>, %w: tensor<128x64xbf16>, %w2: tensor<128x64xbf16>) -> tensor<8x128xbf16> {
  %y0 = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
  %y1 = qlora.linear %x, %w2 : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
  %y = qlora.add %y0, %y1 : tensor<8x128xbf16>
  return %y : tensor<8x128xbf16>
}

// -----

// Tests that a LoRA branch added to something other than a projection of its
// input (here a residual) is left alone.
// CHECK-LABEL: func.func @branch_plus_residual
// CHECK-SAME: (%[[X:.*]]: tensor<8x64xbf16>, %[[R:.*]]: tensor<8x64xbf16>,
// CHECK: %[[YL:.*]] = qlora.lora %[[X]]
// CHECK: qlora.add %[[R]], %[[YL]]
// CHECK-NOT: qlora.lora_linear
func.func @branch_plus_residual(%x: tensor<8x64xbf16>, %r: tensor<8x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<64x16xf32>) -> tensor<8x64xbf16> {
  %yl = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<64x16xf32>) -> tensor<8x64xbf16>
  %y = qlora.add %r, %yl : tensor<8x64xbf16>
  return %y : tensor<8x64xbf16>
}
