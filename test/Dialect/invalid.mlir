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

// -----

//===----------------------------------------------------------------------===//
// qlora.input / qlora.state / qlora.assign
//===----------------------------------------------------------------------===//

// Tests that an input has a name the host can bind.
func.func @input_empty_name() {
  // expected-error @+1 {{'qlora.input' op expects a non-empty input name, got ""}}
  %0 = qlora.input "" : tensor<2x64xi32>
  return
}

// -----

// Tests that a state read names its slot.
func.func @state_empty_name() {
  // expected-error @+1 {{'qlora.state' op expects a non-empty slot name, got ""}}
  %0 = qlora.state "" : tensor<8x64xf32>
  return
}

// -----

// Tests that a state write names its slot.
func.func @assign_empty_name(%v: tensor<8x64xf32>) {
  // expected-error @+1 {{'qlora.assign' op expects a non-empty slot name, got ""}}
  qlora.assign "", %v : tensor<8x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.lora dropout_stream
//===----------------------------------------------------------------------===//

// Tests that a dropout stream is a non-negative index.
func.func @lora_dropout_stream(%x: tensor<8x64xf32>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>) {
  // expected-error @+1 {{'qlora.lora' op expects a non-negative dropout_stream, got -1}}
  %0 = qlora.lora %x, %a, %b {scale = 2.0 : f32, dropout = 0.1 : f32, dropout_stream = -1 : i64} : (tensor<8x64xf32>, tensor<16x64xf32>, tensor<128x16xf32>) -> tensor<8x128xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.attention
//===----------------------------------------------------------------------===//

// Tests that the head counts are positive.
func.func @attention_num_heads(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'qlora.attention' op expects a positive num_heads, got 0}}
  %0 = qlora.attention %q, %k, %k {num_heads = 0 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that the KV head count is positive.
func.func @attention_num_kv_heads(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'qlora.attention' op expects a positive num_kv_heads, got -2}}
  %0 = qlora.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = -2 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that the head size is positive.
func.func @attention_head_dim(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'qlora.attention' op expects a positive head_dim, got 0}}
  %0 = qlora.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 0 : i64, scale = 0.25 : f32} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that query heads split evenly over the KV heads (GQA).
func.func @attention_gqa(%q: tensor<2x8x64xf32>, %k: tensor<2x8x48xf32>) {
  // expected-error @+1 {{'qlora.attention' op expects num_kv_heads to divide num_heads 4, got 3}}
  %0 = qlora.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 3 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<2x8x64xf32>, tensor<2x8x48xf32>, tensor<2x8x48xf32>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that the softmax scale is positive.
func.func @attention_scale(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'qlora.attention' op expects a positive finite scale, got 0}}
  %0 = qlora.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.0 : f32} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that q has a sequence dimension.
func.func @attention_q_rank(%q: tensor<64xf32>, %k: tensor<32xf32>) {
  // expected-error @+1 {{'qlora.attention' op expects q of rank >= 2 ([..., S, num_heads * head_dim]), got rank 1}}
  %0 = qlora.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<64xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<64xf32>
  return
}

// -----

