// RUN: split-file %s %t
// RUN: qlora-opt %t/r.mlir --qlora-inject-lora="r=0" --verify-diagnostics
// RUN: qlora-opt %t/alpha.mlir --qlora-inject-lora="lora-alpha=-1" --verify-diagnostics
// RUN: qlora-opt %t/dropout.mlir --qlora-inject-lora="lora-dropout=1.0" --verify-diagnostics
// RUN: qlora-opt %t/empty-target.mlir --qlora-inject-lora="target-modules=q_proj,,v_proj" --verify-diagnostics
// RUN: qlora-opt %t/all-linear-mixed.mlir --qlora-inject-lora="target-modules=all-linear,q_proj" --verify-diagnostics
// RUN: qlora-opt %t/unmatched.mlir --qlora-inject-lora="target-modules=q_proj,x_proj,qkv_proj" --verify-diagnostics
// RUN: qlora-opt %t/no-linear.mlir --qlora-inject-lora="target-modules=all-linear" --verify-diagnostics
// RUN: qlora-opt %t/twice.mlir --qlora-inject-lora --verify-diagnostics

// One case per diagnostic of qlora-inject-lora; each file runs with its own
// options.

//--- r.mlir
// Tests that the rank is positive.
// expected-error @+1 {{qlora-inject-lora: expects r > 0, got 0}}
module {
}

//--- alpha.mlir
// Tests that lora_alpha is positive.
// expected-error @+1 {{qlora-inject-lora: expects lora-alpha > 0, got -1}}
module {
}

//--- dropout.mlir
// Tests that dropout is a probability below one.
// expected-error @+1 {{qlora-inject-lora: expects lora-dropout in [0, 1), got 1}}
module {
}

//--- empty-target.mlir
// Tests that target module names are not empty.
// expected-error @+1 {{qlora-inject-lora: expects non-empty target-modules names, got an empty one}}
module {
}

//--- all-linear-mixed.mlir
// Tests that all-linear is not combined with module names.
// expected-error @+1 {{qlora-inject-lora: expects 'all-linear' alone in target-modules, got 2 names}}
module {
}

//--- unmatched.mlir
// Tests that every target module that matches no linear layer is named, as
// PEFT refuses target modules it cannot find.
// expected-error @+2 {{qlora-inject-lora: target module 'x_proj' matches no linear layer of the model}}
// expected-error @+1 {{qlora-inject-lora: target module 'qkv_proj' matches no linear layer of the model}}
module {
  func.func @forward(%x: tensor<2x8x64xf32>) -> tensor<2x8x64xf32> {
    %w = qlora.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
    %y = qlora.linear %x, %w : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
    return %y : tensor<2x8x64xf32>
  }
}

//--- no-linear.mlir
// Tests that all-linear on a model without linear layers (here only the
// output layer) is an error too.
// expected-error @+1 {{qlora-inject-lora: target module 'all-linear' matches no linear layer of the model}}
module {
  func.func @forward(%x: tensor<2x8x64xf32>) -> tensor<2x8x128xf32> {
    %w = qlora.param "lm_head.weight" : tensor<128x64xbf16>
    %y = qlora.linear %x, %w : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
    return %y : tensor<2x8x128xf32>
  }
}

//--- twice.mlir
// Tests that a projection that already has an adapter is refused rather than
// adapted twice.
func.func @forward(%x: tensor<2x8x64xf32>) -> tensor<2x8x64xf32> {
  %w = qlora.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
  %a = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {trainable} : tensor<8x64xf32>
  %b = qlora.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {trainable} : tensor<64x8xf32>
  // expected-error @+1 {{qlora-inject-lora: 'model.layers.0.self_attn.q_proj' already has a LoRA adapter ('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')}}
  %y0 = qlora.linear %x, %w : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
  %yl = qlora.lora %x, %a, %b {scale = 1.0 : f32} : (tensor<2x8x64xf32>, tensor<8x64xf32>, tensor<64x8xf32>) -> tensor<2x8x64xf32>
  %y = qlora.add %y0, %yl : tensor<2x8x64xf32>
  %wv = qlora.param "model.layers.0.self_attn.v_proj.weight" : tensor<64x64xbf16>
  %v = qlora.linear %y, %wv : (tensor<2x8x64xf32>, tensor<64x64xbf16>) -> tensor<2x8x64xf32>
  return %v : tensor<2x8x64xf32>
}
