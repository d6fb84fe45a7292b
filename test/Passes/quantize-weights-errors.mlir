// RUN: split-file %s %t
// RUN: qlora-opt %t/block.mlir --qlora-quantize-weights="block-size=48" --verify-diagnostics
// RUN: qlora-opt %t/block-range.mlir --qlora-quantize-weights="block-size=8192" --verify-diagnostics
// RUN: qlora-opt %t/dq-block.mlir --qlora-quantize-weights="double-quant-block-size=0" --verify-diagnostics
// RUN: qlora-opt %t/element-type.mlir --qlora-quantize-weights --verify-diagnostics
// RUN: qlora-opt %t/dynamic.mlir --qlora-quantize-weights --verify-diagnostics

// One case per diagnostic of qlora-quantize-weights.

//--- block.mlir
// Tests that the block size is a power of two.
// expected-error @+1 {{qlora-quantize-weights: expects a power-of-two block size, got 48}}
module {
}

//--- block-range.mlir
// Tests that the block size is one bitsandbytes supports.
// expected-error @+1 {{qlora-quantize-weights: expects block size in [64, 4096] (bitsandbytes), got 8192}}
module {
}

//--- dq-block.mlir
// Tests that the double-quant block size is checked too.
// expected-error @+1 {{qlora-quantize-weights: expects a positive double-quant block size, got 0}}
module {
}

//--- element-type.mlir
// Tests that only bf16, f16 and f32 weights can be quantized.
func.func @f64_weight(%x: tensor<8x64xf64>) -> tensor<8x64xf64> {
  // expected-error @+1 {{qlora-quantize-weights: cannot quantize 'model.layers.0.mlp.up_proj.weight': expects element type bf16, f16 or f32, got 'f64'}}
  %w = qlora.param "model.layers.0.mlp.up_proj.weight" : tensor<64x64xf64>
  %y = qlora.linear %x, %w : (tensor<8x64xf64>, tensor<64x64xf64>) -> tensor<8x64xf64>
  return %y : tensor<8x64xf64>
}

//--- dynamic.mlir
// Tests that a weight needs a static shape to be quantized.
func.func @dynamic_weight(%x: tensor<8x64xbf16>) -> tensor<8x?xbf16> {
  // expected-error @+1 {{qlora-quantize-weights: cannot quantize 'model.layers.0.mlp.up_proj.weight': expects a static shape, got 'tensor<?x64xbf16>'}}
  %w = qlora.param "model.layers.0.mlp.up_proj.weight" : tensor<?x64xbf16>
  %y = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<?x64xbf16>) -> tensor<8x?xbf16>
  return %y : tensor<8x?xbf16>
}
