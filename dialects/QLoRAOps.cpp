//===- QLoRAOps.cpp - qlora ops -------------------------------------------===//
//
// Verifiers, custom assembly and side effects of the qlora ops.
//
//===----------------------------------------------------------------------===//

#include "dialects/QLoRAOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <cstdio>

using namespace mlir;
using namespace mlir::qlora;

#define GET_OP_CLASSES
#include "dialects/QLoRAOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Shape helpers
//===----------------------------------------------------------------------===//

/// Formats a shape as in tensor types: 8x?x4096.
static std::string formatShape(ArrayRef<int64_t> shape) {
  std::string text;
  llvm::raw_string_ostream os(text);
  llvm::interleave(
      shape,
      [&](int64_t size) {
        if (ShapedType::isDynamic(size))
          os << "?";
        else
          os << size;
      },
      [&] { os << "x"; });
  return text;
}

/// Formats a float for a diagnostic.
static std::string formatFloat(const APFloat &value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", value.convertToDouble());
  return buffer;
}

/// Two sizes agree unless both are static and differ.
static bool sizesAgree(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

/// Checks `result` is `[..., M, n]` for an input `x` of shape `[..., M, K]`;
/// `nSource` says where `n` came from.
static LogicalResult verifyProjectionResult(Operation *op, RankedTensorType x,
                                            int64_t n, StringRef nSource,
                                            RankedTensorType result) {
  if (result.getRank() != x.getRank())
    return op->emitOpError("expects result of rank ")
           << x.getRank() << " (input rank), got rank " << result.getRank();
  for (int64_t dim = 0, e = x.getRank() - 1; dim < e; ++dim)
    if (!sizesAgree(result.getDimSize(dim), x.getDimSize(dim)))
      return op->emitOpError("expects result dimension ")
             << dim << " to be " << x.getDimSize(dim) << " (from input), got "
             << result.getDimSize(dim);
  int64_t last = result.getDimSize(result.getRank() - 1);
  if (!sizesAgree(last, n))
    return op->emitOpError("expects result dimension ")
           << result.getRank() - 1 << " to be " << n << " (" << nSource
           << "), got " << last;
  if (result.getElementType() != x.getElementType())
    return op->emitOpError("expects result element type ")
           << x.getElementType() << " (input element type), got "
           << result.getElementType();
  return success();
}

/// Checks `y = x · wᵀ` for `x: [..., M, K]`, `w: [N, K]`, `y: [..., M, N]`.
static LogicalResult verifyProjection(Operation *op, RankedTensorType x,
                                      ArrayRef<int64_t> weightShape,
                                      Type weightElementType,
                                      RankedTensorType result) {
  if (x.getRank() < 2)
    return op->emitOpError(
               "expects input of rank >= 2 ([..., M, K]), got rank ")
           << x.getRank();
  if (weightShape.size() != 2)
    return op->emitOpError("expects weight of rank 2 ([out, in]), got rank ")
           << weightShape.size();
  int64_t k = x.getDimSize(x.getRank() - 1);
  if (!sizesAgree(weightShape[1], k))
    return op->emitOpError("expects weight to have ")
           << k << " columns (input features), got " << weightShape[1];
  if (weightElementType != x.getElementType())
    return op->emitOpError("expects weight element type ")
           << x.getElementType() << " (input element type), got "
           << weightElementType;
  return verifyProjectionResult(op, x, weightShape[0], "weight rows", result);
}

/// Checks the LoRA branch `scale · B(A(dropout(x)))` for `A: [r, K]` and
/// `B: [N, r]`; the result's shape is checked separately.
static LogicalResult verifyLoraBranch(Operation *op, RankedTensorType x,
                                      RankedTensorType a, RankedTensorType b,
                                      const APFloat &scale,
                                      const APFloat &dropout) {
  if (x.getRank() < 2)
    return op->emitOpError(
               "expects input of rank >= 2 ([..., M, K]), got rank ")
           << x.getRank();
  if (a.getRank() != 2)
    return op->emitOpError("expects lora_A of rank 2 ([r, in]), got rank ")
           << a.getRank();
  if (b.getRank() != 2)
    return op->emitOpError("expects lora_B of rank 2 ([out, r]), got rank ")
           << b.getRank();
  int64_t k = x.getDimSize(x.getRank() - 1);
  if (!sizesAgree(a.getDimSize(1), k))
    return op->emitOpError("expects lora_A to have ")
           << k << " columns (input features), got " << a.getDimSize(1);
  if (!sizesAgree(b.getDimSize(1), a.getDimSize(0)))
    return op->emitOpError("expects lora_B to have ")
           << a.getDimSize(0) << " columns (r), got " << b.getDimSize(1);
  double s = scale.convertToDouble();
  if (!(s > 0.0) || !std::isfinite(s))
    return op->emitOpError("expects a positive finite scale, got ")
           << formatFloat(scale);
  double p = dropout.convertToDouble();
  if (!(p >= 0.0 && p < 1.0))
    return op->emitOpError("expects dropout in [0, 1), got ")
           << formatFloat(dropout);
  return success();
}

/// Adds the RNG effects of a LoRA branch with dropout.
static void addDropoutEffects(
    bool hasDropout,
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  if (!hasDropout)
    return;
  effects.emplace_back(MemoryEffects::Read::get(), DropoutRNGResource::get());
  effects.emplace_back(MemoryEffects::Write::get(), DropoutRNGResource::get());
}

//===----------------------------------------------------------------------===//
// ParamOp
//===----------------------------------------------------------------------===//

LogicalResult ParamOp::verify() {
  if (getName().empty())
    return emitOpError("expects a non-empty checkpoint name, got \"\"");
  if (getTrainable() && isa<NF4Type>(getType()))
    return emitOpError("expects a tensor type for a trainable parameter "
                       "(NF4 weights are frozen), got ")
           << getType();
  return success();
}

//===----------------------------------------------------------------------===//
// DequantizeOp / QuantizeOp
//===----------------------------------------------------------------------===//

/// Checks that a dense tensor is the logical view of an NF4 type.
static LogicalResult verifyDenseMatchesNF4(Operation *op, StringRef what,
                                           RankedTensorType dense,
                                           NF4Type nf4) {
  if (dense.getShape() != nf4.getShape())
    return op->emitOpError("expects ")
           << what << " shape " << formatShape(nf4.getShape())
           << " (from the nf4 type), got " << formatShape(dense.getShape());
  if (dense.getElementType() != nf4.getElementType())
    return op->emitOpError("expects ")
           << what << " element type " << nf4.getElementType()
           << " (from the nf4 type), got " << dense.getElementType();
  return success();
}

LogicalResult DequantizeOp::verify() {
  return verifyDenseMatchesNF4(*this, "result", getType(),
                               getInput().getType());
}

LogicalResult QuantizeOp::verify() {
  return verifyDenseMatchesNF4(*this, "input", getInput().getType(), getType());
}

//===----------------------------------------------------------------------===//
// LinearOp / NF4MatmulOp
//===----------------------------------------------------------------------===//

LogicalResult LinearOp::verify() {
  RankedTensorType w = getWeight().getType();
  return verifyProjection(*this, getInput().getType(), w.getShape(),
                          w.getElementType(), getType());
}

LogicalResult NF4MatmulOp::verify() {
  NF4Type w = getWeight().getType();
  return verifyProjection(*this, getInput().getType(), w.getShape(),
                          w.getElementType(), getType());
}

//===----------------------------------------------------------------------===//
// LoraOp / LoraLinearOp
//===----------------------------------------------------------------------===//

LogicalResult LoraOp::verify() {
  RankedTensorType x = getInput().getType();
  RankedTensorType b = getLoraB().getType();
  if (failed(verifyLoraBranch(*this, x, getLoraA().getType(), b, getScale(),
                              getDropout())))
    return failure();
  return verifyProjectionResult(*this, x, b.getDimSize(0), "lora_B rows",
                                getType());
}

void LoraOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  addDropoutEffects(hasDropout(), effects);
}