// Tests that k has q's rank.
func.func @attention_k_rank(%q: tensor<2x8x64xf32>, %k: tensor<8x32xf32>) {
  // expected-error @+1 {{'qlora.attention' op expects k of rank 3 (q rank), got rank 2}}
  %0 = qlora.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<2x8x64xf32>, tensor<8x32xf32>, tensor<8x32xf32>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that v has q's batch and sequence dimensions.
func.func @attention_v_seq(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>, %v: tensor<2x4x32xf32>) {
  // expected-error @+1 {{'qlora.attention' op expects v dimension 1 to be 8 (from q), got 4}}
  %0 = qlora.attention %q, %k, %v {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x4x32xf32>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that k has q's element type.
func.func @attention_k_element_type(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xbf16>) {
  // expected-error @+1 {{'qlora.attention' op expects k element type 'f32' (q element type), got 'bf16'}}
  %0 = qlora.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<2x8x64xf32>, tensor<2x8x32xbf16>, tensor<2x8x32xbf16>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that q holds num_heads heads side by side.
func.func @attention_q_width(%q: tensor<2x8x48xf32>, %k: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'qlora.attention' op expects q last dimension 64 (num_heads * head_dim), got 48}}
  %0 = qlora.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<2x8x48xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x48xf32>
  return
}

// -----

// Tests that k holds num_kv_heads heads side by side.
func.func @attention_k_width(%q: tensor<2x8x64xf32>, %k: tensor<2x8x64xf32>) {
  // expected-error @+1 {{'qlora.attention' op expects k last dimension 32 (num_kv_heads * head_dim), got 64}}
  %0 = qlora.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<2x8x64xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that the result has q's type.
func.func @attention_result(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'qlora.attention' op expects result of type 'tensor<2x8x64xf32>' (q type), got 'tensor<2x8x64xbf16>'}}
  %0 = qlora.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x64xbf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.cross_entropy
//===----------------------------------------------------------------------===//

// Tests that logits are [..., S, vocab].
func.func @cross_entropy_logits_rank(%logits: tensor<128xf32>, %labels: tensor<i32>) {
  // expected-error @+1 {{'qlora.cross_entropy' op expects logits of rank >= 2 ([..., S, vocab]), got rank 1}}
  %0 = qlora.cross_entropy %logits, %labels : (tensor<128xf32>, tensor<i32>) -> tensor<f32>
  return
}

// -----

// Tests that labels have one dimension less than the logits.
func.func @cross_entropy_labels_rank(%logits: tensor<2x8x128xf32>, %labels: tensor<16xi32>) {
  // expected-error @+1 {{'qlora.cross_entropy' op expects labels of rank 2 (logits rank - 1), got rank 1}}
  %0 = qlora.cross_entropy %logits, %labels : (tensor<2x8x128xf32>, tensor<16xi32>) -> tensor<f32>
  return
}

// -----

// Tests that labels match the logits' batch and sequence dimensions.
func.func @cross_entropy_labels_seq(%logits: tensor<2x8x128xf32>, %labels: tensor<2x7xi32>) {
  // expected-error @+1 {{'qlora.cross_entropy' op expects labels dimension 1 to be 8 (from logits), got 7}}
  %0 = qlora.cross_entropy %logits, %labels : (tensor<2x8x128xf32>, tensor<2x7xi32>) -> tensor<f32>
  return
}

// -----

// Tests that labels are i32 or i64 token ids.
func.func @cross_entropy_labels_type(%logits: tensor<2x8x128xf32>, %labels: tensor<2x8xf32>) {
  // expected-error @+1 {{'qlora.cross_entropy' op operand #1 must be ranked tensor of 32-bit signless integer or 64-bit signless integer values, but got 'tensor<2x8xf32>'}}
  %0 = qlora.cross_entropy %logits, %labels : (tensor<2x8x128xf32>, tensor<2x8xf32>) -> tensor<f32>
  return
}

// -----

// Tests that the loss is a 0-d f32 tensor.
func.func @cross_entropy_result(%logits: tensor<2x8x128xf32>, %labels: tensor<2x8xi32>) {
  // expected-error @+1 {{'qlora.cross_entropy' op result #0 must be 0D tensor of 32-bit float values, but got 'tensor<1xf32>'}}
  %0 = qlora.cross_entropy %logits, %labels : (tensor<2x8x128xf32>, tensor<2x8xi32>) -> tensor<1xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.embedding
//===----------------------------------------------------------------------===//

// Tests that the table is [vocab, hidden].
func.func @embedding_table_rank(%ids: tensor<2x8xi32>, %t: tensor<128xbf16>) {
  // expected-error @+1 {{'qlora.embedding' op expects table of rank 2 ([vocab, hidden]), got rank 1}}
  %0 = qlora.embedding %ids, %t : (tensor<2x8xi32>, tensor<128xbf16>) -> tensor<2x8x128xf32>
  return
}

// -----

// Tests that the result appends the hidden dimension to the ids' shape.
func.func @embedding_result_rank(%ids: tensor<2x8xi32>, %t: tensor<128x64xbf16>) {
  // expected-error @+1 {{'qlora.embedding' op expects result of rank 3 (ids rank + 1), got rank 2}}
  %0 = qlora.embedding %ids, %t : (tensor<2x8xi32>, tensor<128x64xbf16>) -> tensor<16x64xf32>
  return
}

// -----

// Tests that the result keeps the ids' dimensions.
func.func @embedding_result_dim(%ids: tensor<2x8xi32>, %t: tensor<128x64xbf16>) {
  // expected-error @+1 {{'qlora.embedding' op expects result dimension 0 to be 2 (from ids), got 4}}
  %0 = qlora.embedding %ids, %t : (tensor<2x8xi32>, tensor<128x64xbf16>) -> tensor<4x8x64xf32>
  return
}

// -----

// Tests that rows are the table's width.
func.func @embedding_result_hidden(%ids: tensor<2x8xi32>, %t: tensor<128x64xbf16>) {
  // expected-error @+1 {{'qlora.embedding' op expects result dimension 2 to be 64 (table columns), got 128}}
  %0 = qlora.embedding %ids, %t : (tensor<2x8xi32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
  return
}

// -----

// Tests that ids are integers.
func.func @embedding_ids_type(%ids: tensor<2x8xf32>, %t: tensor<128x64xbf16>) {
  // expected-error @+1 {{'qlora.embedding' op operand #0 must be ranked tensor of 32-bit signless integer or 64-bit signless integer values, but got 'tensor<2x8xf32>'}}
  %0 = qlora.embedding %ids, %t : (tensor<2x8xf32>, tensor<128x64xbf16>) -> tensor<2x8x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.rms_norm
//===----------------------------------------------------------------------===//

// Tests that the input has a hidden dimension.
func.func @rms_norm_rank(%x: tensor<f32>, %w: tensor<64xbf16>) {
  // expected-error @+1 {{'qlora.rms_norm' op expects input of rank >= 1, got rank 0}}
  %0 = qlora.rms_norm %x, %w {eps = 1.0e-5 : f32} : (tensor<f32>, tensor<64xbf16>) -> tensor<f32>
  return
}

// -----

// Tests that the norm weight is a vector.
func.func @rms_norm_weight_rank(%x: tensor<2x8x64xf32>, %w: tensor<1x64xbf16>) {
  // expected-error @+1 {{'qlora.rms_norm' op expects weight of rank 1 ([hidden]), got rank 2}}
  %0 = qlora.rms_norm %x, %w {eps = 1.0e-5 : f32} : (tensor<2x8x64xf32>, tensor<1x64xbf16>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that the norm weight has the hidden size.
func.func @rms_norm_weight_size(%x: tensor<2x8x64xf32>, %w: tensor<32xbf16>) {
  // expected-error @+1 {{'qlora.rms_norm' op expects weight of size 64 (input hidden size), got 32}}
  %0 = qlora.rms_norm %x, %w {eps = 1.0e-5 : f32} : (tensor<2x8x64xf32>, tensor<32xbf16>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that eps is not negative.
func.func @rms_norm_eps(%x: tensor<2x8x64xf32>, %w: tensor<64xbf16>) {
  // expected-error @+1 {{'qlora.rms_norm' op expects a finite eps >= 0, got -1e-05}}
  %0 = qlora.rms_norm %x, %w {eps = -1.0e-5 : f32} : (tensor<2x8x64xf32>, tensor<64xbf16>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that the result has the input's type.
func.func @rms_norm_result(%x: tensor<2x8x64xf32>, %w: tensor<64xbf16>) {
  // expected-error @+1 {{'qlora.rms_norm' op expects result of type 'tensor<2x8x64xf32>' (input type), got 'tensor<2x8x64xbf16>'}}
  %0 = qlora.rms_norm %x, %w {eps = 1.0e-5 : f32} : (tensor<2x8x64xf32>, tensor<64xbf16>) -> tensor<2x8x64xbf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.rope
//===----------------------------------------------------------------------===//

// Tests that rope needs a sequence dimension.
func.func @rope_rank(%x: tensor<64xf32>) {
  // expected-error @+1 {{'qlora.rope' op expects input of rank >= 2 ([..., S, heads * head_dim]), got rank 1}}
  %0 = qlora.rope %x {head_dim = 16 : i64, theta = 10000.0 : f32} : tensor<64xf32>
  return
}

// -----

// Tests that rotate_half needs an even head size.
func.func @rope_head_dim(%x: tensor<2x8x63xf32>) {
  // expected-error @+1 {{'qlora.rope' op expects a positive even head_dim, got 21}}
  %0 = qlora.rope %x {head_dim = 21 : i64, theta = 10000.0 : f32} : tensor<2x8x63xf32>
  return
}

// -----

// Tests that the last dimension is a whole number of heads.
func.func @rope_heads(%x: tensor<2x8x40xf32>) {
  // expected-error @+1 {{'qlora.rope' op expects the last dimension to be a multiple of head_dim 16, got 40}}
  %0 = qlora.rope %x {head_dim = 16 : i64, theta = 10000.0 : f32} : tensor<2x8x40xf32>
  return
}

// -----

// Tests that theta is positive.
func.func @rope_theta(%x: tensor<2x8x64xf32>) {
  // expected-error @+1 {{'qlora.rope' op expects a positive finite theta, got 0}}
  %0 = qlora.rope %x {head_dim = 16 : i64, theta = 0.0 : f32} : tensor<2x8x64xf32>
  return
}

// -----

// Tests that rope keeps its input's type (only expressible in generic form).
func.func @rope_result(%x: tensor<2x8x64xf32>) {
  // expected-error @+1 {{'qlora.rope' op expects result of type 'tensor<2x8x64xf32>' (input type), got 'tensor<2x8x64xbf16>'}}
  %0 = "qlora.rope"(%x) {head_dim = 16 : i64, theta = 10000.0 : f32} : (tensor<2x8x64xf32>) -> tensor<2x8x64xbf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.swiglu
//===----------------------------------------------------------------------===//

// Tests that gate and up have one type.
func.func @swiglu_up(%g: tensor<2x8x128xf32>, %u: tensor<2x8x64xf32>) {
  // expected-error @+1 {{'qlora.swiglu' op expects up of type 'tensor<2x8x128xf32>' (gate type), got 'tensor<2x8x64xf32>'}}
  %0 = "qlora.swiglu"(%g, %u) : (tensor<2x8x128xf32>, tensor<2x8x64xf32>) -> tensor<2x8x128xf32>
  return
}

// -----

// Tests that the result has the gate's type.
func.func @swiglu_result(%g: tensor<2x8x128xf32>) {
  // expected-error @+1 {{'qlora.swiglu' op expects result of type 'tensor<2x8x128xf32>' (gate type), got 'tensor<2x8x128xbf16>'}}
  %0 = "qlora.swiglu"(%g, %g) : (tensor<2x8x128xf32>, tensor<2x8x128xf32>) -> tensor<2x8x128xbf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// qlora.fill / qlora.mul
//===----------------------------------------------------------------------===//

// Tests that a fill has a static shape to allocate.
func.func @fill_dynamic() {
  // expected-error @+1 {{'qlora.fill' op expects a static shape, got 8x?}}
  %0 = qlora.fill 0.0 : tensor<8x?xf32>
  return
}

// -----

// Tests that mul's rhs is the lhs type or a scalar.
func.func @mul_rhs(%a: tensor<8x64xf32>, %b: tensor<64xf32>) {
  // expected-error @+1 {{'qlora.mul' op expects rhs of type 'tensor<8x64xf32>' (lhs type) or a 0-d tensor, got 'tensor<64xf32>'}}
  %0 = qlora.mul %a, %b : tensor<8x64xf32>, tensor<64xf32>
  return
}

// -----

// Tests that mul's result has the lhs type.
func.func @mul_result(%a: tensor<8x64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'qlora.mul' op expects result of type 'tensor<8x64xf32>' (lhs type), got 'tensor<8x64xbf16>'}}
  %0 = "qlora.mul"(%a, %s) : (tensor<8x64xf32>, tensor<f32>) -> tensor<8x64xbf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// Gradient ops
//===----------------------------------------------------------------------===//

// Tests that attention_grad checks its forward operands like attention.
func.func @attention_grad_gqa(%q: tensor<2x8x64xf32>, %k: tensor<2x8x48xf32>) {
  // expected-error @+1 {{'qlora.attention_grad' op expects num_kv_heads to divide num_heads 4, got 3}}
  %0:3 = qlora.attention_grad %q, %k, %k, %q, %q {num_heads = 4 : i64, num_kv_heads = 3 : i64, head_dim = 16 : i64, scale = 0.25 : f32}
           : (tensor<2x8x64xf32>, tensor<2x8x48xf32>, tensor<2x8x48xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>)
           -> (tensor<2x8x64xf32>, tensor<2x8x48xf32>, tensor<2x8x48xf32>)
  return
}

// -----

// Tests that attention_grad's forward result has q's type.
func.func @attention_grad_out(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>, %o: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'qlora.attention_grad' op expects out of type 'tensor<2x8x64xf32>' (q type), got 'tensor<2x8x32xf32>'}}
  %0:3 = qlora.attention_grad %q, %k, %k, %o, %q {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32}
           : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x64xf32>)
           -> (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>)
  return
}

// -----

// Tests that attention_grad's incoming gradient has q's type.
func.func @attention_grad_dout(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>, %d: tensor<2x8x64xbf16>) {
  // expected-error @+1 {{'qlora.attention_grad' op expects dout of type 'tensor<2x8x64xf32>' (q type), got 'tensor<2x8x64xbf16>'}}
  %0:3 = qlora.attention_grad %q, %k, %k, %q, %d {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32}
           : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x64xf32>, tensor<2x8x64xbf16>)
           -> (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>)
  return
}

// -----

// Tests that dq has q's type.
func.func @attention_grad_dq(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'qlora.attention_grad' op expects dq of type 'tensor<2x8x64xf32>' (q type), got 'tensor<2x8x32xf32>'}}
  %0:3 = qlora.attention_grad %q, %k, %k, %q, %q {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32}
           : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>)
           -> (tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>)
  return
}

// -----

// Tests that dk has k's type.
func.func @attention_grad_dk(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'qlora.attention_grad' op expects dk of type 'tensor<2x8x32xf32>' (k type), got 'tensor<2x8x64xf32>'}}
  %0:3 = qlora.attention_grad %q, %k, %k, %q, %q {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32}
           : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>)
           -> (tensor<2x8x64xf32>, tensor<2x8x64xf32>, tensor<2x8x32xf32>)
  return
}

// -----

// Tests that dv has v's type.
func.func @attention_grad_dv(%q: tensor<2x8x64xf32>, %k: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'qlora.attention_grad' op expects dv of type 'tensor<2x8x32xf32>' (v type), got 'tensor<2x8x64xf32>'}}
  %0:3 = qlora.attention_grad %q, %k, %k, %q, %q {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f32}
           : (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>)
           -> (tensor<2x8x64xf32>, tensor<2x8x32xf32>, tensor<2x8x64xf32>)
  return
}

// -----

// Tests that cross_entropy_grad checks logits against labels.
func.func @cross_entropy_grad_labels(%logits: tensor<2x8x128xf32>, %labels: tensor<2x7xi32>, %d: tensor<f32>) {
  // expected-error @+1 {{'qlora.cross_entropy_grad' op expects labels dimension 1 to be 8 (from logits), got 7}}
  %0 = qlora.cross_entropy_grad %logits, %labels, %d : (tensor<2x8x128xf32>, tensor<2x7xi32>, tensor<f32>) -> tensor<2x8x128xf32>
  return
}

// -----

// Tests that cross_entropy_grad returns the logits' type.
func.func @cross_entropy_grad_result(%logits: tensor<2x8x128xf32>, %labels: tensor<2x8xi32>, %d: tensor<f32>) {
  // expected-error @+1 {{'qlora.cross_entropy_grad' op expects result of type 'tensor<2x8x128xf32>' (logits type), got 'tensor<2x8x128xbf16>'}}
  %0 = qlora.cross_entropy_grad %logits, %labels, %d : (tensor<2x8x128xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<2x8x128xbf16>
  return
}

// -----

// Tests that the loss gradient is a 0-d f32 tensor.
func.func @cross_entropy_grad_dloss(%logits: tensor<2x8x128xf32>, %labels: tensor<2x8xi32>, %d: tensor<1xf32>) {
  // expected-error @+1 {{'qlora.cross_entropy_grad' op operand #2 must be 0D tensor of 32-bit float values, but got 'tensor<1xf32>'}}
  %0 = qlora.cross_entropy_grad %logits, %labels, %d : (tensor<2x8x128xf32>, tensor<2x8xi32>, tensor<1xf32>) -> tensor<2x8x128xf32>
  return
}

// -----

// Tests that linear_grad_input needs an [..., M, N] gradient.
func.func @linear_grad_input_rank(%dy: tensor<128xf32>, %w: tensor<128x64xbf16>) {
  // expected-error @+1 {{'qlora.linear_grad_input' op expects dy of rank >= 2 ([..., M, N]), got rank 1}}
  %0 = qlora.linear_grad_input %dy, %w : (tensor<128xf32>, tensor<128x64xbf16>) -> tensor<64xf32>
  return
}

// -----

// Tests that linear_grad_input needs an [out, in] weight.
func.func @linear_grad_input_weight_rank(%dy: tensor<8x128xf32>, %w: !qlora.nf4<2x128x64, bf16>) {
  // expected-error @+1 {{'qlora.linear_grad_input' op expects weight of rank 2 ([out, in]), got rank 3}}
  %0 = qlora.linear_grad_input %dy, %w : (tensor<8x128xf32>, !qlora.nf4<2x128x64, bf16>) -> tensor<8x64xf32>
  return
}

// -----

// Tests that the weight's out features match the gradient's last dimension.
func.func @linear_grad_input_n(%dy: tensor<8x128xf32>, %w: tensor<64x64xbf16>) {
  // expected-error @+1 {{'qlora.linear_grad_input' op expects weight to have 128 rows (dy features), got 64}}
  %0 = qlora.linear_grad_input %dy, %w : (tensor<8x128xf32>, tensor<64x64xbf16>) -> tensor<8x64xf32>
  return
}

// -----

// Tests that dx has the weight's in features.
func.func @linear_grad_input_k(%dy: tensor<8x128xf32>, %w: !qlora.nf4<128x64, bf16>) {
  // expected-error @+1 {{'qlora.linear_grad_input' op expects result dimension 1 to be 64 (weight columns), got 128}}
  %0 = qlora.linear_grad_input %dy, %w : (tensor<8x128xf32>, !qlora.nf4<128x64, bf16>) -> tensor<8x128xf32>
  return
}

// -----

// Tests that dx has dy's element type, not the weight's.
func.func @linear_grad_input_element_type(%dy: tensor<8x128xf32>, %w: tensor<128x64xbf16>) {
  // expected-error @+1 {{'qlora.linear_grad_input' op expects result element type 'f32' (dy element type), got 'bf16'}}
  %0 = qlora.linear_grad_input %dy, %w : (tensor<8x128xf32>, tensor<128x64xbf16>) -> tensor<8x64xbf16>
  return
}

// -----

// Tests that lora_grad checks the branch like lora.
func.func @lora_grad_r(%x: tensor<8x64xf32>, %a: tensor<16x64xf32>, %b: tensor<128x8xf32>, %dy: tensor<8x128xf32>) {
  // expected-error @+1 {{'qlora.lora_grad' op expects lora_B to have 16 columns (r), got 8}}
  %0:3 = qlora.lora_grad %x, %a, %b, %dy {scale = 2.0 : f32}
           : (tensor<8x64xf32>, tensor<16x64xf32>, tensor<128x8xf32>, tensor<8x128xf32>) -> (tensor<8x64xf32>, tensor<16x64xf32>, tensor<128x8xf32>)
  return
}

// -----

// Tests that dy has the branch's output shape.
func.func @lora_grad_dy(%x: tensor<8x64xf32>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'qlora.lora_grad' op expects dy dimension 1 to be 128 (lora_B rows), got 64}}
  %0:3 = qlora.lora_grad %x, %a, %b, %dy {scale = 2.0 : f32}
           : (tensor<8x64xf32>, tensor<16x64xf32>, tensor<128x16xf32>, tensor<8x64xf32>) -> (tensor<8x64xf32>, tensor<16x64xf32>, tensor<128x16xf32>)
  return
}

