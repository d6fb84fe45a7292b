// RUN: qlora-opt %s --split-input-file --qlora-plan-memory -verify-diagnostics

// Tests that a wait placed before the copy it waits for is refused: the
// device memory it releases would be reused while the copy still reads it.
module {
  func.func @train_step() -> tensor<f32> {
    %x = qlora.input "x" : tensor<4x16xf32>
    // expected-error @below {{qlora-plan-memory: waits for transfer 0 before it starts}}
    qlora.offload_wait "offload:0", %x {transfer = 0 : i64} : tensor<4x16xf32>
    qlora.offload "offload:0", %x {transfer = 0 : i64} : tensor<4x16xf32>
    %l = qlora.input "loss" : tensor<f32>
    return %l : tensor<f32>
  }
  func.func @apply_gradients() {
    return
  }
}

