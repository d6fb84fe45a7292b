//===- NF4Tables.cu - The tables NF4 kernels decode with ---------------------===//
#include "runtime/cuda/NF4Device.cuh"

#include "runtime/DoubleQuant.h"
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
    return t;
  }();
  return tables;
}

} // namespace detail

bool haveCudaDevice() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

} // namespace qlora::cuda
