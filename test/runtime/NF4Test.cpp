//===- NF4Test.cpp - NF4 and double quantization against bitsandbytes -------===//
//
// Every case of the oracle's nf4_vectors.safetensors (bitsandbytes'
// quantize_4bit on an H200) must be reproduced bit for bit: packed codes,
// absmax, the double-quant codes, scales and offset, and dequantize_4bit.
//
//===----------------------------------------------------------------------===//
#include "OracleFiles.h"
#include "runtime/DoubleQuant.h"
#include "runtime/Float16.h"
#include "runtime/NF4.h"
#include "runtime/Parallel.h"
#include "runtime/TorchMean.h"

#include <gtest/gtest.h>

#include <cmath>

namespace qlora {
namespace {

using testing::tensorValues;

const char *kVectors = "nf4_vectors.safetensors";

struct OracleCase {
  std::string name;
  ElementType dtype;
};

void PrintTo(const OracleCase &oracleCase, std::ostream *os) {
  *os << oracleCase.name;
}

std::vector<OracleCase> oracleCases() {
  std::vector<OracleCase> cases;
  for (const char *base : {"normal_256x512", "normal_4096x64", "odd_33x70",
                           "outliers_128x256", "zeros_block_64x128"}) {
    cases.push_back({std::string(base) + ".bf16", ElementType::BF16});
    cases.push_back({std::string(base) + ".fp32", ElementType::F32});
  }
  return cases;
}

class NF4OracleTest : public ::testing::TestWithParam<OracleCase> {
protected:
  void SetUp() override {
    QLORA_REQUIRE_ORACLE(kVectors);
    Expected<SafetensorsFile> opened =
        SafetensorsFile::open(testing::oraclePath(kVectors));
    ASSERT_TRUE(opened) << opened.message();
    file_ = std::make_unique<SafetensorsFile>(opened.take());
    const TensorInfo *input = file_->find(GetParam().name + ".input");
    ASSERT_NE(input, nullptr);
    numElements_ = input->numElements();
    ByteSpan bytes = file_->data(*input);
    input_.assign(bytes.data, bytes.data + bytes.size);
  }

  std::string key(const std::string &suffix) const {
    return GetParam().name + "." + suffix;
  }

