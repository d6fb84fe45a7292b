//===- DeviceBuffer.h - Owned device memory for tools and tests -------------===//
#pragma once

#include "runtime/cuda/CudaStatus.h"

#include <cstddef>
#include <utility>
#include <vector>

namespace qlora::cuda {

/// A cudaMalloc'ed array of T, freed on destruction.
template <typename T> class DeviceBuffer {
public:
  DeviceBuffer() = default;
  static Expected<DeviceBuffer> allocate(size_t count) {
    DeviceBuffer buffer;
    buffer.count_ = count;
    if (count > 0)
      QLORA_CUDA_RETURN_IF_ERROR(
          cudaMalloc(reinterpret_cast<void **>(&buffer.data_), count * sizeof(T)));
    return buffer;
  }
  static Expected<DeviceBuffer> upload(const std::vector<T> &values) {
    Expected<DeviceBuffer> buffer = allocate(values.size());
    if (!buffer)
      return buffer;
    if (!values.empty())
      QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpy(buffer->data_, values.data(),
                                            values.size() * sizeof(T),
                                            cudaMemcpyHostToDevice));
    return buffer;
  }
  Expected<std::vector<T>> download() const {
    std::vector<T> values(count_);
    if (count_ > 0)
      QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpy(values.data(), data_,
                                            count_ * sizeof(T),
                                            cudaMemcpyDeviceToHost));
    return values;
  }
  /// Fills every byte with `byte` (0xff poisons bf16 and fp32 with NaN).
  Status poison(int byte = 0xff) {
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemset(data_, byte, count_ * sizeof(T)));
    return Status::ok();
  }

  DeviceBuffer(DeviceBuffer &&other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        count_(std::exchange(other.count_, 0)) {}
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept {
    std::swap(data_, other.data_);
    std::swap(count_, other.count_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  ~DeviceBuffer() {
    if (data_)
      cudaFree(data_);
  }

  T *data() const { return data_; }
  size_t size() const { return count_; }

private:
  T *data_ = nullptr;
  size_t count_ = 0;
};

} // namespace qlora::cuda