// -----

// Tests that dx has the input's type.
func.func @lora_grad_dx(%x: tensor<8x64xf32>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>, %dy: tensor<8x128xf32>) {
  // expected-error @+1 {{'qlora.lora_grad' op expects dx of type 'tensor<8x64xf32>' (input type), got 'tensor<8x64xbf16>'}}
  %0:3 = qlora.lora_grad %x, %a, %b, %dy {scale = 2.0 : f32}
           : (tensor<8x64xf32>, tensor<16x64xf32>, tensor<128x16xf32>, tensor<8x128xf32>) -> (tensor<8x64xbf16>, tensor<16x64xf32>, tensor<128x16xf32>)
  return
}

// -----

// Tests that dA has lora_A's type.
func.func @lora_grad_da(%x: tensor<8x64xf32>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>, %dy: tensor<8x128xf32>) {
  // expected-error @+1 {{'qlora.lora_grad' op expects da of type 'tensor<16x64xf32>' (lora_A type), got 'tensor<64x16xf32>'}}
  %0:3 = qlora.lora_grad %x, %a, %b, %dy {scale = 2.0 : f32}
           : (tensor<8x64xf32>, tensor<16x64xf32>, tensor<128x16xf32>, tensor<8x128xf32>) -> (tensor<8x64xf32>, tensor<64x16xf32>, tensor<128x16xf32>)
  return
}