  std::unique_ptr<SafetensorsFile> file_;
  std::vector<uint8_t> input_;
  int64_t numElements_ = 0;
};

TEST_P(NF4OracleTest, QuantizeMatchesPackedCodesAndAbsmax) {
  std::vector<uint8_t> packed(nf4::packedBytes(numElements_));
  std::vector<float> absmax(nf4::numBlocks(numElements_, 64));
  nf4::quantize(input_.data(), GetParam().dtype, numElements_, 64,
                packed.data(), absmax.data());
  EXPECT_EQ(packed, tensorValues<uint8_t>(*file_, key("nodq.packed")));
  EXPECT_EQ(packed, tensorValues<uint8_t>(*file_, key("dq.packed")));
  std::vector<float> expected = tensorValues<float>(*file_, key("nodq.absmax"));
  ASSERT_EQ(absmax.size(), expected.size());
  EXPECT_EQ(0, std::memcmp(absmax.data(), expected.data(),
                           absmax.size() * sizeof(float)));
}

TEST_P(NF4OracleTest, DoubleQuantMatchesCodesScalesAndOffset) {
  std::vector<float> absmax = tensorValues<float>(*file_, key("nodq.absmax"));
  dq::DoubleQuantized state =
      dq::quantizeAbsmax(absmax.data(), int64_t(absmax.size()));
  std::vector<float> offset = tensorValues<float>(*file_, key("dq.offset"));
  ASSERT_EQ(offset.size(), 1u);
  EXPECT_EQ(floatToBits(state.offset), floatToBits(offset[0]))
      << state.offset << " vs " << offset[0];
  EXPECT_EQ(state.codes, tensorValues<uint8_t>(*file_, key("dq.absmax_codes")));
  std::vector<float> scales = tensorValues<float>(*file_, key("dq.absmax_scales"));
  ASSERT_EQ(state.scales.size(), scales.size());
  EXPECT_EQ(0, std::memcmp(state.scales.data(), scales.data(),
                           scales.size() * sizeof(float)));
}

/// Dequantizes with the oracle's own constants and compares bit patterns.
TEST_P(NF4OracleTest, DequantizeMatches) {
  ElementType type = GetParam().dtype;
  int width = elementSize(type);
  std::vector<uint8_t> packed = tensorValues<uint8_t>(*file_, key("nodq.packed"));
  std::vector<float> absmax = tensorValues<float>(*file_, key("nodq.absmax"));
  std::vector<uint8_t> output(numElements_ * width);
  nf4::dequantize(packed.data(), absmax.data(), numElements_, 64, type,
                  output.data());
  EXPECT_EQ(output, tensorValues<uint8_t>(*file_, key("nodq.dequant")));

  dq::DoubleQuantized state;
  state.codes = tensorValues<uint8_t>(*file_, key("dq.absmax_codes"));
  state.scales = tensorValues<float>(*file_, key("dq.absmax_scales"));
  state.offset = tensorValues<float>(*file_, key("dq.offset"))[0];
  std::vector<float> restored = dq::dequantizeAbsmax(state);
  nf4::dequantize(packed.data(), restored.data(), numElements_, 64, type,
                  output.data());
  EXPECT_EQ(output, tensorValues<uint8_t>(*file_, key("dq.dequant")));
}

INSTANTIATE_TEST_SUITE_P(
    Oracle, NF4OracleTest, ::testing::ValuesIn(oracleCases()),
    [](const ::testing::TestParamInfo<OracleCase> &info) {
      std::string name = info.param.name;
      for (char &c : name)
        if (c == '.')
          c = '_';
      return name;
    });

TEST(NF4Tables, MatchTheReferenceTables) {
  QLORA_REQUIRE_ORACLE(kVectors);
  Expected<SafetensorsFile> file =
      SafetensorsFile::open(testing::oraclePath(kVectors));
  ASSERT_TRUE(file) << file.message();
  std::vector<float> code = tensorValues<float>(*file, "nf4_code");
  ASSERT_EQ(code.size(), 16u);
  EXPECT_EQ(0, std::memcmp(code.data(), nf4::kCode, sizeof(nf4::kCode)));
  std::vector<float> map =
      tensorValues<float>(*file, "odd_33x70.bf16.dq.absmax_map");
  ASSERT_EQ(map.size(), 256u);
  EXPECT_EQ(0, std::memcmp(map.data(), dq::kDynamicMap,
                           sizeof(dq::kDynamicMap)));
}

TEST(NF4Encode, MapsEachCodeValueToItself) {
  for (int code = 0; code < 16; ++code)
    EXPECT_EQ(nf4::encode(nf4::kCode[code]), code);
}

TEST(NF4Encode, RoundsToTheNearestCode) {
  EXPECT_EQ(nf4::encode(0.03f), 7);  // nearer 0 than 0.0796
  EXPECT_EQ(nf4::encode(0.05f), 8);
  EXPECT_EQ(nf4::encode(-0.99f), 0);
  EXPECT_EQ(nf4::encode(0.9f), 15);
  EXPECT_EQ(nf4::encode(std::nanf("")), 0); // an all-zero block's 0 * inf
}

TEST(NF4Quantize, ZeroBlockAndOddLength) {
  // 3 elements: one block of 64 with 61 zero-filled lanes; the pad nibble is
  // the code of 0.0 (7).
  std::vector<float> input = {0.5f, -1.0f, 0.25f};
  std::vector<uint8_t> packed(2);
  float absmax = 0.0f;
  nf4::quantize(input.data(), ElementType::F32, 3, 64, packed.data(), &absmax);
  EXPECT_EQ(absmax, 1.0f);
  EXPECT_EQ(packed[0], uint8_t(nf4::encode(0.5f) << 4 | 0));
  EXPECT_EQ(packed[1], uint8_t(nf4::encode(0.25f) << 4 | 7));
  std::vector<float> restored(3);
  nf4::dequantize(packed.data(), &absmax, 3, 64, ElementType::F32,
                  restored.data());
  EXPECT_EQ(restored[1], -1.0f);

  std::vector<float> zeros(64, 0.0f);
  std::vector<uint8_t> zeroPacked(32);
  nf4::quantize(zeros.data(), ElementType::F32, 64, 64, zeroPacked.data(),
                &absmax);
  EXPECT_EQ(absmax, 0.0f);
  for (uint8_t byte : zeroPacked)
    EXPECT_EQ(byte, 0);
}

TEST(NF4Quantize, ThreadCountDoesNotChangeTheResult) {
  const int64_t n = 1 << 20;
  std::vector<uint16_t> input(n);
  for (int64_t i = 0; i < n; ++i)
    input[i] = floatToBf16(std::sin(float(i) * 0.37f) * float(i % 97));
  auto run = [&](int threads) {
    setNumThreads(threads);
    std::vector<uint8_t> packed(n / 2);
    std::vector<float> absmax(n / 64);
    nf4::quantize(input.data(), ElementType::BF16, n, 64, packed.data(),
                  absmax.data());
    return std::make_pair(packed, absmax);
  };
  auto single = run(1);
  auto many = run(4);
  setNumThreads(0);
  EXPECT_EQ(single, many);
}

TEST(TorchMean, ExactForSmallIntegers) {
  std::vector<float> values(1000);
  for (int i = 0; i < 1000; ++i)
    values[i] = float(i % 7);
  // Every partial sum is an exact integer, so any order gives sum 2997.
  EXPECT_EQ(torchCudaMean(values.data(), 1000), 2997.0f * (1.0f / 1000.0f));
}

TEST(TorchMean, OrderDiffersFromASequentialSum) {
  // 1 + 2^-24 * k rounds differently by order: the replay must add the
  // small values together first in its tree, unlike a left-to-right loop.
  std::vector<float> values(256, 0x1p-24f);
  values[0] = 1.0f;
  float sequential = 0.0f;
  for (float value : values)
    sequential += value;
  EXPECT_EQ(sequential, 1.0f);
  EXPECT_GT(torchCudaMean(values.data(), 256) * 256.0f, 1.0f);
}

} // namespace
} // namespace qlora
