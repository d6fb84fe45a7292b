// RUN: qlora-opt %s --qlora-rematerialize="max-memory=1GB" -verify-diagnostics

// Tests that a module without a training step is refused.
// expected-error @+1 {{qlora-rematerialize: expects a one-block @train_step (run qlora-build-train-step first)}}
module {
  func.func @forward() -> tensor<f32> {
    %l = qlora.input "loss" : tensor<f32>
    return %l : tensor<f32>
  }
}
