// RUN: qlora-opt %s --split-input-file --qlora-plan-memory -verify-diagnostics | FileCheck %s

// Tests that named slots get fixed offsets, temporaries share the arena by
// lifetime, and the module records the plan.
// CHECK-LABEL: module attributes
// CHECK-SAME: qlora.arena_bytes = [[ARENA:[0-9]+]] : i64
// CHECK-SAME: {bytes = 4 : i64, name = "grad_scale", offset = 0 : i64, role = "input", type = tensor<f32>}
// CHECK-SAME: {bytes = 4 : i64, name = "loss", offset = 64 : i64, role = "output", type = tensor<f32>}
// CHECK-SAME: {bytes = 1024 : i64, name = "w", offset = 128 : i64, role = "frozen", type = tensor<16x16xbf16>}
// CHECK-SAME: {bytes = 1024 : i64, name = "p", offset = 1152 : i64, role = "trainable", type = tensor<16x16xf32>}
// CHECK-SAME: {bytes = 1024 : i64, name = "grad:p", offset = 2176 : i64, role = "state", type = tensor<16x16xf32>}
// CHECK-LABEL: func.func @train_step
// CHECK: qlora.param "w" {qlora.offsets = array<i64: 128>}
// CHECK: %[[A:.*]] = qlora.add {{.*}} {qlora.offsets = array<i64: [[T0:[0-9]+]]>}
// CHECK: %[[B:.*]] = qlora.add %[[A]], {{.*}} {qlora.offsets = array<i64: [[T1:[0-9]+]]>}
// The third temporary reuses the first one's bytes: %A is dead by then.
// CHECK: qlora.add %[[B]], {{.*}} {qlora.offsets = array<i64: [[T0]]>}
// expected-remark @below {{arena: 5248 bytes (3200 in named slots, 2048 for temporaries, whose peak live size is 2048)}}
module {
  func.func @train_step() -> tensor<f32> {
    %s = qlora.input "grad_scale" : tensor<f32>
    %w = qlora.param "w" : tensor<16x16xbf16>
    %p = qlora.param "p" {trainable} : tensor<16x16xf32>
    %g = qlora.state "grad:p" : tensor<16x16xf32>
    %a = qlora.add %p, %g : tensor<16x16xf32>
    %b = qlora.add %a, %p : tensor<16x16xf32>
    %c = qlora.add %b, %g : tensor<16x16xf32>
    qlora.assign "grad:p", %c : tensor<16x16xf32>
    return %s : tensor<f32>
  }
  func.func @apply_gradients() {
    return
  }
}

// -----

// Tests that an NF4 parameter gets its packed codes and its fp32 maxima.
// CHECK-LABEL: module attributes
// CHECK-SAME: {absmax_offset = 128 : i64, bytes = 72 : i64, name = "q", offset = 0 : i64, role = "nf4"
// CHECK-LABEL: func.func @train_step
// CHECK: qlora.param "q" {qlora.offsets = array<i64: 0, 128>}
// expected-remark @below {{arena: 192 bytes}}
module {
  func.func @train_step() {
    %q = qlora.param "q" : !qlora.nf4<12x12, bf16, block = 64>
    return
  }
  func.func @apply_gradients() {
    return
  }
}

// -----

// expected-error @below {{qlora-plan-memory: no entry function @apply_gradients (run qlora-build-train-step first)}}
module {
  func.func @train_step() {
    return
  }
}

// -----

module {
  func.func @train_step() {
    %a = qlora.state "s" : tensor<4xf32>
    // expected-error @below {{qlora-plan-memory: slot 's' is used with type 'tensor<8xf32>' here and 'tensor<4xf32>' elsewhere}}
    %b = qlora.state "s" : tensor<8xf32>
    return
  }
  func.func @apply_gradients() {
    return
  }
}
