// RUN: qlora-opt %s --split-input-file --qlora-plan-memory -verify-diagnostics | FileCheck %s
// RUN: qlora-opt %s --split-input-file --qlora-plan-memory="target=cuda" -verify-diagnostics | FileCheck %s --check-prefix=CUDA

// Tests that named slots get fixed offsets, each part on a 256-byte
// boundary and stored as the cpu stores it (fp32), that temporaries share
// the arena by lifetime, that a sum written back to the slot it read is
// computed in place, and that the module records the plan.
// CHECK-LABEL: module attributes
// CHECK-SAME: qlora.arena_bytes = 5632 : i64
// CHECK-SAME: #qlora.buffer<"grad_scale", "input", tensor<f32>, [<"data", f32, elements = 1, offset = 0>]>
// CHECK-SAME: #qlora.buffer<"loss", "output", tensor<f32>, [<"data", f32, elements = 1, offset = 256>]>
// CHECK-SAME: #qlora.buffer<"w", "frozen", tensor<16x16xbf16>, [<"data", f32, elements = 256, offset = 512>]>
// CHECK-SAME: #qlora.buffer<"p", "trainable", tensor<16x16xf32>, [<"data", f32, elements = 256, offset = 1536>]>
// CHECK-SAME: #qlora.buffer<"grad:p", "state", tensor<16x16xf32>, [<"data", f32, elements = 256, offset = 2560>]>
// CHECK-SAME: qlora.target = "cpu"
// CHECK-LABEL: func.func @train_step
// CHECK: qlora.param "w" {qlora.offsets = array<i64: 512>}
// CHECK: %[[A:.*]] = qlora.add {{.*}} {qlora.offsets = array<i64: [[T0:[0-9]+]]>}
// CHECK: %[[B:.*]] = qlora.add %[[A]], {{.*}} {qlora.offsets = array<i64: [[T1:[0-9]+]]>}
// CHECK: qlora.add %[[B]], {{.*}} {qlora.offsets = array<i64: 2560>}
//
// On cuda the frozen weight keeps its bf16, the adapter gets its bf16
// compute copy, and the runtime's status words and cuBLAS workspace join.
// CUDA-LABEL: module attributes
// CUDA-SAME: #qlora.buffer<"status", "output", tensor<4xi32>, [<"data", i32, elements = 4, offset = {{[0-9]+}}>]>
// CUDA-SAME: #qlora.buffer<"w", "frozen", tensor<16x16xbf16>, [<"data", bf16, elements = 256, offset = {{[0-9]+}}>]>
// CUDA-SAME: #qlora.buffer<"p", "trainable", tensor<16x16xf32>, [<"data", f32, elements = 256, offset = {{[0-9]+}}>, <"compute", bf16, elements = 256, offset = {{[0-9]+}}>]>
// CUDA-SAME: #qlora.buffer<"cublas_workspace", "workspace", tensor<33554432xui8>
// CUDA-SAME: qlora.target = "cuda"
// expected-remark @below {{arena: }}
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

// Tests that a sum is not computed in its slot while the slot's old value is
// still read after it.
// CHECK-LABEL: func.func @train_step
// CHECK: %[[G:.*]] = qlora.state "grad:p" {qlora.offsets = array<i64: [[SLOT:[0-9]+]]>}
// CHECK: qlora.add %[[G]], %[[G]] {qlora.offsets = array<i64: [[TEMP:[0-9]+]]>}
// CHECK-NOT: array<i64: [[SLOT]]>
// CHECK: qlora.add %[[G]]
// expected-remark @below {{arena}}
module {
  func.func @train_step() {
    %g = qlora.state "grad:p" : tensor<16x16xf32>
    %a = qlora.add %g, %g : tensor<16x16xf32>
    %b = qlora.add %g, %a : tensor<16x16xf32>
    qlora.assign "grad:p", %a : tensor<16x16xf32>
    qlora.assign "other", %b : tensor<16x16xf32>
    return
  }
  func.func @apply_gradients() {
    return
  }
}

// -----

// Tests that an NF4 parameter gets its packed codes and fp32 maxima on the
// cpu, and bitsandbytes' double-quantized parts on cuda.
// CHECK-LABEL: module attributes
// CHECK-SAME: #qlora.buffer<"q", "nf4", !qlora.nf4<64x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>, [<"codes", ui8, elements = 2048, offset = 0>, <"absmax", f32, elements = 64, offset = 2048>]>
// CHECK-LABEL: func.func @train_step
// CHECK: qlora.param "q" {qlora.offsets = array<i64: 0>}
// CUDA: #qlora.buffer<"q", "nf4"
// CUDA-SAME: [<"codes", ui8, elements = 2048, offset = {{[0-9]+}}>, <"absmax_codes", ui8, elements = 64, offset = {{[0-9]+}}>, <"absmax_scales", f32, elements = 1, offset = {{[0-9]+}}>, <"absmax_offset", f32, elements = 1, offset = {{[0-9]+}}>]
// expected-remark @below {{arena}}
module {
  func.func @train_step() {
    %q = qlora.param "q" : !qlora.nf4<64x64, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
    return
  }
  func.func @apply_gradients() {
    return
  }
}

// -----

// Tests that a kernel's workspaces are placed for the op alone: on cuda the
// NF4 product's dequantize scratch (rows * cols bf16) and the attention
// backward's fp32 scratch.
// CUDA: qlora.nf4_matmul {{.*}}qlora.workspaces = array<i64: {{[0-9]+}}>
// expected-remark @below {{arena}}
module {
  func.func @train_step() {
    %x = qlora.input "x" : tensor<2x32x64xbf16>
    %q = qlora.param "q" : !qlora.nf4<64x64, bf16, block = 64>
    %y = qlora.nf4_matmul %x, %q : (tensor<2x32x64xbf16>, !qlora.nf4<64x64, bf16, block = 64>) -> tensor<2x32x64xbf16>
    qlora.assign "y", %y : tensor<2x32x64xbf16>
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
