//===- QLoRADialectTest.cpp - C++ API of the qlora types and attributes -----===//
//
// What lit cannot reach: the accessors that passes and codegen call. IR comes
// from strings, as in IREE's FlowOpsTest.
//
//===----------------------------------------------------------------------===//
#include "dialects/QLoRAAttrs.h"
#include "dialects/QLoRADialect.h"
#include "dialects/QLoRAOps.h"
#include "dialects/QLoRATypes.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"

#include <gtest/gtest.h>

#include <cmath>

namespace mlir::qlora {
namespace {

class QLoRADialectTest : public ::testing::Test {
protected:
  QLoRADialectTest() {
    context_.loadDialect<QLoRADialect, func::FuncDialect>();
  }
  Attribute parseAttr(StringRef text) {
    return parseAttribute(text, &context_);
  }
  Type parseTy(StringRef text) { return parseType(text, &context_); }

  MLIRContext context_;
};

TEST_F(QLoRADialectTest, LoraScaleFollowsPeft) {
  auto plain = dyn_cast_or_null<LoraConfigAttr>(parseAttr(
      "#qlora.lora_config<r = 16, lora_alpha = 32.0, lora_dropout = 0.05>"));
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain.getR(), 16);
  EXPECT_DOUBLE_EQ(plain.scale(), 2.0);
  EXPECT_FALSE(plain.getUseRslora());

  auto rslora = dyn_cast_or_null<LoraConfigAttr>(parseAttr(
      "#qlora.lora_config<r = 16, lora_alpha = 32.0, use_rslora = true>"));
  ASSERT_TRUE(rslora);
  EXPECT_DOUBLE_EQ(rslora.scale(), 32.0 / std::sqrt(16.0));
}

TEST_F(QLoRADialectTest, NF4TypeCarriesItsLayout) {
  auto type = dyn_cast_or_null<NF4Type>(parseTy(
      "!qlora.nf4<4096x11008, bf16, block = 64, double_quant = "
      "#qlora.double_quant<block = 256>>"));
  ASSERT_TRUE(type);
  EXPECT_EQ(type.getShape(), ArrayRef<int64_t>({4096, 11008}));
  EXPECT_TRUE(type.getElementType().isBF16());
  EXPECT_EQ(type.getBlockSize(), 64);
  ASSERT_TRUE(type.getDoubleQuant());
  EXPECT_EQ(type.getDoubleQuant().getBlock(), 256);
  EXPECT_EQ(type.getDoubleQuant().getBits(), 8);

  auto plain = dyn_cast_or_null<NF4Type>(parseTy("!qlora.nf4<64x64, f32>"));
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain.getBlockSize(), 64);
  EXPECT_FALSE(plain.getDoubleQuant());
}

TEST_F(QLoRADialectTest, RejectsABadBlockSize) {
  // The verifier's diagnostic goes to the context's handler; the parse fails.
  ScopedDiagnosticHandler silence(&context_, [](Diagnostic &) {
    return success();
  });
  EXPECT_FALSE(parseTy("!qlora.nf4<64x64, bf16, block = 48>"));
}

