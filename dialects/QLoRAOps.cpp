//===- QLoRAOps.cpp - qlora ops -------------------------------------------===//
//
// Verifiers, builders, custom assembly and side effects of the qlora ops.
// Gradients (DifferentiableOpInterface) live in QLoRAGradients.cpp.
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

//===----------------------------------------------------------------------===//
// custom<SameType>
//===----------------------------------------------------------------------===//

/// Ops whose operands and results share one type print it once; the custom
/// directive gives every other type the printed one. Mismatches can only be
/// written in generic form, where the verifier reports them.
template <typename... Types>
static ParseResult parseSameType(OpAsmParser &parser, Type &first,
                                 Types &...rest) {
  if (parser.parseType(first))
    return failure();
  ((rest = first), ...);
  return success();
}

template <typename... Types>
static void printSameType(OpAsmPrinter &printer, Operation * /*op*/,
                          Type first, Types... /*rest*/) {
  printer << first;
}

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

/// The logical shape of a base weight: a dense tensor or an NF4 weight.
static ArrayRef<int64_t> getWeightShape(Type type) {
  if (auto nf4 = dyn_cast<NF4Type>(type))
    return nf4.getShape();
  return cast<ShapedType>(type).getShape();
}

/// `shape` with its last dimension replaced by `last`.
static SmallVector<int64_t> withLastDim(ArrayRef<int64_t> shape,
                                        int64_t last) {
  SmallVector<int64_t> result(shape);
  result.back() = last;
  return result;
}

/// Checks that `actual` is `expected`: "expects <what> of type T (<source>),
/// got U".
static LogicalResult expectType(Operation *op, StringRef what, Type actual,
                                Type expected, StringRef source) {
  if (actual == expected)
    return success();
  return op->emitOpError("expects ")
         << what << " of type " << expected << " (" << source << "), got "
         << actual;
}

/// Checks a float attribute is finite and positive (or non-negative).
static LogicalResult expectPositive(Operation *op, StringRef what,
                                    const APFloat &value,
                                    bool allowZero = false) {
  double v = value.convertToDouble();
  if (std::isfinite(v) && (v > 0.0 || (allowZero && v == 0.0)))
    return success();
  if (allowZero)
    return op->emitOpError("expects a finite ")
           << what << " >= 0, got " << formatFloat(value);
  return op->emitOpError("expects a positive finite ")
         << what << ", got " << formatFloat(value);
}

/// Checks `result` is `[..., M, n]` for `x` of shape `[..., M, K]`, in
/// `x`'s element type; `nSource` says where `n` came from, `resultName` and
/// `inputName` how the two values are called in diagnostics.
static LogicalResult verifyProjectionResult(Operation *op, RankedTensorType x,
                                            int64_t n, StringRef nSource,
                                            RankedTensorType result,
                                            StringRef resultName = "result",
                                            StringRef inputName = "input") {
  if (result.getRank() != x.getRank())
    return op->emitOpError("expects ")
           << resultName << " of rank " << x.getRank() << " (" << inputName
           << " rank), got rank " << result.getRank();
  for (int64_t dim = 0, e = x.getRank() - 1; dim < e; ++dim)
    if (!sizesAgree(result.getDimSize(dim), x.getDimSize(dim)))
      return op->emitOpError("expects ")
             << resultName << " dimension " << dim << " to be "
             << x.getDimSize(dim) << " (from " << inputName << "), got "
             << result.getDimSize(dim);
  int64_t last = result.getDimSize(result.getRank() - 1);
  if (!sizesAgree(last, n))
    return op->emitOpError("expects ")
           << resultName << " dimension " << result.getRank() - 1
           << " to be " << n << " (" << nSource << "), got " << last;
  if (result.getElementType() != x.getElementType())
    return op->emitOpError("expects ")
           << resultName << " element type " << x.getElementType() << " ("
           << inputName << " element type), got " << result.getElementType();
  return success();
}

/// Checks `y = x · wᵀ` for `x: [..., M, K]`, `w: [N, K]`, `y: [..., M, N]`.
/// The weight may be stored in another precision than `x`; `y` has `x`'s
/// element type.
static LogicalResult verifyProjection(Operation *op, RankedTensorType x,
                                      ArrayRef<int64_t> weightShape,
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
  return verifyProjectionResult(op, x, weightShape[0], "weight rows", result);
}

