//===- OracleFiles.h - Access to ../shared/oracle from GoogleTests ----------===//
//
// Ground truth from the reference stack lives beside the checkout
// (QLORA_ORACLE_DIR, or the environment variable of that name on a GPU host
// where a copy travelled with the tree). Tests that need it skip cleanly
// where it is missing.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Safetensors.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace qlora::testing {

inline std::string oraclePath(const std::string &relative) {
  const char *dir = std::getenv("QLORA_ORACLE_DIR");
  return std::string(dir && *dir ? dir : QLORA_ORACLE_DIR) + "/" + relative;
}

inline bool oracleExists(const std::string &relative) {
  struct stat info;
  return ::stat(oraclePath(relative).c_str(), &info) == 0;
}

#define QLORA_REQUIRE_ORACLE(relative)                                         \
  do {                                                                         \
    if (!::qlora::testing::oracleExists(relative))                             \
      GTEST_SKIP() << "oracle data not found: "                                \
                   << ::qlora::testing::oraclePath(relative);                  \
  } while (false)

/// Copies a tensor's bytes into a vector of T; fails the test if missing.
template <typename T>
std::vector<T> tensorValues(const SafetensorsFile &file,
                            const std::string &name) {
  const TensorInfo *info = file.find(name);
  EXPECT_NE(info, nullptr) << "missing oracle tensor " << name;
  if (!info)
    return {};
  ByteSpan bytes = file.data(*info);
  std::vector<T> values(bytes.size / sizeof(T));
  std::memcpy(values.data(), bytes.data, values.size() * sizeof(T));
  return values;
}

} // namespace qlora::testing
