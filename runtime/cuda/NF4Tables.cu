//===- NF4Tables.cu - The tables NF4 kernels decode with ---------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Device.cuh"

#include "runtime/DoubleQuant.h"
#include "runtime/Float16.h"
#include "runtime/NF4.h"

#include <algorithm>

namespace qlora::cuda {
namespace detail {

const NF4Tables &hostTables() {
  static const NF4Tables tables = [] {
    NF4Tables t;
    std::copy(std::begin(nf4::kCode), std::end(nf4::kCode), t.code);
    std::copy(std::begin(dq::kDynamicMap), std::end(dq::kDynamicMap),
              t.dynamicMap);
    for (uint32_t byte = 0; byte < 256; ++byte)
      t.codePairs[byte] = uint32_t(floatToBf16(nf4::kCode[byte >> 4])) |
                          uint32_t(floatToBf16(nf4::kCode[byte & 0xf])) << 16;
    return t;
  }();
  return tables;
}

Expected<NF4DeviceWeight> prepare(const NF4DeviceWeight &weight) {
  auto shiftOf = [](int64_t size) {
    int shift = 0;
    while ((int64_t(1) << shift) < size)
      ++shift;
    return (int64_t(1) << shift) == size ? shift : -1;
  };
  NF4DeviceWeight prepared = weight;
  prepared.blockShift = shiftOf(weight.blockSize);
  prepared.dqBlockShift = shiftOf(weight.dqBlockSize);
  if (prepared.blockShift < 3 ||
      (weight.absmaxCodes && prepared.dqBlockShift < 0))
    return makeError("NF4 block sizes must be powers of two (>= 8), got {} "
                     "and {}",
                     weight.blockSize, weight.dqBlockSize);
  return prepared;
}

} // namespace detail

bool haveCudaDevice() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

Expected<int> currentMultiprocessors() {
  int device = 0, multiprocessors = 0;
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  QLORA_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(
      &multiprocessors, cudaDevAttrMultiProcessorCount, device));
  return multiprocessors;
}

} // namespace qlora::cuda
