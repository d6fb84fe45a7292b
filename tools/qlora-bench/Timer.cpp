//===- Timer.cpp - CUDA-event timings for `qlora-bench kernels` -------------===//
#include "Timer.h"

#include "runtime/cuda/CudaStatus.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace qlora::bench {
namespace {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

/// Destroys a graph (and its executable) when it goes out of scope.
struct GraphGuard {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~GraphGuard() {
    if (exec)
      cudaGraphExecDestroy(exec);
    if (graph)
      cudaGraphDestroy(graph);
  }
};

} // namespace

Expected<Timer> Timer::create(L2Flush::Mode mode) {
  Expected<L2Flush> flush = L2Flush::create(mode);
  if (!flush)
    return flush.error();
  int device = 0, l2Bytes = 0;
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  QLORA_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&l2Bytes, cudaDevAttrL2CacheSize, device));
  cudaStream_t stream;
  QLORA_CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t start, stop;
  QLORA_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  QLORA_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  return Timer(flush.take(), stream, start, stop, l2Bytes);
}

Timer::Timer(Timer &&other) noexcept
    : flush_(std::move(other.flush_)),
      stream_(std::exchange(other.stream_, nullptr)),
      start_(std::exchange(other.start_, nullptr)),
      stop_(std::exchange(other.stop_, nullptr)), l2Bytes_(other.l2Bytes_) {}

Timer::~Timer() {
  if (start_)
    cudaEventDestroy(start_);
  if (stop_)
    cudaEventDestroy(stop_);
  if (stream_)
    cudaStreamDestroy(stream_);
}

Expected<double>
Timer::timeOnce(const std::function<Status()> &enqueue) const {
  QLORA_CUDA_RETURN_IF_ERROR(cudaEventRecord(start_, stream_));
  QLORA_RETURN_IF_ERROR(enqueue());
  QLORA_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop_, stream_));
  QLORA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop_));
  float ms = 0.0f;
  QLORA_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start_, stop_));
  return double(ms);
}

Expected<double>
Timer::afterFlush(int repeats, const std::function<Status()> &body) const {
  for (int i = 0; i < 3; ++i)
    QLORA_RETURN_IF_ERROR(body());
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    QLORA_RETURN_IF_ERROR(flush_.run(stream_));
    Expected<double> ms = timeOnce(body);
    if (!ms)
      return ms.error();
    times.push_back(*ms);
  }
  return median(times);
}

Expected<double>
Timer::backToBack(int repeats, int runs,
                  const std::function<Status(int)> &body) const {
  // Outside the capture first: cuBLAS picks its kernels and workspace, and
  // kernels load, on a first call.
  for (int i = 0; i < runs; ++i)
    QLORA_RETURN_IF_ERROR(body(i));
  QLORA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  GraphGuard guard;
  QLORA_CUDA_RETURN_IF_ERROR(
      cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  Status captured = Status::ok();
  for (int i = 0; i < runs && captured; ++i)
    captured = body(i);
  cudaError_t ended = cudaStreamEndCapture(stream_, &guard.graph);
  QLORA_RETURN_IF_ERROR(captured);
  QLORA_CUDA_RETURN_IF_ERROR(ended);
  QLORA_CUDA_RETURN_IF_ERROR(
      cudaGraphInstantiate(&guard.exec, guard.graph, 0));
  auto replay = [&]() -> Status {
    QLORA_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(guard.exec, stream_));
    return Status::ok();
  };
  QLORA_RETURN_IF_ERROR(replay());
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    Expected<double> ms = timeOnce(replay);
    if (!ms)
      return ms.error();
    times.push_back(*ms / runs);
  }
  return median(times);
}

int Timer::copiesToExceedL2(double bytes) const {
  return std::max(2, int(std::ceil(2.0 * double(l2Bytes_) / bytes)) + 1);
}

} // namespace qlora::bench
