//===- QLoRAAttrs.cpp - qlora attributes ----------------------------------===//
//
// Parsing, printing and verification of the qlora attributes, plus the
// `key = value` parsing helpers shared with the types.
//
//===----------------------------------------------------------------------===//

#include "dialects/QLoRAAttrs.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/MathExtras.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

using namespace mlir;
using namespace mlir::qlora;

#define GET_ATTRDEF_CLASSES
#include "dialects/QLoRAAttrs.cpp.inc"

void QLoRADialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/QLoRAAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// Shared helpers
//===----------------------------------------------------------------------===//

ParseResult qlora::detail::parseKeyedEntries(
    AsmParser &parser, ArrayRef<StringRef> keys, bool leadingComma,
    function_ref<ParseResult(StringRef key)> parseValue) {
  llvm::StringSet<> seen;
  bool first = true;
  while (true) {
    if (succeeded(parser.parseOptionalGreater()))
      return success();
    if ((!first || leadingComma) && parser.parseComma())
      return failure();
    first = false;
    SMLoc keyLoc = parser.getCurrentLocation();
    StringRef key;
    if (parser.parseKeyword(&key))
      return failure();
    if (!llvm::is_contained(keys, key)) {
      InFlightDiagnostic diag = parser.emitError(keyLoc, "expects one of ");
      llvm::interleave(
          keys, [&](StringRef k) { diag << "'" << k << "'"; },
          [&] { diag << ", "; });
      return diag << ", got '" << key << "'";
    }
    if (!seen.insert(key).second)
      return parser.emitError(keyLoc, "expects '")
             << key << "' at most once, got it twice";
    if (parser.parseEqual() || parseValue(key))
      return failure();
  }
}

LogicalResult
qlora::detail::verifyBnbBlockSize(function_ref<InFlightDiagnostic()> emitError,
                                  StringRef what, int64_t blockSize) {
  if (blockSize <= 0)
    return emitError() << "expects a positive " << what << ", got "
                       << blockSize;
  if (!llvm::isPowerOf2_64(blockSize))
    return emitError() << "expects a power-of-two " << what << ", got "
                       << blockSize;
  if (blockSize < 64 || blockSize > 4096)
    return emitError() << "expects " << what
                       << " in [64, 4096] (bitsandbytes), got " << blockSize;
  return success();
}

/// printf-style "%.*g" formatting.
static std::string formatG(double value, int precision) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.*g", precision, value);
  return buffer;
}

std::string qlora::detail::formatFloatLiteral(double value) {
  if (!std::isfinite(value))
    return formatG(value, 6);
  // Shortest form that round-trips.
  std::string text;
  for (int precision = 1; precision <= 17; ++precision) {
    text = formatG(value, precision);
    if (std::strtod(text.c_str(), nullptr) == value)
      break;
  }
  // MLIR float literals need a '.' before any exponent.
  if (text.find('.') == std::string::npos) {
    size_t exp = text.find('e');
    text.insert(exp == std::string::npos ? text.size() : exp, ".0");
  }
  return text;
}

/// Formats a value for a diagnostic.
static std::string fmt(double value) { return formatG(value, 6); }

//===----------------------------------------------------------------------===//
// DoubleQuantAttr
//===----------------------------------------------------------------------===//

Attribute DoubleQuantAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  int64_t bits = 8, block = 256;
  if (parser.parseLess() ||
      qlora::detail::parseKeyedEntries(
          parser, {"bits", "block"}, /*leadingComma=*/false,
          [&](StringRef key) {
            return parser.parseInteger(key == "bits" ? bits : block);
          }))
    return {};
  return getChecked([&] { return parser.emitError(loc); }, parser.getContext(),
                    bits, block);
}

void DoubleQuantAttr::print(AsmPrinter &printer) const {
  printer << "<";
  if (getBits() != 8)
    printer << "bits = " << getBits() << ", ";
  printer << "block = " << getBlock() << ">";
}

