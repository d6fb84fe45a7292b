//===- QLoRATypes.td - qlora types -------------------------*- tablegen -*-===//
//
// Types of the qlora dialect: the logical NF4 weight type.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_TYPES_TD
#define QLORA_TYPES_TD

include "QLoRADialect.td"
include "QLoRAAttrs.td"
include "mlir/IR/AttrTypeBase.td"

class QLoRA_Type<string name, string typeMnemonic, list<Trait> traits = []>
    : TypeDef<QLoRA_Dialect, name, traits> {
  let mnemonic = typeMnemonic;
}

def QLoRA_NF4Type : QLoRA_Type<"NF4", "nf4"> {
  let summary = "a frozen weight stored as 4-bit NormalFloat";
  let description = [{
    The logical view of a weight quantized blockwise to NF4, as
    bitsandbytes' `quantize_4bit(quant_type="nf4")` stores it: a static
    `shape` (rank >= 1), the original element type (`bf16`, `f16` or `f32`,
    the dtype `dequantize` restores), the number of consecutive elements that
    share one absmax constant (`block`, 64 unless given; bitsandbytes supports
    powers of two from 64 to 4096) and, optionally, how those constants are
    double-quantized.

    Lowering expands the type into the physical buffers, byte for byte as
    bitsandbytes lays them out: packed codes (two per byte, first element in
    the high nibble), absmax (fp32, or 8-bit codes plus second-level scales
    and an offset under double quantization).

    ```mlir
    !qlora.nf4<4096x4096, bf16>
    !qlora.nf4<4096x11008, bf16, block = 64, double_quant = #qlora.double_quant<block = 256>>
    ```
  }];
  let parameters = (ins
    ArrayRefParameter<"int64_t", "logical shape">:$shape,
    "::mlir::Type":$elementType,
    DefaultValuedParameter<"int64_t", "64",
        "elements per absmax block">:$blockSize,
    OptionalParameter<"::mlir::qlora::DoubleQuantAttr",
        "double quantization of the absmax constants">:$doubleQuant
  );
  let builders = [
    TypeBuilderWithInferredContext<(ins
        "::llvm::ArrayRef<int64_t>":$shape, "::mlir::Type":$elementType,
        CArg<"int64_t", "64">:$blockSize,
        CArg<"::mlir::qlora::DoubleQuantAttr", "{}">:$doubleQuant), [{
      return $_get(elementType.getContext(), shape, elementType, blockSize,
                   doubleQuant);
    }]>
  ];
  let skipDefaultBuilders = 0;
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Rank of the logical shape.
    int64_t getRank() const { return getShape().size(); }
    /// Number of logical elements.
    int64_t getNumElements() const;
    /// Number of absmax blocks (the last one may be partial).
    int64_t getNumBlocks() const;
    /// The tensor type that `qlora.dequantize` produces.
    ::mlir::RankedTensorType getDequantizedType() const;
  }];
}

#endif // QLORA_TYPES_TD
