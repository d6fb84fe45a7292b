// RUN: qlora-opt %s --split-input-file --qlora-plan-memory --convert-qlora-to-emitc -verify-diagnostics | FileCheck %s

// Tests that each op becomes one runtime call with constant offsets, that
// the entries are exported as C symbols and that @forward is dropped.
// CHECK-LABEL: module
// CHECK-SAME: qlora.kernels = [{entry = "train_step", kernel = "rmsNorm", op = "qlora.rms_norm"}, {entry = "train_step", kernel = "nf4Linear", op = "qlora.nf4_matmul"}
// CHECK: emitc.include "runtime/step/CpuStepSupport.h"
// CHECK: emitc.verbatim "QLORA_STEP_LIBRARY_INFO(\22cpu\22)"
// CHECK: emitc.func @qlora_train_step_impl(%[[CTX:.*]]: !emitc.ptr<!emitc.opaque<"qlora::step::StepContext">>)
// CHECK-SAME: specifiers = ["static"]
// CHECK: call_opaque "qlora::step::rmsNorm"(%[[CTX]]) {args = [0 : index, [[X:[0-9]+]], [[W:[0-9]+]], 8, 16, 9.99999974E-6 : f32, [[Y:[0-9]+]]]}
// CHECK: call_opaque "qlora::step::nf4Linear"(%[[CTX]]) {args = [0 : index, [[Y]], #emitc.opaque<"qlora::step::NF4Parts{[[PACKED:[0-9]+]], [[ABSMAX:[0-9]+]], 32, 16, 64}">, 8, [[Z:[0-9]+]]]}
// CHECK: call_opaque "qlora::step::sumSquares"(%[[CTX]]) {args = [0 : index, [[Z]], 256, [[L:[0-9]+]]]}
// CHECK: call_opaque "qlora::step::copy"(%[[CTX]]) {args = [0 : index, [[L]], 4, [[LOSS:[0-9]+]]]}
// CHECK: emitc.verbatim "QLORA_STEP_ENTRY(qlora_train_step, qlora_train_step_impl)"
// CHECK: emitc.func @qlora_apply_gradients_impl
// CHECK: emitc.verbatim "QLORA_STEP_ENTRY(qlora_apply_gradients, qlora_apply_gradients_impl)"
// CHECK-NOT: func.func
// expected-remark @below {{arena}}
module {
  func.func @forward() {
    return
  }
  func.func @train_step() -> tensor<f32> {
    %x = qlora.input "x" : tensor<2x4x16xf32>
    %w = qlora.param "norm" : tensor<16xbf16>
    %y = qlora.rms_norm %x, %w {eps = 1.0e-05 : f32} : (tensor<2x4x16xf32>, tensor<16xbf16>) -> tensor<2x4x16xf32>
    %q = qlora.param "q" : !qlora.nf4<32x16, bf16, block = 64>
    %z = qlora.nf4_matmul %y, %q : (tensor<2x4x16xf32>, !qlora.nf4<32x16, bf16, block = 64>) -> tensor<2x4x32xf32>
    %l = qlora.sum_squares %z : tensor<2x4x32xf32>
    return %l : tensor<f32>
  }
  func.func @apply_gradients() {
    return
  }
}

// -----

// Tests that a branch with dropout reads the per-call seed the plan adds and
// passes its stream, in the forward and in the backward.
// CHECK-LABEL: module attributes
// CHECK-SAME: #qlora.buffer<"dropout_seed", "input", tensor<i32>, [<"data", i32, elements = 1, offset = [[SEED:[0-9]+]]>]>
// CHECK: call_opaque "qlora::step::loraDropout"(%{{.*}}) {args = [0 : index, {{[0-9]+}}, {{[0-9]+}}, {{[0-9]+}}, 4, 8, 16, 2, 2.000000e+00 : f32, 1.000000e-01 : f32, 3, [[SEED]], 0, {{[0-9]+}}, {{[0-9]+}}, {{[0-9]+}}]}
// CHECK: call_opaque "qlora::step::loraGradDropout"(%{{.*}}) {args = [0 : index, {{[0-9]+}}, {{[0-9]+}}, {{[0-9]+}}, {{[0-9]+}}, 4, 8, 16, 2, 2.000000e+00 : f32, 1.000000e-01 : f32, 3, [[SEED]],
// expected-remark @below {{arena}}
module {
  func.func @train_step() {
    %x = qlora.input "x" : tensor<4x16xf32>
    %a = qlora.param "a" {trainable} : tensor<2x16xf32>
    %b = qlora.param "b" {trainable} : tensor<8x2xf32>
    %y = qlora.lora %x, %a, %b {scale = 2.0 : f32, dropout = 0.1 : f32, dropout_stream = 3 : i64} : (tensor<4x16xf32>, tensor<2x16xf32>, tensor<8x2xf32>) -> tensor<4x8xf32>
    %dx, %da, %db = qlora.lora_grad %x, %a, %b, %y {scale = 2.0 : f32, dropout = 0.1 : f32, dropout_stream = 3 : i64} : (tensor<4x16xf32>, tensor<2x16xf32>, tensor<8x2xf32>, tensor<4x8xf32>) -> (tensor<4x16xf32>, tensor<2x16xf32>, tensor<8x2xf32>)
    return
  }
  func.func @apply_gradients() {
    return
  }
}

// -----

// expected-remark @below {{arena}}
module {
  func.func @train_step() {
    %x = qlora.input "x" : tensor<4x16xf32>
    %a = qlora.param "a" {trainable} : tensor<2x16xf32>
    %b = qlora.param "b" {trainable} : tensor<8x2xf32>
    // expected-error @below {{a LoRA branch with dropout needs a dropout_stream (qlora-build-train-step assigns them)}}
    %y = qlora.lora %x, %a, %b {scale = 2.0 : f32, dropout = 0.1 : f32} : (tensor<4x16xf32>, tensor<2x16xf32>, tensor<8x2xf32>) -> tensor<4x8xf32>
    return
  }
  func.func @apply_gradients() {
    return
  }
}

// -----

// expected-remark @below {{arena}}
module {
  func.func @train_step() {
    %q = qlora.param "q" : !qlora.nf4<32x16, bf16, block = 64>
    // expected-error @below {{a standalone qlora.dequantize has no cpu kernel; run qlora-fuse-dequant-matmul so that it feeds a projection}}
    %w = qlora.dequantize %q : !qlora.nf4<32x16, bf16, block = 64> -> tensor<32x16xbf16>
    return
  }
  func.func @apply_gradients() {
    return
  }
}
