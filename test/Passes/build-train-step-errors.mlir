// RUN: split-file %s %t
// RUN: qlora-opt %t/no-forward.mlir --qlora-build-train-step --verify-diagnostics
// RUN: qlora-opt %t/declaration.mlir --qlora-build-train-step --verify-diagnostics
// RUN: qlora-opt %t/arguments.mlir --qlora-build-train-step --verify-diagnostics
// RUN: qlora-opt %t/result.mlir --qlora-build-train-step --verify-diagnostics
// RUN: qlora-opt %t/blocks.mlir --qlora-build-train-step --verify-diagnostics --allow-unregistered-dialect
// RUN: qlora-opt %t/existing.mlir --qlora-build-train-step --verify-diagnostics
// RUN: qlora-opt %t/no-trainable.mlir --qlora-build-train-step --verify-diagnostics
// RUN: qlora-opt %t/type-mismatch.mlir --qlora-build-train-step --verify-diagnostics
// RUN: qlora-opt %t/not-differentiable.mlir --qlora-build-train-step --verify-diagnostics
// RUN: qlora-opt %t/frozen-operand.mlir --qlora-build-train-step --verify-diagnostics
// RUN: qlora-opt %t/unreached.mlir --qlora-build-train-step --verify-diagnostics
// RUN: qlora-opt %t/warning.mlir --qlora-build-train-step --verify-diagnostics | FileCheck %t/warning.mlir
// RUN: qlora-opt %t/max-grad-norm.mlir --qlora-build-train-step="max-grad-norm=-1" --verify-diagnostics
// RUN: qlora-opt %t/beta1.mlir --qlora-build-train-step="adam-beta1=1" --verify-diagnostics
// RUN: qlora-opt %t/beta2.mlir --qlora-build-train-step="adam-beta2=1.5" --verify-diagnostics
// RUN: qlora-opt %t/epsilon.mlir --qlora-build-train-step="adam-epsilon=-1e-8" --verify-diagnostics
// RUN: qlora-opt %t/weight-decay.mlir --qlora-build-train-step="weight-decay=-0.1" --verify-diagnostics

// One case per diagnostic of qlora-build-train-step.

//--- no-forward.mlir
// Tests that the pass needs a @forward.
// expected-error @+1 {{qlora-build-train-step: expects a func.func @forward returning the loss, got none}}
module {
  func.func @loss() -> tensor<f32> {
    %0 = qlora.input "loss" : tensor<f32>
    return %0 : tensor<f32>
  }
}

//--- declaration.mlir
// Tests that @forward has a body.
// expected-error @+1 {{qlora-build-train-step: expects @forward to have a body, got a declaration}}
func.func private @forward() -> tensor<f32>

//--- arguments.mlir
// Tests that per-step inputs are qlora.input ops, not arguments.
// expected-error @+1 {{qlora-build-train-step: expects @forward to take no arguments (per-step inputs are qlora.input ops), got 1}}
func.func @forward(%ids: tensor<2x8xi32>) -> tensor<f32> {
  %0 = qlora.input "loss" : tensor<f32>
  return %0 : tensor<f32>
}

//--- result.mlir
// Tests that @forward returns a scalar f32 loss.
// expected-error @+1 {{qlora-build-train-step: expects @forward to return one tensor<f32> (the loss), got ('tensor<2xf32>')}}
func.func @forward() -> tensor<2xf32> {
  %0 = qlora.input "loss" : tensor<2xf32>
  return %0 : tensor<2xf32>
}

//--- blocks.mlir
// Tests that @forward is one straight-line block.
// expected-error @+1 {{qlora-build-train-step: expects @forward to have one block, got 2}}
func.func @forward() -> tensor<f32> {
  "test.br"()[^bb1] : () -> ()
^bb1:
  %0 = qlora.input "loss" : tensor<f32>
  return %0 : tensor<f32>
}

//--- existing.mlir
// Tests that the generated functions are not in the input already.
func.func @forward() -> tensor<f32> {
  %0 = qlora.input "loss" : tensor<f32>
  return %0 : tensor<f32>
}
// expected-error @+1 {{qlora-build-train-step: expects no @train_step in the input (the pass generates it), got one}}
func.func @train_step() -> tensor<f32> {
  %0 = qlora.input "loss" : tensor<f32>
  return %0 : tensor<f32>
}

