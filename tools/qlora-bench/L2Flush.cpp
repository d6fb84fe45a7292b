//===- L2Flush.cpp - Emptying the GPU's L2 cache before a timed run ---------===//
#include "L2Flush.h"

#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/TrainingKernels.h"

namespace qlora::bench {
namespace {

/// Five times the largest L2 of the GPUs in use, so that none of the
/// previous run's lines survive the flush.
constexpr size_t kFlushBytes = size_t(256) << 20;
constexpr size_t kFlushFloats = kFlushBytes / sizeof(float);

} // namespace

Expected<L2Flush::Mode> L2Flush::parseMode(const std::string &text) {
  if (text == "dirty")
    return Mode::Dirty;
  if (text == "clean")
    return Mode::Clean;
  return makeError("unknown L2 flush '{}' (known: clean, dirty)", text);
}

const char *L2Flush::name(Mode mode) {
  return mode == Mode::Dirty ? "dirty" : "clean";
}

Expected<L2Flush> L2Flush::create(Mode mode) {
  Expected<cuda::DeviceBuffer<float>> buffer =
      cuda::DeviceBuffer<float>::allocate(kFlushFloats);
  if (!buffer)
    return buffer.error();
  Expected<cuda::DeviceBuffer<double>> partials =
      cuda::DeviceBuffer<double>::allocate(cuda::kSumOfSquaresPartials);
  Expected<cuda::DeviceBuffer<float>> sum =
      cuda::DeviceBuffer<float>::allocate(1);
  if (!partials || !sum)
    return partials ? sum.error() : partials.error();
  // Zeros: the clean flush's sum stays finite.
  QLORA_CUDA_RETURN_IF_ERROR(cudaMemset(buffer->data(), 0, kFlushBytes));
  QLORA_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return L2Flush(mode, buffer.take(), partials.take(), sum.take());
}

Status L2Flush::run(cudaStream_t stream) const {
  if (mode_ == Mode::Dirty) {
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(buffer_.data(), 0, kFlushBytes, stream));
    return Status::ok();
  }
  return cuda::sumOfSquares(buffer_.data(), int64_t(kFlushFloats),
                            partials_.data(), sum_.data(), stream);
}

} // namespace qlora::bench