/// Checks the LoRA branch `scale · B(A(dropout(x)))` for `A: [r, K]` and
/// `B: [N, r]`; the result's shape is checked separately.
static LogicalResult verifyLoraBranch(Operation *op, RankedTensorType x,
                                      RankedTensorType a, RankedTensorType b,
                                      const APFloat &scale,
                                      const APFloat &dropout,
                                      IntegerAttr dropoutStream) {
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
  if (dropoutStream && dropoutStream.getInt() < 0)
    return op->emitOpError("expects a non-negative dropout_stream, got ")
           << dropoutStream.getInt();
  return success();
}

/// Adds the RNG effects of a LoRA branch with dropout: the forward op draws
/// (reads and advances) the stream, its gradient redraws the same mask.
static void addDropoutEffects(
    bool hasDropout, bool advances,
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  if (!hasDropout)
    return;
  effects.emplace_back(MemoryEffects::Read::get(), DropoutRNGResource::get());
  if (advances)
    effects.emplace_back(MemoryEffects::Write::get(),
                         DropoutRNGResource::get());
}

/// Checks a slot, input or parameter name is not empty.
static LogicalResult verifyName(Operation *op, StringRef what,
                                StringRef name) {
  if (name.empty())
    return op->emitOpError("expects a non-empty ") << what << ", got \"\"";
  return success();
}

//===----------------------------------------------------------------------===//
// Parameters, inputs and state
//===----------------------------------------------------------------------===//

LogicalResult AssignOp::verify() {
  return verifyName(*this, "slot name", getSlot());
}

/// A host slot and the copy's number: the runtime indexes its events by it.
static LogicalResult verifyTransfer(Operation *op, StringRef slot,
                                    int64_t transfer) {
  if (failed(verifyName(op, "host slot name", slot)))
    return failure();
  if (transfer < 0)
    return op->emitOpError("expects a transfer number >= 0, got ")
           << transfer;
  return success();
}

LogicalResult OffloadOp::verify() {
  return verifyTransfer(*this, getSlot(), getTransfer());
}
LogicalResult OffloadWaitOp::verify() {
  return verifyTransfer(*this, getSlot(), getTransfer());
}
LogicalResult ReloadOp::verify() {
  return verifyTransfer(*this, getSlot(), getTransfer());
}
LogicalResult ReloadWaitOp::verify() {
  return verifyTransfer(*this, getSlot(), getTransfer());
}

LogicalResult InputOp::verify() {
  return verifyName(*this, "input name", getName());
}

LogicalResult ParamOp::verify() {
  if (failed(verifyName(*this, "checkpoint name", getName())))
    return failure();
  if (getTrainable() && isa<NF4Type>(getType()))
    return emitOpError("expects a tensor type for a trainable parameter "
                       "(NF4 weights are frozen), got ")
           << getType();
  return success();
}

void ParamOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  // A trainable parameter is a state slot that qlora.assign rewrites.
  if (getTrainable())
    effects.emplace_back(MemoryEffects::Read::get(), StateResource::get());
}

LogicalResult StateOp::verify() {
  return verifyName(*this, "slot name", getSlot());
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

/// The result type of `x · wᵀ`: [..., M, N] in x's element type.
static RankedTensorType inferProjectionType(Value input, Value weight) {
  auto x = cast<RankedTensorType>(input.getType());
  return RankedTensorType::get(
      withLastDim(x.getShape(), getWeightShape(weight.getType())[0]),
      x.getElementType());
}

void LinearOp::build(OpBuilder &builder, OperationState &state, Value input,
                     Value weight) {
  build(builder, state, Type(inferProjectionType(input, weight)), input,
        weight);
}

LogicalResult LinearOp::verify() {
  return verifyProjection(*this, getInput().getType(),
                          getWeight().getType().getShape(), getType());
}

void NF4MatmulOp::build(OpBuilder &builder, OperationState &state, Value input,
                        Value weight) {
  build(builder, state, Type(inferProjectionType(input, weight)), input,
        weight);
}

LogicalResult NF4MatmulOp::verify() {
  return verifyProjection(*this, getInput().getType(),
                          getWeight().getType().getShape(), getType());
}

//===----------------------------------------------------------------------===//
// LoraOp / LoraLinearOp
//===----------------------------------------------------------------------===//

void LoraOp::build(OpBuilder &builder, OperationState &state, Value input,
                   Value loraA, Value loraB, float scale, float dropout) {
  build(builder, state, Type(inferProjectionType(input, loraB)), input, loraA,
        loraB, builder.getF32FloatAttr(scale), builder.getF32FloatAttr(dropout),
        IntegerAttr());
}

LogicalResult LoraOp::verify() {
  RankedTensorType x = getInput().getType();
  RankedTensorType b = getLoraB().getType();
  if (failed(verifyLoraBranch(*this, x, getLoraA().getType(), b, getScale(),
                              getDropout(), getDropoutStreamAttr())))
    return failure();
  return verifyProjectionResult(*this, x, b.getDimSize(0), "lora_B rows",
                                getType());
}

void LoraOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  addDropoutEffects(hasDropout(), /*advances=*/true, effects);
}