// -----

// Tests that dB has lora_B's type.
func.func @lora_grad_db(%x: tensor<8x64xf32>, %a: tensor<16x64xf32>, %b: tensor<128x16xf32>, %dy: tensor<8x128xf32>) {
  // expected-error @+1 {{'qlora.lora_grad' op expects db of type 'tensor<128x16xf32>' (lora_B type), got 'tensor<128x16xbf16>'}}
  %0:3 = qlora.lora_grad %x, %a, %b, %dy {scale = 2.0 : f32}
           : (tensor<8x64xf32>, tensor<16x64xf32>, tensor<128x16xf32>, tensor<8x128xf32>) -> (tensor<8x64xf32>, tensor<16x64xf32>, tensor<128x16xbf16>)
  return
}

// -----

// Tests that rms_norm_grad checks the norm weight like rms_norm.
func.func @rms_norm_grad_weight(%x: tensor<2x8x64xf32>, %w: tensor<32xbf16>) {
  // expected-error @+1 {{'qlora.rms_norm_grad' op expects weight of size 64 (input hidden size), got 32}}
  %0 = qlora.rms_norm_grad %x, %w, %x {eps = 1.0e-5 : f32} : (tensor<2x8x64xf32>, tensor<32xbf16>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that rms_norm_grad's dy has the input's type.
func.func @rms_norm_grad_dy(%x: tensor<2x8x64xf32>, %w: tensor<64xbf16>, %dy: tensor<2x8x64xbf16>) {
  // expected-error @+1 {{'qlora.rms_norm_grad' op expects dy of type 'tensor<2x8x64xf32>' (input type), got 'tensor<2x8x64xbf16>'}}
  %0 = qlora.rms_norm_grad %x, %w, %dy {eps = 1.0e-5 : f32} : (tensor<2x8x64xf32>, tensor<64xbf16>, tensor<2x8x64xbf16>) -> tensor<2x8x64xf32>
  return
}

// -----

// Tests that rms_norm_grad returns the input's type.
func.func @rms_norm_grad_result(%x: tensor<2x8x64xf32>, %w: tensor<64xbf16>) {
  // expected-error @+1 {{'qlora.rms_norm_grad' op expects result of type 'tensor<2x8x64xf32>' (input type), got 'tensor<2x8x32xf32>'}}
  %0 = qlora.rms_norm_grad %x, %w, %x {eps = 1.0e-5 : f32} : (tensor<2x8x64xf32>, tensor<64xbf16>, tensor<2x8x64xf32>) -> tensor<2x8x32xf32>
  return
}

// -----

// Tests that rope_grad checks its gradient like rope checks its input.
func.func @rope_grad_rank(%dy: tensor<64xf32>) {
  // expected-error @+1 {{'qlora.rope_grad' op expects dy of rank >= 2 ([..., S, heads * head_dim]), got rank 1}}
  %0 = qlora.rope_grad %dy {head_dim = 16 : i64, theta = 10000.0 : f32} : tensor<64xf32>
  return
}

// -----

// Tests that rope_grad keeps dy's type (only expressible in generic form).
func.func @rope_grad_result(%dy: tensor<2x8x64xf32>) {
  // expected-error @+1 {{'qlora.rope_grad' op expects result of type 'tensor<2x8x64xf32>' (dy type), got 'tensor<2x8x64xf16>'}}
  %0 = "qlora.rope_grad"(%dy) {head_dim = 16 : i64, theta = 10000.0 : f32} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf16>
  return
}

// -----

// Tests that swiglu_grad's operands share one type.
func.func @swiglu_grad_dout(%g: tensor<2x8x128xf32>, %d: tensor<2x8x64xf32>) {
  // expected-error @+1 {{'qlora.swiglu_grad' op expects dout of type 'tensor<2x8x128xf32>' (gate type), got 'tensor<2x8x64xf32>'}}
  %0:2 = "qlora.swiglu_grad"(%g, %g, %d) : (tensor<2x8x128xf32>, tensor<2x8x128xf32>, tensor<2x8x64xf32>) -> (tensor<2x8x128xf32>, tensor<2x8x128xf32>)
  return
}

// -----

// Tests that swiglu_grad's results have the gate's type.
func.func @swiglu_grad_dup(%g: tensor<2x8x128xf32>) {
  // expected-error @+1 {{'qlora.swiglu_grad' op expects dup of type 'tensor<2x8x128xf32>' (gate type), got 'tensor<2x8x128xbf16>'}}
  %0:2 = "qlora.swiglu_grad"(%g, %g, %g) : (tensor<2x8x128xf32>, tensor<2x8x128xf32>, tensor<2x8x128xf32>) -> (tensor<2x8x128xf32>, tensor<2x8x128xbf16>)
  return
}

// -----

//===----------------------------------------------------------------------===//
// Optimizer ops
//===----------------------------------------------------------------------===//

// Tests that adamw's gradient has the parameter's type.
func.func @adamw_grad(%p: tensor<8x64xf32>, %g: tensor<64x8xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'qlora.adamw' op expects grad of type 'tensor<8x64xf32>' (param type), got 'tensor<64x8xf32>'}}
  %0:3 = "qlora.adamw"(%p, %g, %p, %p, %s, %s) {beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32}
           : (tensor<8x64xf32>, tensor<64x8xf32>, tensor<8x64xf32>, tensor<8x64xf32>, tensor<f32>, tensor<f32>) -> (tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>)
  return
}

