//===- QLoRADialect.td - the qlora dialect -----------------*- tablegen -*-===//
//
// The dialect definition and the base classes its ops, types and attributes
// derive from.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_DIALECT_TD
#define QLORA_DIALECT_TD

include "mlir/IR/OpBase.td"

def QLoRA_Dialect : Dialect {
  let name = "qlora";
  let cppNamespace = "::mlir::qlora";
  let summary = "a dialect for QLoRA training steps";
  let description = [{
    The `qlora` dialect models one QLoRA training step at the level of tuned
    kernels: frozen base weights stored as 4-bit NormalFloat (NF4) with
    double-quantized block constants, small trainable LoRA adapters, and bf16
    compute with fp32 accumulation.

    Ops are deliberately coarse. Each one lowers to a kernel (or a fused
    kernel) and fusion happens at their edges, for example
    `qlora.dequantize` + `qlora.linear` becomes `qlora.nf4_matmul`, and a
    base projection plus its LoRA branch becomes `qlora.lora_linear`.

    NF4 and double quantization follow bitsandbytes bit for bit; LoRA
    configuration follows PEFT's `LoraConfig` field names.
  }];
  // The body of qlora.fused_elementwise is arith on f32 scalars.
  let dependentDialects = ["::mlir::arith::ArithDialect"];
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
    void registerTypes();
    void registerAttributes();
  }];
}

/// Base class of every qlora op.
class QLoRA_Op<string mnemonic, list<Trait> traits = []>
    : Op<QLoRA_Dialect, mnemonic, traits>;

#endif // QLORA_DIALECT_TD