LogicalResult LoraLinearOp::verify() {
  RankedTensorType x = getInput().getType();
  RankedTensorType b = getLoraB().getType();
  ArrayRef<int64_t> wShape;
  Type wElementType;
  if (auto nf4 = dyn_cast<NF4Type>(getWeight().getType())) {
    wShape = nf4.getShape();
    wElementType = nf4.getElementType();
  } else {
    auto dense = cast<RankedTensorType>(getWeight().getType());
    wShape = dense.getShape();
    wElementType = dense.getElementType();
  }
  if (failed(verifyProjection(*this, x, wShape, wElementType, getType())) ||
      failed(verifyLoraBranch(*this, x, getLoraA().getType(), b, getScale(),
                              getDropout())))
    return failure();
  return verifyProjectionResult(*this, x, b.getDimSize(0), "lora_B rows",
                                getType());
}

void LoraLinearOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  addDropoutEffects(hasDropout(), effects);
}

//===----------------------------------------------------------------------===//
// AddOp
//===----------------------------------------------------------------------===//

/// Syntax: %lhs `,` %rhs attr-dict `:` type
ParseResult AddOp::parse(OpAsmParser &parser, OperationState &result) {
  OpAsmParser::UnresolvedOperand lhs, rhs;
  Type type;
  if (parser.parseOperand(lhs) || parser.parseComma() ||
      parser.parseOperand(rhs) ||
      parser.parseOptionalAttrDict(result.attributes) ||
      parser.parseColonType(type) ||
      parser.resolveOperand(lhs, type, result.operands) ||
      parser.resolveOperand(rhs, type, result.operands))
    return failure();
  result.addTypes(type);
  return success();
}

void AddOp::print(OpAsmPrinter &printer) {
  printer << " " << getLhs() << ", " << getRhs();
  printer.printOptionalAttrDict((*this)->getAttrs());
  printer << " : " << getType();
}

LogicalResult AddOp::verify() {
  if (getLhs().getType() != getType())
    return emitOpError("expects lhs of the result type ")
           << getType() << ", got " << getLhs().getType();
  if (getRhs().getType() != getType())
    return emitOpError("expects rhs of the result type ")
           << getType() << ", got " << getRhs().getType();
  return success();
}
