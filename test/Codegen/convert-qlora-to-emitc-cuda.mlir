// RUN: qlora-opt %s --split-input-file --qlora-plan-memory="target=cuda" --convert-qlora-to-emitc -verify-diagnostics | FileCheck %s

// Tests that a cuda step calls the cuda step runtime, that each NF4 product
// takes the strategy its shape calls for (the small-M tensor-core kernel at
// 8 rows, dequantize + cuBLAS into its planned scratch at 64), that the NF4
// weight passes bitsandbytes' four parts, and that the choices are recorded
// for the manifest.
// CHECK-LABEL: module attributes
// CHECK-SAME: qlora.kernels = [{entry = "train_step", kernel = "nf4LinearSmallM", op = "qlora.nf4_matmul", variant = "small_m"}, {entry = "train_step", kernel = "nf4LinearDequantGemm", op = "qlora.nf4_matmul", variant = "dequant_gemm"}
// CHECK: emitc.include "runtime/step/CudaStep.h"
// CHECK: emitc.verbatim "QLORA_STEP_LIBRARY_INFO(\22cuda\22)"
// CHECK: emitc.func @qlora_train_step_impl(%[[CTX:.*]]: !emitc.ptr<!emitc.opaque<"qlora::cuda_step::StepContext">>)
// CHECK: call_opaque "qlora::cuda_step::nf4LinearSmallM"(%[[CTX]]) {args = [0 : index, {{[0-9]+}}, #emitc.opaque<"qlora::cuda_step::NF4Parts{{.*}}, -1, {{[0-9]+}}, {{[0-9]+}}, {{[0-9]+}}, 64, 64, 64, 256}">, 8, {{[0-9]+}}]}
// CHECK: call_opaque "qlora::cuda_step::nf4LinearDequantGemm"(%[[CTX]]) {args = [0 : index, {{[0-9]+}}, #emitc.opaque<{{.*}}>, 64, {{[0-9]+}}, {{[0-9]+}}]}
// CHECK: emitc.verbatim "QLORA_CUDA_STEP_ENTRY(qlora_train_step, qlora_train_step_impl)"
// expected-remark @below {{arena}}
module {
  func.func @train_step() {
    %x = qlora.input "x" : tensor<8x64xbf16>
    %big = qlora.input "big" : tensor<64x64xbf16>
    %q = qlora.param "q" : !qlora.nf4<64x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
    %y = qlora.nf4_matmul %x, %q : (tensor<8x64xbf16>, !qlora.nf4<64x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>) -> tensor<8x64xbf16>
    %z = qlora.nf4_matmul %big, %q : (tensor<64x64xbf16>, !qlora.nf4<64x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>) -> tensor<64x64xbf16>
    qlora.assign "y", %y : tensor<8x64xbf16>
    qlora.assign "z", %z : tensor<64x64xbf16>
    return
  }
  func.func @apply_gradients() {
    return
  }
}

// -----

// Tests that the cuda kernels refuse fp32 activations: the compute type is
// decided before the lowering.
// expected-remark @below {{arena}}
module {
  func.func @train_step() {
    %x = qlora.input "x" : tensor<2x4x16xf32>
    %w = qlora.param "norm" : tensor<16xbf16>
    // expected-error @below {{the cuda kernels read activations as bf16, got 'f32'; run qlora-assign-compute-type}}
    %y = qlora.rms_norm %x, %w {eps = 1.0e-05 : f32} : (tensor<2x4x16xf32>, tensor<16xbf16>) -> tensor<2x4x16xf32>
    return
  }
  func.func @apply_gradients() {
    return
  }
}

// -----

// Tests that a fused region becomes one generated __global__ kernel (a
// grid-stride loop: loads widened to f32, the body's arithmetic, one
// rounded store per result) and a launch of it over the elements with the
// arena offsets of its inputs and result.
// CHECK-LABEL: module attributes
// CHECK-SAME: {entry = "train_step", kernel = "launchElementwise", op = "qlora.fused_elementwise", variant = "qlora_fused_0"}
// CHECK: emitc.func @qlora_fused_0(%[[N:.*]]: i64, %[[A:.*]]: !emitc.ptr<!emitc.opaque<"const uint16_t">>, %[[S:.*]]: !emitc.ptr<!emitc.opaque<"const float">>, %[[OUT:.*]]: !emitc.ptr<!emitc.opaque<"uint16_t">>)
// CHECK-SAME: specifiers = ["static", "__global__"]
// CHECK: for %[[I:.*]] = %{{.*}} to %[[N]] step %{{.*}} : i64 {
// CHECK: %[[X:.*]] = call_opaque "qlora::gen::load"(%[[A]], %[[I]])
// CHECK: %[[C:.*]] = call_opaque "qlora::gen::loadScalar"(%[[S]])
// CHECK: %[[P:.*]] = mul %[[X]], %[[C]] : (f32, f32) -> f32
// CHECK: %[[Q:.*]] = add %[[P]], %[[X]] : (f32, f32) -> f32
// CHECK: call_opaque "qlora::gen::store"(%[[OUT]], %[[I]], %[[Q]])
// CHECK: emitc.func @qlora_train_step_impl
// CHECK: call_opaque "qlora::cuda_step::launchElementwise"(%{{.*}}) {args = [0 : index, #emitc.opaque<"qlora_fused_0">, #emitc.opaque<"\22qlora_fused_0\22">, 512, {{[0-9]+}}, {{[0-9]+}}, {{[0-9]+}}]}
// expected-remark @below {{arena}}
module {
  func.func @train_step() {
    %x = qlora.input "x" : tensor<8x64xbf16>
    %s = qlora.input "s" : tensor<f32>
    %y = qlora.fused_elementwise (%x, %s) : (tensor<8x64xbf16>, tensor<f32>) -> tensor<8x64xbf16> {
    ^bb0(%a: f32, %c: f32):
      %p = arith.mulf %a, %c : f32
      %q = arith.addf %p, %a : f32
      qlora.yield %q : f32
    }
    qlora.assign "y", %y : tensor<8x64xbf16>
    return
  }
  func.func @apply_gradients() {
    return
  }
}
