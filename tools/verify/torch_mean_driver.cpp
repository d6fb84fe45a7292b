//===- torch_mean_driver.cpp - Replays torch's CUDA mean on arrays from a file ===//
//
// Input (little-endian): u64 count, then per array u64 n and n fp32 values.
// Output: one line per array with the fp32 bits of qlora::torchCudaMean, in
// hex. torch_mean_check.py feeds it and compares with torch on a GPU.
//
//===----------------------------------------------------------------------===//
#include "runtime/TorchMean.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s ARRAYS.bin\n", argv[0]);
    return 2;
  }
  std::FILE *file = std::fopen(argv[1], "rb");
  if (!file) {
    std::perror(argv[1]);
    return 1;
  }
  uint64_t count = 0;
  if (std::fread(&count, 8, 1, file) != 1)
    return 1;
  std::vector<float> values;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t n = 0;
    if (std::fread(&n, 8, 1, file) != 1)
      return 1;
    values.resize(n);
    if (std::fread(values.data(), 4, n, file) != n)
      return 1;
    float mean = qlora::torchCudaMean(values.data(), int64_t(n));
    uint32_t bits;
    std::memcpy(&bits, &mean, 4);
    std::printf("%08x\n", bits);
  }
  std::fclose(file);
  return 0;
}
