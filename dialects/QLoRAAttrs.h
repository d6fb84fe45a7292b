//===- QLoRAAttrs.h - qlora attributes ------------------------*- C++ -*-===//
//
// Declares the qlora attributes (double quantization, LoRA configuration)
// and the parsing helpers the dialect's types share with them.
//
//===----------------------------------------------------------------------===//

#ifndef QLORA_DIALECTS_QLORAATTRS_H
#define QLORA_DIALECTS_QLORAATTRS_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/OpImplementation.h"

#include "dialects/QLoRADialect.h"

#define GET_ATTRDEF_CLASSES
#include "dialects/QLoRAAttrs.h.inc"

namespace mlir::qlora::detail {

/// Parses `key = value` entries separated by commas until the closing `>`
/// (consumed). The caller has already parsed what comes before; `leadingComma`
/// says whether a comma separates those positional fields from the first
/// entry. Each key may appear once and must be in `keys`; `parseValue` parses
/// the value of one key.
ParseResult
parseKeyedEntries(AsmParser &parser, ArrayRef<StringRef> keys,
                  bool leadingComma,
                  function_ref<ParseResult(StringRef key)> parseValue);

/// Checks a bitsandbytes block size: a power of two in [64, 4096].
LogicalResult verifyBnbBlockSize(function_ref<InFlightDiagnostic()> emitError,
                                 StringRef what, int64_t blockSize);

/// Formats a double the shortest way that still parses back as an MLIR float
/// literal ("32.0", "0.05", "1.0e-05").
std::string formatFloatLiteral(double value);

} // namespace mlir::qlora::detail

#endif // QLORA_DIALECTS_QLORAATTRS_H
