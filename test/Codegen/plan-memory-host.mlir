// RUN: qlora-opt %s --qlora-plan-memory | FileCheck %s

// Tests that an offload and its reload share one host slot, that the module
// records the host arena's size and the number of transfers, and that the
// reloaded tensor is a device temporary.
// CHECK: qlora.host_arena_bytes = 256 : i64
// CHECK-SAME: qlora.transfers = 2 : i64
// CHECK: qlora.offload "offload:0", %{{.*}} {qlora.host_offset = 0 : i64, transfer = 0 : i64}
// CHECK: qlora.reload "offload:0" {qlora.host_offset = 0 : i64, qlora.offsets = array<i64: {{[0-9]+}}>, transfer = 1 : i64}
module {
  func.func @train_step() -> tensor<f32> {
    %x = qlora.input "x" : tensor<4x16xf32>
    qlora.offload "offload:0", %x {transfer = 0 : i64} : tensor<4x16xf32>
    qlora.offload_wait "offload:0", %x {transfer = 0 : i64} : tensor<4x16xf32>
    %r = qlora.reload "offload:0" {transfer = 1 : i64} : tensor<4x16xf32>
    qlora.reload_wait "offload:0", %r {transfer = 1 : i64} : tensor<4x16xf32>
    %s = qlora.add %r, %r : tensor<4x16xf32>
    qlora.assign "y", %s : tensor<4x16xf32>
    %l = qlora.input "loss" : tensor<f32>
    return %l : tensor<f32>
  }
  func.func @apply_gradients() {
    return
  }
}