LogicalResult
DoubleQuantAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                        int64_t bits, int64_t block) {
  if (bits != 8)
    return emitError() << "expects 8-bit double-quant constants, got " << bits;
  return qlora::detail::verifyBnbBlockSize(emitError, "double-quant block size",
                                           block);
}

//===----------------------------------------------------------------------===//
// LoraConfigAttr
//===----------------------------------------------------------------------===//

/// Parses a number (integer or float literal) into `value`.
static ParseResult parseNumber(AsmParser &parser, StringRef key,
                               double &value) {
  SMLoc loc = parser.getCurrentLocation();
  Attribute attr;
  if (parser.parseAttribute(attr))
    return failure();
  if (auto f = dyn_cast<FloatAttr>(attr))
    value = f.getValueAsDouble();
  else if (auto i = dyn_cast<IntegerAttr>(attr); i && !i.getType().isInteger(1))
    value = static_cast<double>(i.getInt());
  else
    return parser.emitError(loc, "expects a number for '")
           << key << "', got " << attr;
  return success();
}

Attribute LoraConfigAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  // PEFT's LoraConfig defaults.
  int64_t r = 8;
  double alpha = 8.0, dropout = 0.0;
  bool rslora = false;
  auto parseValue = [&](StringRef key) -> ParseResult {
    if (key == "r")
      return parser.parseInteger(r);
    if (key == "lora_alpha")
      return parseNumber(parser, key, alpha);
    if (key == "lora_dropout")
      return parseNumber(parser, key, dropout);
    SMLoc valueLoc = parser.getCurrentLocation();
    StringRef word;
    if (parser.parseKeyword(&word))
      return failure();
    if (word != "true" && word != "false")
      return parser.emitError(valueLoc, "expects true or false for '")
             << key << "', got '" << word << "'";
    rslora = word == "true";
    return success();
  };
  if (parser.parseLess() ||
      qlora::detail::parseKeyedEntries(
          parser, {"r", "lora_alpha", "lora_dropout", "use_rslora"},
          /*leadingComma=*/false, parseValue))
    return {};
  return getChecked([&] { return parser.emitError(loc); }, parser.getContext(),
                    r, APFloat(alpha), APFloat(dropout), rslora);
}

void LoraConfigAttr::print(AsmPrinter &printer) const {
  printer << "<r = " << getR() << ", lora_alpha = "
          << qlora::detail::formatFloatLiteral(getLoraAlpha().convertToDouble())
          << ", lora_dropout = "
          << qlora::detail::formatFloatLiteral(
                 getLoraDropout().convertToDouble())
          << ", use_rslora = " << (getUseRslora() ? "true" : "false") << ">";
}

LogicalResult
LoraConfigAttr::verify(function_ref<InFlightDiagnostic()> emitError, int64_t r,
                       APFloat loraAlphaValue, APFloat loraDropoutValue,
                       bool /*useRslora*/) {
  double loraAlpha = loraAlphaValue.convertToDouble();
  double loraDropout = loraDropoutValue.convertToDouble();
  if (r <= 0)
    return emitError() << "expects r > 0, got " << r;
  if (!(loraAlpha > 0.0) || !std::isfinite(loraAlpha))
    return emitError() << "expects lora_alpha > 0, got " << fmt(loraAlpha);
  if (!(loraDropout >= 0.0 && loraDropout < 1.0))
    return emitError() << "expects lora_dropout in [0, 1), got "
                       << fmt(loraDropout);
  return success();
}

double LoraConfigAttr::scale() const {
  double r = static_cast<double>(getR());
  return getLoraAlpha().convertToDouble() / (getUseRslora() ? std::sqrt(r) : r);
}

//===----------------------------------------------------------------------===//
// RopeLlama3Attr
//===----------------------------------------------------------------------===//