LogicalResult LoraLinearOp::verify() {
  RankedTensorType x = getInput().getType();
  RankedTensorType b = getLoraB().getType();
  if (failed(verifyProjection(*this, x, getWeightShape(getWeight().getType()),
                              getType())) ||
      failed(verifyLoraBranch(*this, x, getLoraA().getType(), b, getScale(),
                              getDropout(), getDropoutStreamAttr())))
    return failure();
  return verifyProjectionResult(*this, x, b.getDimSize(0), "lora_B rows",
                                getType());
}

void LoraLinearOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  addDropoutEffects(hasDropout(), /*advances=*/true, effects);
}

//===----------------------------------------------------------------------===//
// The network
//===----------------------------------------------------------------------===//

/// Checks q, k and v of a causal GQA attention.
static LogicalResult verifyAttention(Operation *op, RankedTensorType q,
                                     RankedTensorType k, RankedTensorType v,
                                     int64_t numHeads, int64_t numKvHeads,
                                     int64_t headDim, const APFloat &scale) {
  for (auto [name, value] : {std::pair<StringRef, int64_t>("num_heads", numHeads),
                             {"num_kv_heads", numKvHeads},
                             {"head_dim", headDim}})
    if (value <= 0)
      return op->emitOpError("expects a positive ")
             << name << ", got " << value;
  if (numHeads % numKvHeads != 0)
    return op->emitOpError("expects num_kv_heads to divide num_heads ")
           << numHeads << ", got " << numKvHeads;
  if (failed(expectPositive(op, "scale", scale)))
    return failure();
  if (q.getRank() < 2)
    return op->emitOpError(
               "expects q of rank >= 2 ([..., S, num_heads * head_dim]), got "
               "rank ")
           << q.getRank();
  int64_t last = q.getRank() - 1;
  for (auto [name, t] :
       {std::pair<StringRef, RankedTensorType>("k", k), {"v", v}}) {
    if (t.getRank() != q.getRank())
      return op->emitOpError("expects ")
             << name << " of rank " << q.getRank() << " (q rank), got rank "
             << t.getRank();
    for (int64_t dim = 0; dim < last; ++dim)
      if (!sizesAgree(t.getDimSize(dim), q.getDimSize(dim)))
        return op->emitOpError("expects ")
               << name << " dimension " << dim << " to be " << q.getDimSize(dim)
               << " (from q), got " << t.getDimSize(dim);
    if (t.getElementType() != q.getElementType())
      return op->emitOpError("expects ")
             << name << " element type " << q.getElementType()
             << " (q element type), got " << t.getElementType();
  }
  if (!sizesAgree(q.getDimSize(last), numHeads * headDim))
    return op->emitOpError("expects q last dimension ")
           << numHeads * headDim << " (num_heads * head_dim), got "
           << q.getDimSize(last);
  for (auto [name, t] :
       {std::pair<StringRef, RankedTensorType>("k", k), {"v", v}})
    if (!sizesAgree(t.getDimSize(last), numKvHeads * headDim))
      return op->emitOpError("expects ")
             << name << " last dimension " << numKvHeads * headDim
             << " (num_kv_heads * head_dim), got " << t.getDimSize(last);
  return success();
}

