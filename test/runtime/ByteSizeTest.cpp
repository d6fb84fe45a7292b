//===- ByteSizeTest.cpp - Sizes as --max_memory takes them ------------------===//
#include "runtime/ByteSize.h"

#include <gtest/gtest.h>

namespace qlora {
namespace {

int64_t bytesOf(const std::string &text) {
  Expected<ByteSize> size = parseByteSize(text);
  EXPECT_TRUE(size) << text << ": " << size.message();
  return size ? size->bytes : -1;
}

TEST(ByteSize, ReadsDecimalAndBinaryUnitsAsAccelerateDoes) {
  EXPECT_EQ(bytesOf("4096"), 4096);
  EXPECT_EQ(bytesOf("0"), 0);
  EXPECT_EQ(bytesOf("48GB"), 48'000'000'000);
  EXPECT_EQ(bytesOf("48GiB"), 48LL << 30);
  EXPECT_EQ(bytesOf("6.1GiB"), int64_t(6.1 * (1 << 30) + 0.5));
  EXPECT_EQ(bytesOf("512 MiB"), 512LL << 20);
  EXPECT_EQ(bytesOf("2kb"), 2000);
  EXPECT_EQ(bytesOf("1TiB"), 1LL << 40);
}

TEST(ByteSize, RefusesWhatIsNotASize) {
  for (const char *bad : {"", "GB", "-1GB", "6.1 gigs", "1e30", "nan", "12XB"})
    EXPECT_FALSE(parseByteSize(bad)) << bad;
  Expected<ByteSize> unit = parseByteSize("3 parsecs");
  ASSERT_FALSE(unit);
  EXPECT_NE(unit.message().find("GiB"), std::string::npos) << unit.message();
}

TEST(ByteSize, FormatsForMessages) {
  EXPECT_EQ(formatByteSize(100), "100 B");
  EXPECT_EQ(formatByteSize(3LL << 29), "1.50 GiB");
  EXPECT_EQ(formatByteSize(512LL << 20), "512.00 MiB");
}

} // namespace
} // namespace qlora
