//===- Float16Test.cpp - bf16/fp16 conversions and fp16 NF4 inputs ----------===//
#include "runtime/Float16.h"
#include "runtime/NF4.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace qlora {
namespace {

TEST(Float16, Bf16RoundsToNearestEven) {
  EXPECT_EQ(floatToBf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between two bf16 values: ties go to even (1.0).
  EXPECT_EQ(floatToBf16(1.0f + 0x1p-8f), 0x3f80);
  EXPECT_EQ(floatToBf16(1.0f + 0x1p-8f + 0x1p-16f), 0x3f81);
  EXPECT_EQ(floatToBf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(std::nanf("")))));
  EXPECT_EQ(bf16ToFloat(floatToBf16(-0.0f)), -0.0f);
  EXPECT_TRUE(std::signbit(bf16ToFloat(floatToBf16(-0.0f))));
}

TEST(Float16, Fp16RoundTripsAndRounds) {
  EXPECT_EQ(floatToFp16(1.0f), 0x3c00);
  EXPECT_EQ(floatToFp16(65504.0f), 0x7bff);         // largest finite
  EXPECT_EQ(floatToFp16(65520.0f), 0x7c00);         // rounds to infinity
  EXPECT_EQ(floatToFp16(0x1p-24f), 0x0001);         // smallest subnormal
  EXPECT_EQ(floatToFp16(0x1p-25f), 0x0000);         // tie to even: zero
  EXPECT_EQ(floatToFp16(3 * 0x1p-25f), 0x0002);     // tie to even: 2
  EXPECT_EQ(floatToFp16(1.0f + 0x1p-11f), 0x3c00);  // tie to even
  EXPECT_EQ(floatToFp16(-2.0f), 0xc000);
  // Every fp16 value survives fp16 -> float -> fp16.
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    if ((bits & 0x7c00) == 0x7c00 && (bits & 0x3ff))
      continue; // NaN payloads need not round-trip
    EXPECT_EQ(floatToFp16(fp16ToFloat(uint16_t(bits))), bits) << bits;
  }
}

TEST(Float16, Fp16InputQuantizesLikeItsFloatValues) {
  const int64_t n = 4096 + 37;
  std::vector<uint16_t> halves(n);
  std::vector<float> floats(n);
  for (int64_t i = 0; i < n; ++i) {
    halves[i] = floatToFp16(std::cos(float(i)) * 0.1f);
    floats[i] = fp16ToFloat(halves[i]);
  }
  std::vector<uint8_t> packedHalf(nf4::packedBytes(n)), packedFloat(packedHalf);
  std::vector<float> absmaxHalf(nf4::numBlocks(n, 64)), absmaxFloat(absmaxHalf);
  nf4::quantize(halves.data(), ElementType::F16, n, 64, packedHalf.data(),
                absmaxHalf.data());
  nf4::quantize(floats.data(), ElementType::F32, n, 64, packedFloat.data(),
                absmaxFloat.data());
  EXPECT_EQ(packedHalf, packedFloat);
  EXPECT_EQ(absmaxHalf, absmaxFloat);

  std::vector<uint16_t> restored(n);
  std::vector<float> restoredFloat(n);
  nf4::dequantize(packedHalf.data(), absmaxHalf.data(), n, 64,
                  ElementType::F16, restored.data());
  nf4::dequantize(packedHalf.data(), absmaxHalf.data(), n, 64,
                  ElementType::F32, restoredFloat.data());
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(restored[i], floatToFp16(restoredFloat[i])) << i;
}

} // namespace
} // namespace qlora
