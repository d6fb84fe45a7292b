//===- RandomFill.cu - Random tensors made on the GPU ------------------------===//
#include "runtime/cuda/RandomFill.h"

#include "runtime/cuda/Bf16.cuh"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/GridStride.h"
#include "runtime/step/Dropout.h"

#include <algorithm>

namespace qlora::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ dropout::Philox4 draw(uint64_t seed,
                                                 uint64_t block) {
  return dropout::philox4x32(uint32_t(block), uint32_t(block >> 32), 0u, 0u,
                             uint32_t(seed), uint32_t(seed >> 32));
}

/// Each thread draws 16 bytes per Philox block.
__global__ void __launch_bounds__(kThreads)
    randomBytesKernel(uint8_t *__restrict__ out, int64_t bytes,
                      uint64_t seed) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t block = int64_t(blockIdx.x) * kThreads + threadIdx.x;
       16 * block < bytes; block += stride) {
    dropout::Philox4 bits = draw(seed, uint64_t(block));
    for (int64_t i = 16 * block; i < min(bytes, 16 * block + 16); ++i)
      out[i] = uint8_t(bits.x[(i % 16) / 4] >> (8 * (i % 4)));
  }
}

__global__ void __launch_bounds__(kThreads)
    uniformKernel(float *__restrict__ f32, uint16_t *__restrict__ bf16,
                  int64_t n, float lo, float hi, uint64_t seed) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t block = int64_t(blockIdx.x) * kThreads + threadIdx.x;
       4 * block < n; block += stride) {
    dropout::Philox4 bits = draw(seed, uint64_t(block));
    for (int64_t i = 4 * block; i < min(n, 4 * block + 4); ++i) {
      float u = float(bits.x[i % 4] >> 8) * (1.0f / 16777216.0f);
      float value = lo + (hi - lo) * u;
      if (f32)
        f32[i] = value;
      if (bf16)
        bf16[i] = detail::floatToBf16(value);
    }
  }
}

unsigned blocksFor(int64_t items) {
  return detail::gridStrideBlocks(items, kThreads);
}

} // namespace

Status fillRandomBytes(uint8_t *out, int64_t bytes, uint64_t seed,
                       cudaStream_t stream) {
  if (bytes <= 0)
    return Status::ok();
  randomBytesKernel<<<blocksFor((bytes + 15) / 16), kThreads, 0, stream>>>(
      out, bytes, seed);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status fillUniform(float *f32, uint16_t *bf16, int64_t n, float lo, float hi,
                   uint64_t seed, cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  uniformKernel<<<blocksFor((n + 3) / 4), kThreads, 0, stream>>>(
      f32, bf16, n, lo, hi, seed);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace qlora::cuda
