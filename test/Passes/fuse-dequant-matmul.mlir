// RUN: qlora-opt %s --split-input-file --qlora-fuse-dequant-matmul | FileCheck %s
// RUN: qlora-opt %s --split-input-file --qlora-fuse-dequant-matmul="fuse-lora-linear=false" | FileCheck %s --check-prefix=NOLORA

// Tests that a dequantized weight feeding only a linear becomes nf4_matmul.
// CHECK-LABEL: func.func @fuse
// CHECK-SAME: (%[[X:.*]]: tensor<8x64xbf16>, %[[W:.*]]: !qlora.nf4<128x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>)
// CHECK-NOT: qlora.dequantize
// CHECK-NOT: qlora.linear
// CHECK: %[[Y:.*]] = qlora.nf4_matmul %[[X]], %[[W]] : (tensor<8x64xbf16>, !qlora.nf4<128x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>) -> tensor<8x128xbf16>
// CHECK-NEXT: return %[[Y]]
func.func @fuse(%x: tensor<8x64xbf16>, %w: !qlora.nf4<128x64, bf16, double_quant = #qlora.double_quant<block = 256>>) -> tensor<8x128xbf16> {
  %wd = qlora.dequantize %w : !qlora.nf4<128x64, bf16, double_quant = #qlora.double_quant<block = 256>> -> tensor<128x64xbf16>
  %y = qlora.linear %x, %wd : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
  return %y : tensor<8x128xbf16>
}

// -----

// Tests that batch dims on the input survive the fusion.
// CHECK-LABEL: func.func @fuse_batched
// CHECK-SAME: (%[[X:.*]]: tensor<2x?x64xf16>, %[[W:.*]]: !qlora.nf4<128x64, f16, block = 128>)
// CHECK-NOT: qlora.dequantize
// CHECK: qlora.nf4_matmul %[[X]], %[[W]] : (tensor<2x?x64xf16>, !qlora.nf4<128x64, f16, block = 128>) -> tensor<2x?x128xf16>
func.func @fuse_batched(%x: tensor<2x?x64xf16>, %w: !qlora.nf4<128x64, f16, block = 128>) -> tensor<2x?x128xf16> {
  %wd = qlora.dequantize %w : !qlora.nf4<128x64, f16, block = 128> -> tensor<128x64xf16>
  %y = qlora.linear %x, %wd : (tensor<2x?x64xf16>, tensor<128x64xf16>) -> tensor<2x?x128xf16>
  return %y : tensor<2x?x128xf16>
}

// -----

// Tests that lora_linear reads a dequantized base weight straight from NF4,
// unless fuse-lora-linear=false.
// CHECK-LABEL: func.func @fuse_lora_linear
// CHECK-SAME: (%[[X:.*]]: tensor<8x64xbf16>, %[[W:.*]]: !qlora.nf4<128x64, bf16, block = 64>, %[[A:.*]]: tensor<16x64xf32>, %[[B:.*]]: tensor<128x16xf32>)
// CHECK-NOT: qlora.dequantize
// CHECK: qlora.lora_linear %[[X]], %[[W]], %[[A]], %[[B]] {scale = 2.000000e+00 : f32} : (tensor<8x64xbf16>, !qlora.nf4<128x64, bf16, block = 64>, tensor<16x64xf32>, tensor<128x16xf32>)
// NOLORA-LABEL: func.func @fuse_lora_linear
// NOLORA: %[[WD:.*]] = qlora.dequantize
// NOLORA: qlora.lora_linear %{{.*}}, %[[WD]],
func.func @fuse_lora_linear(%x: tensor<8x64xbf16>, %w: !qlora.nf4<128x64, bf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) -> tensor<8x128xbf16> {
  %wd = qlora.dequantize %w : !qlora.nf4<128x64, bf16> -> tensor<128x64xbf16>
  %y = qlora.lora_linear %x, %wd, %a, %b {scale = 2.0 : f32}
         : (tensor<8x64xbf16>, tensor<128x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  return %y : tensor<8x128xbf16>
}

// -----

// Tests that a dequantized weight with another user is not fused.
// CHECK-LABEL: func.func @other_user
// CHECK: %[[WD:.*]] = qlora.dequantize
// CHECK: %[[Y:.*]] = qlora.linear %{{.*}}, %[[WD]]
// CHECK-NOT: qlora.nf4_matmul
// CHECK: return %[[Y]], %[[WD]]
func.func @other_user(%x: tensor<8x64xbf16>, %w: !qlora.nf4<128x64, bf16>) -> (tensor<8x128xbf16>, tensor<128x64xbf16>) {
  %wd = qlora.dequantize %w : !qlora.nf4<128x64, bf16> -> tensor<128x64xbf16>
  %y = qlora.linear %x, %wd : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
  return %y, %wd : tensor<8x128xbf16>, tensor<128x64xbf16>
}

// -----

// Tests that one dequantized weight shared by two projections is kept: one
// dequantization is cheaper than two fused ones.
// CHECK-LABEL: func.func @shared_weight
// CHECK: %[[WD:.*]] = qlora.dequantize
// CHECK: qlora.linear %{{.*}}, %[[WD]]
// CHECK: qlora.linear %{{.*}}, %[[WD]]
// CHECK-NOT: qlora.nf4_matmul
func.func @shared_weight(%x: tensor<8x64xbf16>, %x2: tensor<4x64xbf16>, %w: !qlora.nf4<128x64, bf16>) -> (tensor<8x128xbf16>, tensor<4x128xbf16>) {
  %wd = qlora.dequantize %w : !qlora.nf4<128x64, bf16> -> tensor<128x64xbf16>
  %y = qlora.linear %x, %wd : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
  %y2 = qlora.linear %x2, %wd : (tensor<4x64xbf16>, tensor<128x64xbf16>) -> tensor<4x128xbf16>
  return %y, %y2 : tensor<8x128xbf16>, tensor<4x128xbf16>
}

// -----

// Tests that a dequantized tensor used as the activations, not as the
// [out, in] weight, is not fused: its shape does not line up with the weight
// slot.
// CHECK-LABEL: func.func @dequantized_activation
// CHECK-SAME: (%[[Q:.*]]: !qlora.nf4<8x64, bf16, block = 64>, %[[W:.*]]: tensor<128x64xbf16>)
// CHECK: %[[XD:.*]] = qlora.dequantize %[[Q]]
// CHECK: qlora.linear %[[XD]], %[[W]]
// CHECK-NOT: qlora.nf4_matmul
func.func @dequantized_activation(%q: !qlora.nf4<8x64, bf16>, %w: tensor<128x64xbf16>) -> tensor<8x128xbf16> {
  %xd = qlora.dequantize %q : !qlora.nf4<8x64, bf16> -> tensor<8x64xbf16>
  %y = qlora.linear %xd, %w : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
  return %y : tensor<8x128xbf16>
}

// -----

// Tests that a linear of a dense weight is left alone.
// CHECK-LABEL: func.func @dense_weight
// CHECK: qlora.linear
// CHECK-NOT: qlora.nf4_matmul
func.func @dense_weight(%x: tensor<8x64xbf16>, %w: tensor<128x64xbf16>) -> tensor<8x128xbf16> {
  %y = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xbf16>
  return %y : tensor<8x128xbf16>
}
