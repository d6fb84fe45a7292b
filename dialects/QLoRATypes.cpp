//===- QLoRATypes.cpp - qlora types ---------------------------------------===//
//
// Parsing, printing and verification of the NF4 weight type.
//
//===----------------------------------------------------------------------===//

#include "dialects/QLoRATypes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::qlora;

#define GET_TYPEDEF_CLASSES
#include "dialects/QLoRATypes.cpp.inc"

void QLoRADialect::registerTypes() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialects/QLoRATypes.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// NF4Type
//===----------------------------------------------------------------------===//

/// Syntax: `<` dims `,` element-type (`,` `block` `=` int)?
///         (`,` `double_quant` `=` attr)? `>`
Type NF4Type::parse(AsmParser &parser) {
  SMLoc loc = parser.getCurrentLocation();
  SmallVector<int64_t> shape;
  Type elementType;
  int64_t blockSize = 64;
  DoubleQuantAttr doubleQuant;
  if (parser.parseLess() ||
      parser.parseDimensionList(shape, /*allowDynamic=*/false,
                                /*withTrailingX=*/false) ||
      parser.parseComma() || parser.parseType(elementType))
    return {};
  auto parseValue = [&](StringRef key) -> ParseResult {
    if (key == "block")
      return parser.parseInteger(blockSize);
    return parser.parseAttribute(doubleQuant);
  };
  if (qlora::detail::parseKeyedEntries(parser, {"block", "double_quant"},
                                       /*leadingComma=*/true, parseValue))
    return {};
  return getChecked([&] { return parser.emitError(loc); }, parser.getContext(),
                    shape, elementType, blockSize, doubleQuant);
}

void NF4Type::print(AsmPrinter &printer) const {
  printer << "<";
  llvm::interleave(getShape(), printer.getStream(), "x");
  printer << ", " << getElementType() << ", block = " << getBlockSize();
  if (getDoubleQuant())
    printer << ", double_quant = " << getDoubleQuant();
  printer << ">";
}

LogicalResult NF4Type::verify(function_ref<InFlightDiagnostic()> emitError,
                              ArrayRef<int64_t> shape, Type elementType,
                              int64_t blockSize,
                              DoubleQuantAttr /*doubleQuant*/) {
  if (shape.empty())
    return emitError() << "expects a shape of rank >= 1, got rank 0";
  for (auto [dim, size] : llvm::enumerate(shape))
    if (size <= 0)
      return emitError() << "expects positive static dimensions, got " << size
                         << " in dimension " << dim;
  if (!elementType.isBF16() && !elementType.isF16() && !elementType.isF32())
    return emitError() << "expects element type bf16, f16 or f32, got "
                       << elementType;
  return qlora::detail::verifyBnbBlockSize(emitError, "block size", blockSize);
}

int64_t NF4Type::getNumElements() const {
  int64_t n = 1;
  for (int64_t size : getShape())
    n *= size;
  return n;
}

int64_t NF4Type::getNumBlocks() const {
  return llvm::divideCeil(getNumElements(), getBlockSize());
}

RankedTensorType NF4Type::getDequantizedType() const {
  return RankedTensorType::get(getShape(), getElementType());
}
