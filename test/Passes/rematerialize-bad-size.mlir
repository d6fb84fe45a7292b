// RUN: qlora-opt %s --qlora-rematerialize="max-memory=6.1gigs" -verify-diagnostics

// Tests that a budget that is not a size is refused with the forms it takes.
// expected-error @+1 {{qlora-rematerialize: max-memory: expected a size such as 6.1GiB, 48GB or 4096 (bytes), got '6.1gigs' (unknown unit; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)}}
module {
  func.func @train_step() -> tensor<f32> {
    %l = qlora.input "loss" : tensor<f32>
    return %l : tensor<f32>
  }
}