RankedTensorType AttentionOp::lseType(RankedTensorType q, int64_t numHeads) {
  // [..., S, H * D] -> [..., H, S]
  SmallVector<int64_t> shape(q.getShape().drop_back(2));
  shape.push_back(numHeads);
  shape.push_back(q.getDimSize(q.getRank() - 2));
  return RankedTensorType::get(shape, Float32Type::get(q.getContext()));
}

void AttentionOp::build(OpBuilder &builder, OperationState &state, Value q,
                        Value k, Value v, int64_t numHeads, int64_t numKvHeads,
                        int64_t headDim, float scale, bool saveLse) {
  Type lse = saveLse ? Type(lseType(cast<RankedTensorType>(q.getType()),
                                    numHeads))
                     : Type();
  build(builder, state, q.getType(), lse, q, k, v,
        builder.getI64IntegerAttr(numHeads),
        builder.getI64IntegerAttr(numKvHeads),
        builder.getI64IntegerAttr(headDim), builder.getF32FloatAttr(scale));
}

/// Checks a saved log-sum-exp against the q it was computed from.
static LogicalResult verifySavedLse(Operation *op, Value lse,
                                    RankedTensorType q, int64_t numHeads) {
  if (!lse || q.getRank() < 2)
    return success();
  return expectType(op, "lse", lse.getType(),
                    AttentionOp::lseType(q, numHeads),
                    "[..., num_heads, S] in f32");
}

LogicalResult AttentionOp::verify() {
  if (failed(verifyAttention(*this, getQ().getType(), getK().getType(),
                             getV().getType(), getNumHeads(), getNumKvHeads(),
                             getHeadDim(), getScale())) ||
      failed(verifySavedLse(*this, getLse(), getQ().getType(), getNumHeads())))
    return failure();
  return expectType(*this, "result", getResult().getType(), getQ().getType(),
                    "q type");
}

/// Checks logits `[..., S, V]` against labels `[..., S]`.
static LogicalResult verifyCrossEntropy(Operation *op, RankedTensorType logits,
                                        RankedTensorType labels) {
  if (logits.getRank() < 2)
    return op->emitOpError(
               "expects logits of rank >= 2 ([..., S, vocab]), got rank ")
           << logits.getRank();
  if (labels.getRank() != logits.getRank() - 1)
    return op->emitOpError("expects labels of rank ")
           << logits.getRank() - 1 << " (logits rank - 1), got rank "
           << labels.getRank();
  for (int64_t dim = 0, e = labels.getRank(); dim < e; ++dim)
    if (!sizesAgree(labels.getDimSize(dim), logits.getDimSize(dim)))
      return op->emitOpError("expects labels dimension ")
             << dim << " to be " << logits.getDimSize(dim)
             << " (from logits), got " << labels.getDimSize(dim);
  return success();
}

void CrossEntropyOp::build(OpBuilder &builder, OperationState &state,
                           Value logits, Value labels, int64_t ignoreIndex) {
  build(builder, state, Type(RankedTensorType::get({}, builder.getF32Type())),
        logits, labels, builder.getI64IntegerAttr(ignoreIndex));
}

LogicalResult CrossEntropyOp::verify() {
  return verifyCrossEntropy(*this, getLogits().getType(),
                            getLabels().getType());
}

void EmbeddingOp::build(OpBuilder &builder, OperationState &state, Value ids,
                        Value table, Type elementType) {
  auto idsType = cast<RankedTensorType>(ids.getType());
  SmallVector<int64_t> shape(idsType.getShape());
  shape.push_back(cast<RankedTensorType>(table.getType()).getDimSize(1));
  if (!elementType)
    elementType = builder.getF32Type();
  build(builder, state, Type(RankedTensorType::get(shape, elementType)), ids,
        table);
}

