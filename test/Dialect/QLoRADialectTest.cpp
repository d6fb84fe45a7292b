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

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/AsmParser/AsmParser.h"

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

} // namespace
} // namespace mlir::qlora