//--- no-trainable.mlir
// Tests that there is something to train.
// expected-error @+1 {{qlora-build-train-step: expects at least one trainable qlora.param in @forward (run qlora-inject-lora first), got none}}
func.func @forward() -> tensor<f32> {
  %x = qlora.input "hidden" : tensor<2x8x64xf32>
  %labels = qlora.input "labels" : tensor<2x8xi32>
  %loss = qlora.cross_entropy %x, %labels : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

//--- type-mismatch.mlir
// Tests that every reference to a trainable parameter agrees on its type.
func.func @forward() -> tensor<f32> {
  %a = qlora.param "base_model.model.a.lora_A.weight" {trainable} : tensor<4x64xf32>
  // expected-error @+1 {{qlora-build-train-step: expects every reference to 'base_model.model.a.lora_A.weight' to have type 'tensor<4x64xf32>', got 'tensor<8x64xf32>'}}
  %a2 = qlora.param "base_model.model.a.lora_A.weight" {trainable} : tensor<8x64xf32>
  %0 = qlora.input "loss" : tensor<f32>
  return %0 : tensor<f32>
}

//--- not-differentiable.mlir
// Tests that an op between a trainable parameter and the loss must implement
// the differentiation interface.
func.func @forward() -> tensor<f32> {
  %x = qlora.input "hidden" : tensor<2x8x64xf32>
  %labels = qlora.input "labels" : tensor<2x8xi32>
  %a = qlora.param "base_model.model.a.lora_A.weight" {trainable} : tensor<4x64xf32>
  %b = qlora.param "base_model.model.a.lora_B.weight" {trainable} : tensor<64x4xf32>
  %l = qlora.lora %x, %a, %b {scale = 1.0 : f32} : (tensor<2x8x64xf32>, tensor<4x64xf32>, tensor<64x4xf32>) -> tensor<2x8x64xf32>
  // expected-error @+1 {{cannot differentiate 'arith.addf': it lies between a trainable parameter and the loss but does not implement the qlora differentiation interface}}
  %y = arith.addf %x, %l : tensor<2x8x64xf32>
  %loss = qlora.cross_entropy %y, %labels : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

//--- frozen-operand.mlir
// Tests that a trainable value cannot reach a frozen operand, here a norm
// weight marked trainable.
func.func @forward() -> tensor<f32> {
  %x = qlora.input "hidden" : tensor<2x8x64xf32>
  %labels = qlora.input "labels" : tensor<2x8xi32>
  %n = qlora.param "model.norm.weight" {trainable} : tensor<64xf32>
  // expected-error @+1 {{cannot propagate a gradient to operand #1 of 'qlora.rms_norm', which depends on a trainable parameter (the operand is frozen)}}
  %y = qlora.rms_norm %x, %n {eps = 1.0e-5 : f32} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %loss = qlora.cross_entropy %y, %labels : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

//--- unreached.mlir
// Tests that a loss that depends on no trainable parameter is an error, after
// a warning per parameter.
// expected-error @+1 {{qlora-build-train-step: expects the loss to depend on a trainable parameter, got none that reaches it}}
func.func @forward() -> tensor<f32> {
  %x = qlora.input "hidden" : tensor<2x8x64xf32>
  %labels = qlora.input "labels" : tensor<2x8xi32>
  // expected-warning @+1 {{trainable parameter 'base_model.model.a.lora_A.weight' does not reach the loss: it gets no gradient and no update}}
  %a = qlora.param "base_model.model.a.lora_A.weight" {trainable} : tensor<4x64xf32>
  %loss = qlora.cross_entropy %x, %labels : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

//--- warning.mlir
// Tests that a trainable parameter off the loss's path gets a warning and no
// update (torch skips parameters whose .grad is None), while the others train.
// CHECK-LABEL: func.func @apply_gradients
// CHECK-NOT: unused
// CHECK-COUNT-2: qlora.adamw
// CHECK-NOT: qlora.adamw
func.func @forward() -> tensor<f32> {
  %x = qlora.input "hidden" : tensor<2x8x64xf32>
  %labels = qlora.input "labels" : tensor<2x8xi32>
  // expected-warning @+1 {{trainable parameter 'base_model.model.unused.weight' does not reach the loss: it gets no gradient and no update}}
  %u = qlora.param "base_model.model.unused.weight" {trainable} : tensor<4x64xf32>
  %a = qlora.param "base_model.model.a.lora_A.weight" {trainable} : tensor<4x64xf32>
  %b = qlora.param "base_model.model.a.lora_B.weight" {trainable} : tensor<64x4xf32>
  %y = qlora.lora %x, %a, %b {scale = 1.0 : f32} : (tensor<2x8x64xf32>, tensor<4x64xf32>, tensor<64x4xf32>) -> tensor<2x8x64xf32>
  %loss = qlora.cross_entropy %y, %labels : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

//--- max-grad-norm.mlir
// Tests that the clipping norm is not negative.
// expected-error @+1 {{qlora-build-train-step: expects max-grad-norm >= 0, got -1}}
module {
}

//--- beta1.mlir
// Tests that beta1 is below one.
// expected-error @+1 {{qlora-build-train-step: expects adam-beta1 in [0, 1), got 1}}
module {
}

//--- beta2.mlir
// Tests that beta2 is below one.
// expected-error @+1 {{qlora-build-train-step: expects adam-beta2 in [0, 1), got 1.5}}
module {
}

//--- epsilon.mlir
// Tests that epsilon is not negative.
// expected-error @+1 {{qlora-build-train-step: expects adam-epsilon >= 0, got -1e-08}}
module {
}

//--- weight-decay.mlir
// Tests that weight decay is not negative.
// expected-error @+1 {{qlora-build-train-step: expects weight-decay >= 0, got -0.1}}
module {
}