LogicalResult EmbeddingOp::verify() {
  RankedTensorType ids = getIds().getType();
  RankedTensorType table = getTable().getType();
  RankedTensorType result = getType();
  if (table.getRank() != 2)
    return emitOpError("expects table of rank 2 ([vocab, hidden]), got rank ")
           << table.getRank();
  if (result.getRank() != ids.getRank() + 1)
    return emitOpError("expects result of rank ")
           << ids.getRank() + 1 << " (ids rank + 1), got rank "
           << result.getRank();
  for (int64_t dim = 0, e = ids.getRank(); dim < e; ++dim)
    if (!sizesAgree(result.getDimSize(dim), ids.getDimSize(dim)))
      return emitOpError("expects result dimension ")
             << dim << " to be " << ids.getDimSize(dim) << " (from ids), got "
             << result.getDimSize(dim);
  int64_t last = ids.getRank();
  if (!sizesAgree(result.getDimSize(last), table.getDimSize(1)))
    return emitOpError("expects result dimension ")
           << last << " to be " << table.getDimSize(1)
           << " (table columns), got " << result.getDimSize(last);
  return success();
}

/// Checks the input and weight of an RMS norm (forward or backward).
static LogicalResult verifyRmsNorm(Operation *op, RankedTensorType x,
                                   RankedTensorType weight,
                                   const APFloat &eps) {
  if (x.getRank() < 1)
    return op->emitOpError("expects input of rank >= 1, got rank 0");
  if (weight.getRank() != 1)
    return op->emitOpError("expects weight of rank 1 ([hidden]), got rank ")
           << weight.getRank();
  int64_t hidden = x.getDimSize(x.getRank() - 1);
  if (!sizesAgree(weight.getDimSize(0), hidden))
    return op->emitOpError("expects weight of size ")
           << hidden << " (input hidden size), got " << weight.getDimSize(0);
  return expectPositive(op, "eps", eps, /*allowZero=*/true);
}

RankedTensorType RmsNormOp::rstdType(RankedTensorType input) {
  return RankedTensorType::get(input.getShape().drop_back(),
                               Float32Type::get(input.getContext()));
}

void RmsNormOp::build(OpBuilder &builder, OperationState &state, Value input,
                      Value weight, float eps, bool saveRstd) {
  Type rstd = saveRstd ? Type(rstdType(cast<RankedTensorType>(input.getType())))
                       : Type();
  build(builder, state, input.getType(), rstd, input, weight,
        builder.getF32FloatAttr(eps));
}

/// Checks a saved reciprocal RMS against the input it was computed from.
static LogicalResult verifySavedRstd(Operation *op, Value rstd,
                                     RankedTensorType input) {
  if (!rstd || input.getRank() < 1)
    return success();
  return expectType(op, "rstd", rstd.getType(), RmsNormOp::rstdType(input),
                    "the input's rows in f32");
}

LogicalResult RmsNormOp::verify() {
  if (failed(verifyRmsNorm(*this, getInput().getType(), getWeight().getType(),
                           getEps())) ||
      failed(verifySavedRstd(*this, getRstd(), getInput().getType())))
    return failure();
  return expectType(*this, "result", getResult().getType(),
                    getInput().getType(), "input type");
}

/// Checks the operand of a rotary embedding (forward or backward), called
/// `name` in diagnostics.
static LogicalResult verifyRope(Operation *op, StringRef name,
                                RankedTensorType x, int64_t headDim,
                                const APFloat &theta) {
  if (x.getRank() < 2)
    return op->emitOpError("expects ")
           << name << " of rank >= 2 ([..., S, heads * head_dim]), got rank "
           << x.getRank();
  if (headDim <= 0 || headDim % 2 != 0)
    return op->emitOpError("expects a positive even head_dim, got ")
           << headDim;
  int64_t last = x.getDimSize(x.getRank() - 1);
  if (!ShapedType::isDynamic(last) && last % headDim != 0)
    return op->emitOpError("expects the last dimension to be a multiple of "
                           "head_dim ")
           << headDim << ", got " << last;
  return expectPositive(op, "theta", theta);
}

void RopeOp::build(OpBuilder &builder, OperationState &state, Value input,
                   int64_t headDim, float theta, RopeLlama3Attr ropeScaling) {
  build(builder, state, input.getType(), input,
        builder.getI64IntegerAttr(headDim), builder.getF32FloatAttr(theta),
        ropeScaling);
}

LogicalResult RopeOp::verify() {
  if (failed(verifyRope(*this, "input", getInput().getType(), getHeadDim(),
                        getTheta())))
    return failure();
  return expectType(*this, "result", getType(), getInput().getType(),
                    "input type");
}

