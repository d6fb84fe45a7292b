//===- QLoRAAttrs.td - qlora attributes --------------------*- tablegen -*-===//
//
// Attributes of the qlora dialect: the double-quantization scheme of NF4
// block constants, the PEFT-style LoRA configuration, and the memory plan's
// buffers and their parts.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_ATTRS_TD
#define QLORA_ATTRS_TD

include "QLoRADialect.td"
include "mlir/IR/AttrTypeBase.td"

class QLoRA_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<QLoRA_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

def QLoRA_DoubleQuantAttr : QLoRA_Attr<"DoubleQuant", "double_quant"> {
  let summary = "double quantization of NF4 block constants";
  let description = [{
    Describes how the per-block fp32 absmax constants of an NF4 weight are
    themselves quantized, as bitsandbytes does with `compress_statistics=True`:
    the mean of all absmax values (the offset) is subtracted, the remainder is
    quantized blockwise to `bits`-bit dynamic codes with one fp32 scale per
    `block` constants, and the offset is kept as one fp32 scalar.

    Both parameters may be omitted; they default to bitsandbytes' values.

    ```mlir
    #qlora.double_quant<block = 256>
    #qlora.double_quant<bits = 8, block = 256>
    ```
  }];
  let parameters = (ins
    DefaultValuedParameter<"int64_t", "8",
        "bit width of the quantized block constants">:$bits,
    DefaultValuedParameter<"int64_t", "256",
        "number of block constants sharing one second-level scale">:$block
  );
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// bitsandbytes always subtracts the mean absmax before the second
    /// quantization; lowering materializes it as an fp32 offset buffer.
    static constexpr bool hasOffset() { return true; }
  }];
}

def QLoRA_LoraConfigAttr : QLoRA_Attr<"LoraConfig", "lora_config"> {
  let summary = "a LoRA adapter configuration, named as PEFT's LoraConfig";
  let description = [{
    The hyper-parameters of a LoRA adapter with PEFT's `LoraConfig` field
    names: the rank `r`, the scaling numerator `lora_alpha`, the dropout
    probability `lora_dropout` applied to the adapter input, and
    `use_rslora`, which scales the branch by `lora_alpha / sqrt(r)` instead
    of `lora_alpha / r`. Omitted fields take PEFT's defaults (r = 8,
    lora_alpha = 8, lora_dropout = 0, use_rslora = false).

    ```mlir
    #qlora.lora_config<r = 16, lora_alpha = 32.0, lora_dropout = 0.05, use_rslora = false>
    ```
  }];
  let parameters = (ins
    "int64_t":$r,
    APFloatParameter<"scaling numerator (double precision)">:$loraAlpha,
    APFloatParameter<"dropout probability (double precision)">:$loraDropout,
    "bool":$useRslora
  );
  let builders = [
    AttrBuilder<(ins "int64_t":$r, "double":$loraAlpha, "double":$loraDropout,
                     "bool":$useRslora), [{
      return $_get($_ctxt, r, ::llvm::APFloat(loraAlpha),
                   ::llvm::APFloat(loraDropout), useRslora);
    }]>
  ];
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The factor that multiplies B(A(x)): lora_alpha / r, or
    /// lora_alpha / sqrt(r) with rsLoRA.
    double scale() const;
  }];
}

def QLoRA_RopeLlama3Attr : QLoRA_Attr<"RopeLlama3", "rope_llama3"> {
  let summary = "Llama 3's rope scaling (transformers' rope_type llama3)";
  let description = [{
    The `rope_scaling` of Llama 3.1 and later checkpoints, with transformers'
    field names: inverse frequencies whose wavelength exceeds
    `original_max_position_embeddings / low_freq_factor` are divided by
    `factor`, those shorter than `original_max_position_embeddings /
    high_freq_factor` are kept, and the band between is blended
    (runtime/RopeScaling.h computes them). Every field must be given.

    ```mlir
    #qlora.rope_llama3<factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192>
    ```
  }];
  let parameters = (ins
    APFloatParameter<"the low frequencies' divisor">:$factor,
    APFloatParameter<"where the band starts">:$lowFreqFactor,
    APFloatParameter<"where the band ends">:$highFreqFactor,
    "int64_t":$originalMaxPositionEmbeddings
  );
  let builders = [
    AttrBuilder<(ins "double":$factor, "double":$lowFreqFactor,
                     "double":$highFreqFactor,
                     "int64_t":$originalMaxPositionEmbeddings), [{
      return $_get($_ctxt, ::llvm::APFloat(factor),
                   ::llvm::APFloat(lowFreqFactor),
                   ::llvm::APFloat(highFreqFactor),
                   originalMaxPositionEmbeddings);
    }]>
  ];
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

def QLoRA_BufferPartAttr : QLoRA_Attr<"BufferPart", "part"> {
  let summary = "one physical part of a planned buffer";
  let description = [{
    Where one piece of a buffer lives in the step's arena: `elements`
    values of `element_type` from byte `offset`. A dense tensor has one
    part (`data`); an NF4 weight has its packed `codes` and its block
    constants (`absmax`, or with double quantization `absmax_codes`,
    `absmax_scales` and the `absmax_offset` scalar); on cuda an adapter
    has its fp32 `data` and the bf16 `compute` copy that the products read.
    The part names are the runtime's (runtime/train/Manifest.h).

    ```mlir
    #qlora.part<"codes", ui8, elements = 32768, offset = 4096>
    ```
  }];
  let parameters = (ins
    StringRefParameter<"the part's name">:$name,
    "::mlir::Type":$elementType,
    "int64_t":$elements,
    "int64_t":$offset
  );
  let assemblyFormat = [{
    `<` $name `,` $elementType `,` struct($elements, $offset) `>`
  }];
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Bytes of one element: 1 for i8/ui8, 2 for bf16, 4 for f32/i32, 8 for
    /// i64.
    static int64_t elementBytes(::mlir::Type type);
    int64_t bytes() const { return getElements() * elementBytes(getElementType()); }
  }];
}

def QLoRA_BufferAttr : QLoRA_Attr<"Buffer", "buffer"> {
  let summary = "a named, persistent buffer of a planned training step";
  let description = [{
    One entry of the memory plan (`qlora.buffers` on the module): a slot
    that the host fills or reads by name, with its role (`input`, `output`,
    `frozen`, `nf4`, `trainable`, `state`, `workspace`), the logical type
    the step reads it as, and its parts in the arena. The manifest publishes
    these entries as they are.

    ```mlir
    #qlora.buffer<"model.norm.weight", frozen, tensor<256xbf16>,
                  [#qlora.part<"data", bf16, elements = 256, offset = 0>]>
    ```
  }];
  let parameters = (ins
    StringRefParameter<"the buffer's name">:$name,
    StringRefParameter<"the host's role for it">:$role,
    "::mlir::Type":$type,
    ArrayRefParameter<"BufferPartAttr", "its parts">:$parts
  );
  let assemblyFormat = [{
    `<` $name `,` $role `,` $type `,` `[` $parts `]` `>`
  }];
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The part called `name`, or null.
    BufferPartAttr getPart(::llvm::StringRef name) const;
  }];
}

#endif // QLORA_ATTRS_TD