// -----

// Tests that adamw's second moment has the parameter's type.
func.func @adamw_v(%p: tensor<8x64xf32>, %v: tensor<8x64xbf16>, %s: tensor<f32>) {
  // expected-error @+1 {{'qlora.adamw' op expects v of type 'tensor<8x64xf32>' (param type), got 'tensor<8x64xbf16>'}}
  %0:3 = "qlora.adamw"(%p, %p, %p, %v, %s, %s) {beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32}
           : (tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xbf16>, tensor<f32>, tensor<f32>) -> (tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>)
  return
}

// -----

// Tests that adamw's new moments have the parameter's type.
func.func @adamw_new_m(%p: tensor<8x64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'qlora.adamw' op expects new_m of type 'tensor<8x64xf32>' (param type), got 'tensor<8x64xf16>'}}
  %0:3 = "qlora.adamw"(%p, %p, %p, %p, %s, %s) {beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32}
           : (tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>, tensor<f32>, tensor<f32>) -> (tensor<8x64xf32>, tensor<8x64xf16>, tensor<8x64xf32>)
  return
}

// -----

// Tests that beta1 is a decay rate below one.
func.func @adamw_beta1(%p: tensor<8x64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'qlora.adamw' op expects beta1 in [0, 1), got 1}}
  %0:3 = qlora.adamw %p, %p, %p, %p, %s, %s {beta1 = 1.0 : f32, beta2 = 0.999 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32} : tensor<8x64xf32>
  return
}