Attribute RopeLlama3Attr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  double factor = 0, low = 0, high = 0;
  int64_t original = 0;
  llvm::StringSet<> seen;
  auto parseValue = [&](StringRef key) -> ParseResult {
    seen.insert(key);
    if (key == "factor")
      return parseNumber(parser, key, factor);
    if (key == "low_freq_factor")
      return parseNumber(parser, key, low);
    if (key == "high_freq_factor")
      return parseNumber(parser, key, high);
    return parser.parseInteger(original);
  };
  const SmallVector<StringRef> keys = {"factor", "low_freq_factor",
                                       "high_freq_factor",
                                       "original_max_position_embeddings"};
  if (parser.parseLess() ||
      qlora::detail::parseKeyedEntries(parser, keys, /*leadingComma=*/false,
                                       parseValue))
    return {};
  for (StringRef key : keys)
    if (!seen.contains(key)) {
      parser.emitError(loc, "expects '") << key << "'";
      return {};
    }
  return getChecked([&] { return parser.emitError(loc); }, parser.getContext(),
                    APFloat(factor), APFloat(low), APFloat(high), original);
}

void RopeLlama3Attr::print(AsmPrinter &printer) const {
  using qlora::detail::formatFloatLiteral;
  printer << "<factor = " << formatFloatLiteral(getFactor().convertToDouble())
          << ", low_freq_factor = "
          << formatFloatLiteral(getLowFreqFactor().convertToDouble())
          << ", high_freq_factor = "
          << formatFloatLiteral(getHighFreqFactor().convertToDouble())
          << ", original_max_position_embeddings = "
          << getOriginalMaxPositionEmbeddings() << ">";
}

LogicalResult
RopeLlama3Attr::verify(function_ref<InFlightDiagnostic()> emitError,
                       APFloat factorValue, APFloat lowValue,
                       APFloat highValue, int64_t original) {
  double factor = factorValue.convertToDouble();
  double low = lowValue.convertToDouble();
  double high = highValue.convertToDouble();
  if (!(factor > 0.0) || !std::isfinite(factor))
    return emitError() << "expects factor > 0, got " << fmt(factor);
  if (!(low > 0.0) || !(high > low) || !std::isfinite(high))
    return emitError() << "expects 0 < low_freq_factor < high_freq_factor, "
                          "got "
                       << fmt(low) << " and " << fmt(high);
  if (original <= 0)
    return emitError() << "expects original_max_position_embeddings > 0, got "
                       << original;
  return success();
}


//===----------------------------------------------------------------------===//
// The memory plan: BufferAttr and BufferPartAttr
//===----------------------------------------------------------------------===//

int64_t BufferPartAttr::elementBytes(Type type) {
  if (type.isBF16() || type.isF16())
    return 2;
  if (type.isF32())
    return 4;
  if (auto integer = dyn_cast<IntegerType>(type))
    return integer.getWidth() % 8 == 0 ? integer.getWidth() / 8 : 0;
  return 0;
}

LogicalResult
BufferPartAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                       StringRef name, Type elementType, int64_t elements,
                       int64_t offset) {
  if (name.empty())
    return emitError() << "expects a part name";
  if (elementBytes(elementType) == 0)
    return emitError() << "expects an element type of 1, 2, 4 or 8 bytes, got "
                       << elementType;
  if (elements < 0 || offset < 0)
    return emitError() << "expects non-negative elements and offset, got "
                       << elements << " and " << offset;
  return success();
}

LogicalResult BufferAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                 StringRef name, StringRef role, Type type,
                                 ArrayRef<BufferPartAttr> parts) {
  // The role names are the runtime's (runtime/train/Manifest.h); the
  // planner writes them and buildManifest reads them back.
  if (role.empty())
    return emitError() << "expects a role for '" << name << "'";
  if (parts.empty())
    return emitError() << "expects at least one part for '" << name << "'";
  llvm::StringSet<> seen;
  for (BufferPartAttr part : parts)
    if (!seen.insert(part.getName()).second)
      return emitError() << "expects distinct part names, got '"
                         << part.getName() << "' twice in '" << name << "'";
  return success();
}

BufferPartAttr BufferAttr::getPart(StringRef name) const {
  for (BufferPartAttr part : getParts())
    if (part.getName() == name)
      return part;
  return {};
}
