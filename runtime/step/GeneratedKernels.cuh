//===- GeneratedKernels.cuh - What kernels generated from the IR call -------===//
//
// The device side of the kernels convert-qlora-to-emitc generates for a cuda
// step (one per qlora.fused_elementwise): the grid-stride index, and loads
// that widen an element to f32 and stores that round it once, by element
// type. Included by CudaStep.h when nvcc compiles a step.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cuda_bf16.h>
#include <cstdint>

namespace qlora::gen {

__device__ __forceinline__ int64_t firstIndex() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t indexStride() {
  return int64_t(gridDim.x) * blockDim.x;
}

__device__ __forceinline__ float load(const uint16_t *bf16, int64_t i) {
  return __uint_as_float(uint32_t(__ldg(bf16 + i)) << 16);
}

__device__ __forceinline__ float load(const float *f32, int64_t i) {
  return __ldg(f32 + i);
}

/// A 0-d input, the same for every element.
template <typename T> __device__ __forceinline__ float loadScalar(const T *p) {
  return load(p, 0);
}

/// Rounds to nearest even, NaN kept.
__device__ __forceinline__ void store(uint16_t *bf16, int64_t i, float v) {
  bf16[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

__device__ __forceinline__ void store(float *f32, int64_t i, float v) {
  f32[i] = v;
}

} // namespace qlora::gen
