// RUN: qlora-opt %s --qlora-save-for-backward="target=gpu" -verify-diagnostics

// Tests that an unknown target is refused with the ones there are.
// expected-error @below {{qlora-save-for-backward: expects target cpu or cuda, got 'gpu'}}
module {
}