// -----

// Tests that beta2 is a decay rate below one.
func.func @adamw_beta2(%p: tensor<8x64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'qlora.adamw' op expects beta2 in [0, 1), got -0.5}}
  %0:3 = qlora.adamw %p, %p, %p, %p, %s, %s {beta1 = 0.9 : f32, beta2 = -0.5 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32} : tensor<8x64xf32>
  return
}

// -----

// Tests that eps is not negative (torch's "Invalid epsilon value").
func.func @adamw_eps(%p: tensor<8x64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'qlora.adamw' op expects a finite eps >= 0, got -1e-08}}
  %0:3 = qlora.adamw %p, %p, %p, %p, %s, %s {beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = -1.0e-8 : f32, weight_decay = 0.0 : f32} : tensor<8x64xf32>
  return
}

// -----

// Tests that weight decay is not negative.
func.func @adamw_weight_decay(%p: tensor<8x64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'qlora.adamw' op expects a finite weight_decay >= 0, got -0.1}}
  %0:3 = qlora.adamw %p, %p, %p, %p, %s, %s {beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = 1.0e-8 : f32, weight_decay = -0.1 : f32} : tensor<8x64xf32>
  return
}

// -----

// Tests that adamw reads a scalar learning rate.
func.func @adamw_lr(%p: tensor<8x64xf32>, %lr: tensor<1xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'qlora.adamw' op operand #4 must be 0D tensor of 32-bit float values, but got 'tensor<1xf32>'}}
  %0:3 = "qlora.adamw"(%p, %p, %p, %p, %lr, %s) {beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32}
           : (tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>, tensor<1xf32>, tensor<f32>) -> (tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>)
  return
}

