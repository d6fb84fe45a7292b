// RUN: qlora-opt %s --split-input-file --qlora-fuse-elementwise | FileCheck %s
// RUN: qlora-opt %s --split-input-file --qlora-fuse-elementwise="max-inputs=2" | FileCheck %s --check-prefix=NARROW

// Tests that a chain of adds whose intermediate results feed only the chain
// becomes one region computing it per element in f32, with a 0-d factor
// broadcast.
// CHECK-LABEL: func.func @chain
// CHECK-SAME: (%[[A:.*]]: tensor<8x64xbf16>, %[[B:.*]]: tensor<8x64xbf16>, %[[C:.*]]: tensor<8x64xbf16>, %[[D:.*]]: tensor<8x64xbf16>)
// CHECK: %[[R:.*]] = qlora.fused_elementwise(%[[A]], %[[B]], %[[C]], %[[D]]) : (tensor<8x64xbf16>, tensor<8x64xbf16>, tensor<8x64xbf16>, tensor<8x64xbf16>) -> tensor<8x64xbf16> {
// CHECK-NEXT: ^bb0(%[[X:.*]]: f32, %[[Y:.*]]: f32, %[[Z:.*]]: f32, %[[W:.*]]: f32):
// CHECK-NEXT: %[[S:.*]] = arith.addf %[[X]], %[[Y]] : f32
// CHECK-NEXT: %[[T:.*]] = arith.addf %[[Z]], %[[W]] : f32
// CHECK-NEXT: %[[U:.*]] = arith.addf %[[S]], %[[T]] : f32
// CHECK-NEXT: qlora.yield %[[U]] : f32
// CHECK: return %[[R]]
// NARROW-LABEL: func.func @chain
// NARROW-COUNT-3: qlora.add
func.func @chain(%a: tensor<8x64xbf16>, %b: tensor<8x64xbf16>, %c: tensor<8x64xbf16>, %d: tensor<8x64xbf16>) -> tensor<8x64xbf16> {
  %ab = qlora.add %a, %b : tensor<8x64xbf16>
  %cd = qlora.add %c, %d : tensor<8x64xbf16>
  %sum = qlora.add %ab, %cd : tensor<8x64xbf16>
  return %sum : tensor<8x64xbf16>
}

// -----

// Tests that a result used outside the chain stays its own op, and that one
// op alone is left as it is.
// CHECK-LABEL: func.func @escaping
// CHECK: %[[AB:.*]] = qlora.add
// CHECK-NEXT: %[[SUM:.*]] = qlora.add %[[AB]]
// CHECK-NOT: qlora.fused_elementwise
// CHECK: return %[[AB]], %[[SUM]]
func.func @escaping(%a: tensor<8xf32>, %b: tensor<8xf32>) -> (tensor<8xf32>, tensor<8xf32>) {
  %ab = qlora.add %a, %b : tensor<8xf32>
  %sum = qlora.add %ab, %a : tensor<8xf32>
  return %ab, %sum : tensor<8xf32>, tensor<8xf32>
}

// -----

// Tests that a product by a 0-d scalar fuses with the add after it.
// CHECK-LABEL: func.func @scaled
// CHECK-SAME: (%[[G:.*]]: tensor<8xf32>, %[[C:.*]]: tensor<f32>, %[[M:.*]]: tensor<8xf32>)
// CHECK: qlora.fused_elementwise(%[[G]], %[[C]], %[[M]]) : (tensor<8xf32>, tensor<f32>, tensor<8xf32>) -> tensor<8xf32>
// CHECK: arith.mulf
// CHECK: arith.addf
func.func @scaled(%g: tensor<8xf32>, %c: tensor<f32>, %m: tensor<8xf32>) -> tensor<8xf32> {
  %clipped = qlora.mul %g, %c : tensor<8xf32>, tensor<f32>
  %sum = qlora.add %clipped, %m : tensor<8xf32>
  return %sum : tensor<8xf32>
}
