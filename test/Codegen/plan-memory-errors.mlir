// RUN: qlora-opt %s --qlora-plan-memory="target=tpu" -verify-diagnostics

// Tests that an unknown target is refused with the ones there are.
// expected-error @below {{qlora-plan-memory: expects target cpu or cuda, got 'tpu'}}
module {
  func.func @train_step() {
    return
  }
  func.func @apply_gradients() {
    return
  }
}