// -----

// Tests that the clipping norm is positive.
func.func @clip_coefficient_max_norm(%t: tensor<f32>) {
  // expected-error @+1 {{'qlora.clip_coefficient' op expects a positive finite max_norm, got 0}}
  %0 = qlora.clip_coefficient %t {max_norm = 0.0 : f32}
  return
}

// -----

// Tests that sum_squares reduces floats.
func.func @sum_squares_int(%g: tensor<8x64xi32>) {
  // expected-error @+1 {{'qlora.sum_squares' op operand #0 must be ranked tensor of floating-point values, but got 'tensor<8x64xi32>'}}
  %0 = qlora.sum_squares %g : tensor<8x64xi32>
  return
}

// -----

func.func @offload_empty_slot(%v: tensor<8x64xbf16>) {
  // expected-error @+1 {{'qlora.offload' op expects a non-empty host slot name, got ""}}
  qlora.offload "", %v {transfer = 0 : i64} : tensor<8x64xbf16>
  return
}

// -----

func.func @reload_negative_transfer() {
  // expected-error @+1 {{'qlora.reload' op expects a transfer number >= 0, got -1}}
  %r = qlora.reload "offload:0" {transfer = -1 : i64} : tensor<8x64xbf16>
  return
}

// -----

func.func @lm_head_loss_weight_columns(%x: tensor<2x64x256xbf16>, %w: tensor<1024x128xbf16>, %l: tensor<2x64xi32>, %d: tensor<f32>) {
  // expected-error @+1 {{'qlora.lm_head_loss' op expects weight to have 256 columns (input features), got 128}}
  %loss, %dx = qlora.lm_head_loss %x, %w, %l, %d {chunk_rows = 64 : i64} : (tensor<2x64x256xbf16>, tensor<1024x128xbf16>, tensor<2x64xi32>, tensor<f32>) -> (tensor<f32>, tensor<2x64x256xbf16>)
  return
}