/// The builders the importer calls infer every result type from the operands
/// (activations in fp32 with bf16 weights), and the IR they build verifies.
TEST_F(QLoRADialectTest, BuildersInferResultTypes) {
  OpBuilder b(&context_);
  Location loc = b.getUnknownLoc();
  auto module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module.getBody());
  Type f32 = b.getF32Type(), bf16 = b.getBF16Type();
  auto scalar = RankedTensorType::get({}, f32);
  auto func = func::FuncOp::create(b, loc, "forward",
                                   b.getFunctionType({}, {scalar}));
  b.setInsertionPointToEnd(func.addEntryBlock());

  auto idsType = RankedTensorType::get({2, 8}, b.getI32Type());
  Value ids = InputOp::create(b, loc, idsType, "input_ids");
  Value labels = InputOp::create(b, loc, idsType, "labels");
  Value emb = ParamOp::create(b, loc, RankedTensorType::get({128, 64}, bf16),
                              "model.embed_tokens.weight");
  Value h = EmbeddingOp::create(b, loc, ids, emb);
  EXPECT_EQ(h.getType(), RankedTensorType::get({2, 8, 64}, f32));
  Value n = ParamOp::create(b, loc, RankedTensorType::get({64}, bf16),
                            "model.layers.0.input_layernorm.weight");
  Value x = RmsNormOp::create(b, loc, h, n, 1e-5f).getResult();
  Value wq = ParamOp::create(b, loc, RankedTensorType::get({64, 64}, bf16),
                             "model.layers.0.self_attn.q_proj.weight");
  Value wk = ParamOp::create(b, loc, RankedTensorType::get({32, 64}, bf16),
                             "model.layers.0.self_attn.k_proj.weight");
  Value q = RopeOp::create(b, loc, LinearOp::create(b, loc, x, wq), 16,
                           10000.0f);
  Value k = RopeOp::create(b, loc, LinearOp::create(b, loc, x, wk), 16,
                           10000.0f);
  EXPECT_EQ(k.getType(), RankedTensorType::get({2, 8, 32}, f32));
  Value attn =
      AttentionOp::create(b, loc, q, k, k, 4, 2, 16, 0.25f).getResult();
  Value s = SwigluOp::create(b, loc, attn, x);
  Value sum = AddOp::create(b, loc, h, s);
  Value lm = ParamOp::create(b, loc, RankedTensorType::get({128, 64}, bf16),
                             "lm_head.weight");
  Value logits = LinearOp::create(b, loc, sum, lm);
  EXPECT_EQ(logits.getType(), RankedTensorType::get({2, 8, 128}, f32));
  Value loss = CrossEntropyOp::create(b, loc, logits, labels);
  EXPECT_EQ(loss.getType(), scalar);
  func::ReturnOp::create(b, loc, loss);
  EXPECT_TRUE(succeeded(verify(module)));
  module->erase();
}

/// A projection passes its gradient to the input only: the base weight is
/// frozen, so it is not differentiable and gets no gradient.
TEST_F(QLoRADialectTest, LinearGradientFlowsToTheInputOnly) {
  OpBuilder b(&context_);
  Location loc = b.getUnknownLoc();
  auto module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module.getBody());
  Type f32 = b.getF32Type();
  auto xType = RankedTensorType::get({8, 64}, f32);
  auto wType = RankedTensorType::get({128, 64}, b.getBF16Type());
  auto dyType = RankedTensorType::get({8, 128}, f32);
  auto func = func::FuncOp::create(b, loc, "f",
                                   b.getFunctionType({xType, wType, dyType}, {}));
  Block *body = func.addEntryBlock();
  b.setInsertionPointToEnd(body);
  auto linear = LinearOp::create(b, loc, body->getArgument(0),
                                 body->getArgument(1));
  auto differentiable = cast<DifferentiableOpInterface>(linear.getOperation());
  EXPECT_TRUE(differentiable.isDifferentiableOperand(0));
  EXPECT_FALSE(differentiable.isDifferentiableOperand(1));

  SmallVector<Value> grads;
  ASSERT_TRUE(succeeded(differentiable.buildGradients(
      b, {body->getArgument(2)}, {true, false}, grads)));
  ASSERT_EQ(grads.size(), 2u);
  ASSERT_TRUE(grads[0]);
  EXPECT_TRUE(grads[0].getDefiningOp<LinearGradInputOp>());
  EXPECT_EQ(grads[0].getType(), xType);
  EXPECT_FALSE(grads[1]);

  // A zero result gradient builds nothing.
  SmallVector<Value> none;
  ASSERT_TRUE(succeeded(
      differentiable.buildGradients(b, {Value()}, {true, false}, none)));
  EXPECT_FALSE(none[0]);
  module->erase();
}

} // namespace
} // namespace mlir::qlora