void SwigluOp::build(OpBuilder &builder, OperationState &state, Value gate,
                     Value up) {
  build(builder, state, gate.getType(), gate, up);
}

LogicalResult SwigluOp::verify() {
  Type gate = getGate().getType();
  if (failed(expectType(*this, "up", getUp().getType(), gate, "gate type")))
    return failure();
  return expectType(*this, "result", getType(), gate, "gate type");
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

void AddOp::build(OpBuilder &builder, OperationState &state, Value lhs,
                  Value rhs) {
  build(builder, state, lhs.getType(), lhs, rhs);
}

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

void FillOp::build(OpBuilder &builder, OperationState &state, Type type,
                   float value) {
  build(builder, state, type, builder.getF32FloatAttr(value));
}

LogicalResult FillOp::verify() {
  if (!getType().hasStaticShape())
    return emitOpError("expects a static shape, got ")
           << formatShape(getType().getShape());
  return success();
}

void MulOp::build(OpBuilder &builder, OperationState &state, Value lhs,
                  Value rhs) {
  build(builder, state, lhs.getType(), lhs, rhs);
}

LogicalResult MulOp::verify() {
  RankedTensorType lhs = getLhs().getType();
  RankedTensorType rhs = getRhs().getType();
  if (rhs != lhs && rhs.getRank() != 0)
    return emitOpError("expects rhs of type ")
           << lhs << " (lhs type) or a 0-d tensor, got " << rhs;
  return expectType(*this, "result", getType(), lhs, "lhs type");
}

LogicalResult FusedElementwiseOp::verify() {
  if (getResults().empty())
    return emitOpError("expects at least one result");
  RankedTensorType shape = cast<RankedTensorType>(getResult(0).getType());
  for (Value result : getResults())
    if (cast<RankedTensorType>(result.getType()).getShape() !=
        shape.getShape())
      return emitOpError("expects every result of shape ")
             << formatShape(shape.getShape()) << ", got "
             << formatShape(
                    cast<RankedTensorType>(result.getType()).getShape());
  for (Value input : getInputs()) {
    auto type = cast<RankedTensorType>(input.getType());
    if (type.getRank() != 0 && type.getShape() != shape.getShape())
      return emitOpError("expects every input of shape ")
             << formatShape(shape.getShape()) << " or 0-d, got "
             << formatShape(type.getShape());
  }
  Block &body = getBody().front();
  if (body.getNumArguments() != getInputs().size())
    return emitOpError("expects one body argument per input (")
           << getInputs().size() << "), got " << body.getNumArguments();
  for (BlockArgument argument : body.getArguments())
    if (!argument.getType().isF32())
      return emitOpError("expects f32 body arguments, got ")
             << argument.getType();
  auto yield = cast<YieldOp>(body.getTerminator());
  if (yield.getValues().size() != getResults().size())
    return emitOpError("expects the body to yield one value per result (")
           << getResults().size() << "), got " << yield.getValues().size();
  return success();
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

void AttentionGradOp::build(OpBuilder &builder, OperationState &state, Value q,
                            Value k, Value v, Value out, Value dout,
                            int64_t numHeads, int64_t numKvHeads,
                            int64_t headDim, float scale, Value lse) {
  build(builder, state, q.getType(), k.getType(), v.getType(), q, k, v, out,
        dout, lse, builder.getI64IntegerAttr(numHeads),
        builder.getI64IntegerAttr(numKvHeads),
        builder.getI64IntegerAttr(headDim), builder.getF32FloatAttr(scale));
}

LogicalResult AttentionGradOp::verify() {
  RankedTensorType q = getQ().getType(), k = getK().getType(),
                   v = getV().getType();
  if (failed(verifyAttention(*this, q, k, v, getNumHeads(), getNumKvHeads(),
                             getHeadDim(), getScale())) ||
      failed(expectType(*this, "out", getOut().getType(), q, "q type")) ||
      failed(expectType(*this, "dout", getDout().getType(), q, "q type")) ||
      failed(expectType(*this, "dq", getDq().getType(), q, "q type")) ||
      failed(expectType(*this, "dk", getDk().getType(), k, "k type")) ||
      failed(verifySavedLse(*this, getLse(), q, getNumHeads())))
    return failure();
  return expectType(*this, "dv", getDv().getType(), v, "v type");
}

void CrossEntropyGradOp::build(OpBuilder &builder, OperationState &state,
                               Value logits, Value labels, Value dloss,
                               int64_t ignoreIndex) {
  build(builder, state, logits.getType(), logits, labels, dloss,
        builder.getI64IntegerAttr(ignoreIndex));
}

LogicalResult CrossEntropyGradOp::verify() {
  if (failed(verifyCrossEntropy(*this, getLogits().getType(),
                                getLabels().getType())))
    return failure();
  return expectType(*this, "result", getType(), getLogits().getType(),
                    "logits type");
}

LogicalResult LmHeadLossOp::verify() {
  RankedTensorType input = getInput().getType();
  RankedTensorType weight = getWeight().getType();
  if (input.getRank() < 2)
    return emitOpError("expects input of rank >= 2 ([..., S, hidden]), got "
                       "rank ")
           << input.getRank();
  if (weight.getRank() != 2)
    return emitOpError("expects weight of rank 2 ([vocab, hidden]), got rank ")
           << weight.getRank();
  int64_t hidden = input.getDimSize(input.getRank() - 1);
  if (!sizesAgree(weight.getDimSize(1), hidden))
    return emitOpError("expects weight to have ")
           << hidden << " columns (input features), got "
           << weight.getDimSize(1);
  if (weight.getElementType() != input.getElementType())
    return emitOpError("expects weight and input of one element type, got ")
           << weight.getElementType() << " and " << input.getElementType();
  // The labels against the logits the op would produce.
  SmallVector<int64_t> logits(input.getShape());
  logits.back() = weight.getDimSize(0);
  if (failed(verifyCrossEntropy(
          *this, RankedTensorType::get(logits, input.getElementType()),
          getLabels().getType())))
    return failure();
  if (getChunkRows() <= 0)
    return emitOpError("expects a positive chunk_rows, got ")
           << getChunkRows();
  return expectType(*this, "dinput", getDinput().getType(), input,
                    "input type");
}

void LinearGradInputOp::build(OpBuilder &builder, OperationState &state,
                              Value dy, Value weight) {
  auto dyType = cast<RankedTensorType>(dy.getType());
  build(builder, state,
        Type(RankedTensorType::get(
            withLastDim(dyType.getShape(), getWeightShape(weight.getType())[1]),
            dyType.getElementType())),
        dy, weight);
}

LogicalResult LinearGradInputOp::verify() {
  RankedTensorType dy = getDy().getType();
  ArrayRef<int64_t> w = getWeightShape(getWeight().getType());
  if (dy.getRank() < 2)
    return emitOpError("expects dy of rank >= 2 ([..., M, N]), got rank ")
           << dy.getRank();
  if (w.size() != 2)
    return emitOpError("expects weight of rank 2 ([out, in]), got rank ")
           << w.size();
  int64_t n = dy.getDimSize(dy.getRank() - 1);
  if (!sizesAgree(w[0], n))
    return emitOpError("expects weight to have ")
           << n << " rows (dy features), got " << w[0];
  return verifyProjectionResult(*this, dy, w[1], "weight columns", getType(),
                                "result", "dy");
}

void LoraGradOp::build(OpBuilder &builder, OperationState &state, Value input,
                       Value loraA, Value loraB, Value dy, FloatAttr scale,
                       FloatAttr dropout, IntegerAttr dropoutStream) {
  build(builder, state, input.getType(), loraA.getType(), loraB.getType(),
        input, loraA, loraB, dy, scale,
        dropout ? dropout : builder.getF32FloatAttr(0.0f), dropoutStream);
}

LogicalResult LoraGradOp::verify() {
  RankedTensorType x = getInput().getType();
  RankedTensorType a = getLoraA().getType();
  RankedTensorType b = getLoraB().getType();
  if (failed(verifyLoraBranch(*this, x, a, b, getScale(), getDropout(),
                              getDropoutStreamAttr())) ||
      failed(verifyProjectionResult(*this, x, b.getDimSize(0), "lora_B rows",
                                    getDy().getType(), "dy")) ||
      failed(expectType(*this, "dx", getDx().getType(), x, "input type")) ||
      failed(expectType(*this, "da", getDa().getType(), a, "lora_A type")))
    return failure();
  return expectType(*this, "db", getDb().getType(), b, "lora_B type");
}

void LoraGradOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  addDropoutEffects(hasDropout(), /*advances=*/false, effects);
}

void RmsNormGradOp::build(OpBuilder &builder, OperationState &state,
                          Value input, Value weight, Value dy, float eps,
                          Value rstd) {
  build(builder, state, input.getType(), input, weight, dy, rstd,
        builder.getF32FloatAttr(eps));
}

LogicalResult RmsNormGradOp::verify() {
  Type x = getInput().getType();
  if (failed(verifyRmsNorm(*this, getInput().getType(), getWeight().getType(),
                           getEps())) ||
      failed(expectType(*this, "dy", getDy().getType(), x, "input type")) ||
      failed(verifySavedRstd(*this, getRstd(), getInput().getType())))
    return failure();
  return expectType(*this, "result", getType(), x, "input type");
}

void RopeGradOp::build(OpBuilder &builder, OperationState &state, Value dy,
                       int64_t headDim, float theta,
                       RopeLlama3Attr ropeScaling) {
  build(builder, state, dy.getType(), dy, builder.getI64IntegerAttr(headDim),
        builder.getF32FloatAttr(theta), ropeScaling);
}

LogicalResult RopeGradOp::verify() {
  if (failed(verifyRope(*this, "dy", getDy().getType(), getHeadDim(),
                        getTheta())))
    return failure();
  return expectType(*this, "result", getType(), getDy().getType(), "dy type");
}

void SwigluGradOp::build(OpBuilder &builder, OperationState &state, Value gate,
                         Value up, Value dout) {
  build(builder, state, gate.getType(), gate.getType(), gate, up, dout);
}

LogicalResult SwigluGradOp::verify() {
  Type gate = getGate().getType();
  for (auto [name, type] : {std::pair<StringRef, Type>("up", getUp().getType()),
                            {"dout", getDout().getType()},
                            {"dgate", getDgate().getType()},
                            {"dup", getDup().getType()}})
    if (failed(expectType(*this, name, type, gate, "gate type")))
      return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

void AdamWOp::build(OpBuilder &builder, OperationState &state, Value param,
                    Value grad, Value m, Value v, Value lr, Value step,
                    float beta1, float beta2, float eps, float weightDecay) {
  Type type = param.getType();
  build(builder, state, type, type, type, param, grad, m, v, lr, step,
        builder.getF32FloatAttr(beta1), builder.getF32FloatAttr(beta2),
        builder.getF32FloatAttr(eps), builder.getF32FloatAttr(weightDecay));
}

LogicalResult AdamWOp::verify() {
  Type param = getParam().getType();
  for (auto [name, type] :
       {std::pair<StringRef, Type>("grad", getGrad().getType()),
        {"m", getM().getType()},
        {"v", getV().getType()},
        {"new_param", getNewParam().getType()},
        {"new_m", getNewM().getType()},
        {"new_v", getNewV().getType()}})
    if (failed(expectType(*this, name, type, param, "param type")))
      return failure();
  for (auto [name, beta] : {std::pair<StringRef, APFloat>("beta1", getBeta1()),
                            {"beta2", getBeta2()}}) {
    double b = beta.convertToDouble();
    if (!(b >= 0.0 && b < 1.0))
      return emitOpError("expects ")
             << name << " in [0, 1), got " << formatFloat(beta);
  }
  if (failed(expectPositive(*this, "eps", getEps(), /*allowZero=*/true)))
    return failure();
  return expectPositive(*this, "weight_decay", getWeightDecay(),
                        /*allowZero=*/true);
}

void ClipCoefficientOp::build(OpBuilder &builder, OperationState &state,
                              Value total, float maxNorm) {
  build(builder, state, total.getType(), total,
        builder.getF32FloatAttr(maxNorm));
}

LogicalResult ClipCoefficientOp::verify() {
  return expectPositive(*this, "max_norm", getMaxNorm());
}

void SumSquaresOp::build(OpBuilder &builder, OperationState &state,
                         Value input) {
  build(builder, state,
        Type(RankedTensorType::get({}, builder.getF32Type())), input);
}
