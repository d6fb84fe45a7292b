// RUN: qlora-opt %s --split-input-file --verify-diagnostics

// One case per user-facing diagnostic of the qlora types, attributes and ops.

//===----------------------------------------------------------------------===//
// !qlora.nf4
//===----------------------------------------------------------------------===//

// Tests that an nf4 type needs at least one dimension.
// expected-error @+1 {{expects a shape of rank >= 1, got rank 0}}
func.func private @nf4_rank0(!qlora.nf4<, bf16>)

// -----

// Tests that nf4 dimensions are positive.
// expected-error @+1 {{expects positive static dimensions, got 0 in dimension 1}}
func.func private @nf4_zero_dim(!qlora.nf4<64x0, bf16>)

// -----

// Tests that nf4 dimensions are static.
// expected-error @+1 {{expected static shape}}
func.func private @nf4_dynamic_dim(!qlora.nf4<?x64, bf16>)

// -----

// Tests that nf4 only quantizes from bf16, f16 or f32.
// expected-error @+1 {{expects element type bf16, f16 or f32, got 'i8'}}
func.func private @nf4_element_type(!qlora.nf4<64x64, i8>)

// -----

// Tests that the nf4 block size is positive.
// expected-error @+1 {{expects a positive block size, got 0}}
func.func private @nf4_block_zero(!qlora.nf4<64x64, bf16, block = 0>)

// -----

// Tests that the nf4 block size is a power of two.
// expected-error @+1 {{expects a power-of-two block size, got 48}}
func.func private @nf4_block_not_pow2(!qlora.nf4<64x64, bf16, block = 48>)

// -----

// Tests that the nf4 block size is one bitsandbytes supports.
// expected-error @+1 {{expects block size in [64, 4096] (bitsandbytes), got 32}}
func.func private @nf4_block_too_small(!qlora.nf4<64x64, bf16, block = 32>)

// -----

// Tests that unknown nf4 keys are rejected with the list of known ones.
// expected-error @+1 {{expects one of 'block', 'double_quant', got 'blocksize'}}
func.func private @nf4_unknown_key(!qlora.nf4<64x64, bf16, blocksize = 64>)

// -----

// Tests that an nf4 key may not repeat.
// expected-error @+1 {{expects 'block' at most once, got it twice}}
func.func private @nf4_duplicate_key(!qlora.nf4<64x64, bf16, block = 64, block = 128>)

// -----

//===----------------------------------------------------------------------===//
// #qlora.double_quant
//===----------------------------------------------------------------------===//