// -----

func.func @lm_head_loss_labels(%x: tensor<2x64x256xbf16>, %w: tensor<1024x256xbf16>, %l: tensor<2x32xi32>, %d: tensor<f32>) {
  // expected-error @+1 {{'qlora.lm_head_loss' op expects labels dimension 1 to be 64 (from logits), got 32}}
  %loss, %dx = qlora.lm_head_loss %x, %w, %l, %d {chunk_rows = 64 : i64} : (tensor<2x64x256xbf16>, tensor<1024x256xbf16>, tensor<2x32xi32>, tensor<f32>) -> (tensor<f32>, tensor<2x64x256xbf16>)
  return
}

// -----

func.func @lm_head_loss_chunk(%x: tensor<2x64x256xbf16>, %w: tensor<1024x256xbf16>, %l: tensor<2x64xi32>, %d: tensor<f32>) {
  // expected-error @+1 {{'qlora.lm_head_loss' op expects a positive chunk_rows, got 0}}
  %loss, %dx = qlora.lm_head_loss %x, %w, %l, %d {chunk_rows = 0 : i64} : (tensor<2x64x256xbf16>, tensor<1024x256xbf16>, tensor<2x64xi32>, tensor<f32>) -> (tensor<f32>, tensor<2x64x256xbf16>)
  return
}

// -----

func.func @lm_head_loss_dinput(%x: tensor<2x64x256xbf16>, %w: tensor<1024x256xbf16>, %l: tensor<2x64xi32>, %d: tensor<f32>) {
  // expected-error @+1 {{'qlora.lm_head_loss' op expects dinput}}
  %loss, %dx = qlora.lm_head_loss %x, %w, %l, %d {chunk_rows = 64 : i64} : (tensor<2x64x256xbf16>, tensor<1024x256xbf16>, tensor<2x64xi32>, tensor<f32>) -> (tensor<f32>, tensor<2x64x256xf32>)
  return
}

// -----

func.func @rope_llama3_band(%x: tensor<2x64x256xf32>) {
  // expected-error @+1 {{expects 0 < low_freq_factor < high_freq_factor, got 4 and 1}}
  %y = qlora.rope %x {head_dim = 64 : i64, theta = 500000.0 : f32, rope_scaling = #qlora.rope_llama3<factor = 8.0, low_freq_factor = 4.0, high_freq_factor = 1.0, original_max_position_embeddings = 8192>} : tensor<2x64x256xf32>
  return
}

// -----

func.func @rope_llama3_missing(%x: tensor<2x64x256xf32>) {
  // expected-error @+1 {{expects 'original_max_position_embeddings'}}
  %y = qlora.rope %x {head_dim = 64 : i64, theta = 500000.0 : f32, rope_scaling = #qlora.rope_llama3<factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0>} : tensor<2x64x256xf32>
  return
}

// -----

func.func @rope_llama3_factor(%x: tensor<2x64x256xf32>) {
  // expected-error @+1 {{expects factor > 0, got 0}}
  %y = qlora.rope %x {head_dim = 64 : i64, theta = 500000.0 : f32, rope_scaling = #qlora.rope_llama3<factor = 0.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192>} : tensor<2x64x256xf32>
  return
}