// Tests that double quantization uses 8-bit constants.
// expected-error @+1 {{expects 8-bit double-quant constants, got 4}}
func.func private @dq_bits(!qlora.nf4<64x64, bf16, double_quant = #qlora.double_quant<bits = 4>>)

// -----

// Tests that the double-quant block size is a power of two.
// expected-error @+1 {{expects a power-of-two double-quant block size, got 100}}
func.func private @dq_block(!qlora.nf4<64x64, bf16, double_quant = #qlora.double_quant<block = 100>>)

// -----

// Tests that the double-quant block size is one bitsandbytes supports.
// expected-error @+1 {{expects double-quant block size in [64, 4096] (bitsandbytes), got 8192}}
func.func private @dq_block_range(!qlora.nf4<64x64, bf16, double_quant = #qlora.double_quant<block = 8192>>)

// -----

//===----------------------------------------------------------------------===//
// #qlora.lora_config
//===----------------------------------------------------------------------===//

// Tests that the LoRA rank is positive.
// expected-error @+1 {{expects r > 0, got 0}}
func.func private @lora_config_r() attributes {c = #qlora.lora_config<r = 0>}

// -----

// Tests that lora_alpha is positive.
// expected-error @+1 {{expects lora_alpha > 0, got -1}}
func.func private @lora_config_alpha() attributes {c = #qlora.lora_config<lora_alpha = -1.0>}

// -----

// Tests that lora_dropout is a probability below one.
// expected-error @+1 {{expects lora_dropout in [0, 1), got 1}}
func.func private @lora_config_dropout() attributes {c = #qlora.lora_config<lora_dropout = 1.0>}

// -----

// Tests that lora_alpha is a number.
// expected-error @+1 {{expects a number for 'lora_alpha', got "32"}}
func.func private @lora_config_alpha_string() attributes {c = #qlora.lora_config<lora_alpha = "32">}

// -----

// Tests that use_rslora is a boolean.
// expected-error @+1 {{expects true or false for 'use_rslora', got 'yes'}}
func.func private @lora_config_rslora() attributes {c = #qlora.lora_config<use_rslora = yes>}

// -----

// Tests that lora_config keys are PEFT's field names.
// expected-error @+1 {{expects one of 'r', 'lora_alpha', 'lora_dropout', 'use_rslora', got 'rslora'}}
func.func private @lora_config_key() attributes {c = #qlora.lora_config<rslora = true>}

// -----

//===----------------------------------------------------------------------===//
// qlora.param
//===----------------------------------------------------------------------===//

// Tests that a parameter names a checkpoint tensor.
func.func @param_empty_name() {
  // expected-error @+1 {{'qlora.param' op expects a non-empty checkpoint name, got ""}}
  %0 = qlora.param "" : tensor<16x64xf32>
  return
}

// -----

// Tests that NF4 base weights cannot be trainable.
func.func @param_trainable_nf4() {
  // expected-error @+1 {{'qlora.param' op expects a tensor type for a trainable parameter (NF4 weights are frozen), got '!qlora.nf4<64x64, bf16, block = 64>'}}
  %0 = qlora.param "model.w" {trainable} : !qlora.nf4<64x64, bf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.quantize / qlora.dequantize
//===----------------------------------------------------------------------===//

// Tests that dequantize restores the nf4 type's shape.
func.func @dequantize_shape(%w: !qlora.nf4<64x128, bf16>) {
  // expected-error @+1 {{'qlora.dequantize' op expects result shape 64x128 (from the nf4 type), got 128x64}}
  %0 = qlora.dequantize %w : !qlora.nf4<64x128, bf16> -> tensor<128x64xbf16>
  return
}

// -----

// Tests that dequantize restores the nf4 type's element type.
func.func @dequantize_element_type(%w: !qlora.nf4<64x128, bf16>) {
  // expected-error @+1 {{'qlora.dequantize' op expects result element type 'bf16' (from the nf4 type), got 'f16'}}
  %0 = qlora.dequantize %w : !qlora.nf4<64x128, bf16> -> tensor<64x128xf16>
  return
}

// -----

// Tests that quantize takes a tensor of the nf4 type's shape.
func.func @quantize_shape(%w: tensor<64x64xbf16>) {
  // expected-error @+1 {{'qlora.quantize' op expects input shape 64x128 (from the nf4 type), got 64x64}}
  %0 = qlora.quantize %w : tensor<64x64xbf16> -> !qlora.nf4<64x128, bf16>
  return
}

// -----

// Tests that quantize takes a tensor of the nf4 type's element type.
func.func @quantize_element_type(%w: tensor<64x128xf32>) {
  // expected-error @+1 {{'qlora.quantize' op expects input element type 'bf16' (from the nf4 type), got 'f32'}}
  %0 = qlora.quantize %w : tensor<64x128xf32> -> !qlora.nf4<64x128, bf16>
  return
}

// -----

// Tests that quantize only accepts the dtypes bitsandbytes quantizes from.
func.func @quantize_f64(%w: tensor<64x128xf64>) {
  // expected-error @+1 {{'qlora.quantize' op operand #0 must be ranked tensor of bfloat16 type or 16-bit float or 32-bit float values, but got 'tensor<64x128xf64>'}}
  %0 = qlora.quantize %w : tensor<64x128xf64> -> !qlora.nf4<64x128, bf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.linear / qlora.nf4_matmul
//===----------------------------------------------------------------------===//

// Tests that linear needs an [..., M, K] input.
func.func @linear_input_rank(%x: tensor<64xbf16>, %w: tensor<128x64xbf16>) {
  // expected-error @+1 {{'qlora.linear' op expects input of rank >= 2 ([..., M, K]), got rank 1}}
  %0 = qlora.linear %x, %w : (tensor<64xbf16>, tensor<128x64xbf16>) -> tensor<128xbf16>
  return
}

// -----

// Tests that linear needs an [out, in] weight.
func.func @linear_weight_rank(%x: tensor<8x64xbf16>, %w: tensor<2x128x64xbf16>) {
  // expected-error @+1 {{'qlora.linear' op expects weight of rank 2 ([out, in]), got rank 3}}
  %0 = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<2x128x64xbf16>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that the weight's in features match the input's last dimension.
func.func @linear_k(%x: tensor<8x64xbf16>, %w: tensor<128x32xbf16>) {
  // expected-error @+1 {{'qlora.linear' op expects weight to have 64 columns (input features), got 32}}
  %0 = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<128x32xbf16>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that the weight's element type matches the input's.
func.func @linear_weight_element_type(%x: tensor<8x64xbf16>, %w: tensor<128x64xf32>) {
  // expected-error @+1 {{'qlora.linear' op expects weight element type 'bf16' (input element type), got 'f32'}}
  %0 = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<128x64xf32>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that the result keeps the input's rank.
func.func @linear_result_rank(%x: tensor<2x8x64xbf16>, %w: tensor<128x64xbf16>) {
  // expected-error @+1 {{'qlora.linear' op expects result of rank 3 (input rank), got rank 2}}
  %0 = qlora.linear %x, %w : (tensor<2x8x64xbf16>, tensor<128x64xbf16>) -> tensor<16x128xbf16>
  return
}

// -----

// Tests that the result keeps the input's batch and M dimensions.
func.func @linear_result_m(%x: tensor<2x8x64xbf16>, %w: tensor<128x64xbf16>) {
  // expected-error @+1 {{'qlora.linear' op expects result dimension 1 to be 8 (from input), got 4}}
  %0 = qlora.linear %x, %w : (tensor<2x8x64xbf16>, tensor<128x64xbf16>) -> tensor<2x4x128xbf16>
  return
}

// -----

// Tests that the result's last dimension is the weight's out features.
func.func @linear_result_n(%x: tensor<8x64xbf16>, %w: tensor<128x64xbf16>) {
  // expected-error @+1 {{'qlora.linear' op expects result dimension 1 to be 128 (weight rows), got 64}}
  %0 = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x64xbf16>
  return
}

// -----

// Tests that the result keeps the input's element type.
func.func @linear_result_element_type(%x: tensor<8x64xbf16>, %w: tensor<128x64xbf16>) {
  // expected-error @+1 {{'qlora.linear' op expects result element type 'bf16' (input element type), got 'f32'}}
  %0 = qlora.linear %x, %w : (tensor<8x64xbf16>, tensor<128x64xbf16>) -> tensor<8x128xf32>
  return
}

// -----

// Tests that linear works on floats only.
func.func @linear_integers(%x: tensor<8x64xi8>, %w: tensor<128x64xi8>) {
  // expected-error @+1 {{'qlora.linear' op operand #0 must be ranked tensor of floating-point values, but got 'tensor<8x64xi8>'}}
  %0 = qlora.linear %x, %w : (tensor<8x64xi8>, tensor<128x64xi8>) -> tensor<8x128xi8>
  return
}

// -----

// Tests that nf4_matmul checks K against the nf4 type's logical shape.
func.func @nf4_matmul_k(%x: tensor<8x64xbf16>, %w: !qlora.nf4<128x256, bf16>) {
  // expected-error @+1 {{'qlora.nf4_matmul' op expects weight to have 64 columns (input features), got 256}}
  %0 = qlora.nf4_matmul %x, %w : (tensor<8x64xbf16>, !qlora.nf4<128x256, bf16>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that nf4_matmul needs a rank-2 nf4 weight.
func.func @nf4_matmul_rank(%x: tensor<8x64xbf16>, %w: !qlora.nf4<4x128x64, bf16>) {
  // expected-error @+1 {{'qlora.nf4_matmul' op expects weight of rank 2 ([out, in]), got rank 3}}
  %0 = qlora.nf4_matmul %x, %w : (tensor<8x64xbf16>, !qlora.nf4<4x128x64, bf16>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that nf4_matmul checks the nf4 type's original element type.
func.func @nf4_matmul_element_type(%x: tensor<8x64xbf16>, %w: !qlora.nf4<128x64, f16>) {
  // expected-error @+1 {{'qlora.nf4_matmul' op expects weight element type 'bf16' (input element type), got 'f16'}}
  %0 = qlora.nf4_matmul %x, %w : (tensor<8x64xbf16>, !qlora.nf4<128x64, f16>) -> tensor<8x128xbf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.lora / qlora.lora_linear
//===----------------------------------------------------------------------===//

// Tests that lora needs an [..., M, K] input.
func.func @lora_input_rank(%x: tensor<64xbf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  // expected-error @+1 {{'qlora.lora' op expects input of rank >= 2 ([..., M, K]), got rank 1}}
  %0 = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<128xbf16>
  return
}

// -----

// Tests that lora_A is [r, in].
func.func @lora_a_rank(%x: tensor<8x64xbf16>, %a: tensor<16xf32>, %b: tensor<128x16xf32>) {
  // expected-error @+1 {{'qlora.lora' op expects lora_A of rank 2 ([r, in]), got rank 1}}
  %0 = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that lora_B is [out, r].
func.func @lora_b_rank(%x: tensor<8x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<2x128x16xf32>) {
  // expected-error @+1 {{'qlora.lora' op expects lora_B of rank 2 ([out, r]), got rank 3}}
  %0 = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<2x128x16xf32>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that lora_A's columns match the input features.
func.func @lora_a_k(%x: tensor<8x64xbf16>, %a: tensor<16x32xf32>, %b: tensor<128x16xf32>) {
  // expected-error @+1 {{'qlora.lora' op expects lora_A to have 64 columns (input features), got 32}}
  %0 = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16x32xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that lora_A and lora_B agree on the rank r.
func.func @lora_r(%x: tensor<8x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<128x8xf32>) {
  // expected-error @+1 {{'qlora.lora' op expects lora_B to have 16 columns (r), got 8}}
  %0 = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x8xf32>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that the LoRA scale is positive.
func.func @lora_scale(%x: tensor<8x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  // expected-error @+1 {{'qlora.lora' op expects a positive finite scale, got -2}}
  %0 = qlora.lora %x, %a, %b {scale = -2.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that dropout is a probability below one.
func.func @lora_dropout(%x: tensor<8x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  // expected-error @+1 {{'qlora.lora' op expects dropout in [0, 1), got 1}}
  %0 = qlora.lora %x, %a, %b {scale = 2.0 : f32, dropout = 1.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that the branch's out features come from lora_B's rows.
func.func @lora_result_n(%x: tensor<8x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  // expected-error @+1 {{'qlora.lora' op expects result dimension 1 to be 128 (lora_B rows), got 256}}
  %0 = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x256xbf16>
  return
}

// -----

// Tests that the branch result keeps the input's element type, whatever the
// adapters' precision.
func.func @lora_result_element_type(%x: tensor<8x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  // expected-error @+1 {{'qlora.lora' op expects result element type 'bf16' (input element type), got 'f32'}}
  %0 = qlora.lora %x, %a, %b {scale = 2.0 : f32} : (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xf32>
  return
}

// -----

// Tests that lora_linear checks its base weight against the input.
func.func @lora_linear_k(%x: tensor<8x64xbf16>, %w: !qlora.nf4<128x32, bf16>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  // expected-error @+1 {{'qlora.lora_linear' op expects weight to have 64 columns (input features), got 32}}
  %0 = qlora.lora_linear %x, %w, %a, %b {scale = 2.0 : f32}
         : (tensor<8x64xbf16>, !qlora.nf4<128x32, bf16>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that lora_linear checks the LoRA rank.
func.func @lora_linear_r(%x: tensor<8x64xbf16>, %w: tensor<128x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<128x8xf32>) {
  // expected-error @+1 {{'qlora.lora_linear' op expects lora_B to have 16 columns (r), got 8}}
  %0 = qlora.lora_linear %x, %w, %a, %b {scale = 2.0 : f32}
         : (tensor<8x64xbf16>, tensor<128x64xbf16>, tensor<16x64xf32>, tensor<128x8xf32>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that the base weight and lora_B agree on the out features.
func.func @lora_linear_n(%x: tensor<8x64xbf16>, %w: tensor<128x64xbf16>, %a: tensor<16x64xf32>, %b: tensor<256x16xf32>) {
  // expected-error @+1 {{'qlora.lora_linear' op expects result dimension 1 to be 256 (lora_B rows), got 128}}
  %0 = qlora.lora_linear %x, %w, %a, %b {scale = 2.0 : f32}
         : (tensor<8x64xbf16>, tensor<128x64xbf16>, tensor<16x64xf32>, tensor<256x16xf32>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that lora_linear's base weight is a float tensor or nf4.
func.func @lora_linear_weight_type(%x: tensor<8x64xbf16>, %w: tensor<128x64xi4>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  // expected-error @+1 {{'qlora.lora_linear' op operand #1 must be ranked tensor of floats or !qlora.nf4, but got 'tensor<128x64xi4>'}}
  %0 = qlora.lora_linear %x, %w, %a, %b {scale = 2.0 : f32}
         : (tensor<8x64xbf16>, tensor<128x64xi4>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xbf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.add
//===----------------------------------------------------------------------===//

// Tests that add's lhs has the result type (only expressible in generic form).
func.func @add_lhs(%l: tensor<8x64xbf16>, %r: tensor<8x128xbf16>) {
  // expected-error @+1 {{'qlora.add' op expects lhs of the result type 'tensor<8x128xbf16>', got 'tensor<8x64xbf16>'}}
  %0 = "qlora.add"(%l, %r) : (tensor<8x64xbf16>, tensor<8x128xbf16>) -> tensor<8x128xbf16>
  return
}

// -----

// Tests that add's rhs has the result type.
func.func @add_rhs(%l: tensor<8x128xbf16>, %r: tensor<8x128xf32>) {
  // expected-error @+1 {{'qlora.add' op expects rhs of the result type 'tensor<8x128xbf16>', got 'tensor<8x128xf32>'}}
  %0 = "qlora.add"(%l, %r) : (tensor<8x128xbf16>, tensor<8x128xf32>) -> tensor<8x128xbf16>
  return
}
