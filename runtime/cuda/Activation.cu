//===- Activation.cu - SwiGLU forward and backward on the GPU ---------------===//
//
// LlamaMLP's silu(gate) * up, elementwise and memory-bound: a thread moves
// 16-byte vectors (8 bf16) of every operand when all pointers are 16-byte
// aligned, and the n % 8 elements after the last vector (or every element,
// when the pointers are not aligned) one by one. The formulas are
// runtime/cpu/Activation.cpp's in fp32: silu(g) = g / (1 + exp(-g)),
// silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g); expf is the accurate one
// (no fast math).
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/Bf16.cuh"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/GridStride.h"
#include "runtime/cuda/TrainingKernels.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

namespace qlora::cuda {
namespace {

using detail::bf16ToFloat;
using detail::floatToBf16;
using detail::pack8;
using detail::unpack8;

constexpr int kThreads = 256;

__device__ __forceinline__ float swiglu(float g, float u) {
  return g / (1.0f + expf(-g)) * u;
}

__device__ __forceinline__ void swigluGrad(float g, float u, float d,
                                           float &dgate, float &dup) {
  float sigmoid = 1.0f / (1.0f + expf(-g));
  // mul backward gives d * up to silu, silu_backward multiplies by s'.
  dgate = d * u * sigmoid * (1.0f + g * (1.0f - sigmoid));
  dup = d * (g / (1.0f + expf(-g)));
}

/// No __restrict__: an output may alias an input. Every element is read and
/// written by one thread, reads first.
__global__ void __launch_bounds__(kThreads)
    swigluForwardKernel(const uint16_t *gate, const uint16_t *up, int64_t n,
                        int64_t vectors, uint16_t *out) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  const int64_t first = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (int64_t k = first; k < vectors; k += stride) {
    float g[8], u[8], o[8];
    unpack8(reinterpret_cast<const uint4 *>(gate)[k], g);
    unpack8(reinterpret_cast<const uint4 *>(up)[k], u);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      o[j] = swiglu(g[j], u[j]);
    reinterpret_cast<uint4 *>(out)[k] = pack8(o);
  }
  for (int64_t i = vectors * 8 + first; i < n; i += stride)
    out[i] = floatToBf16(swiglu(bf16ToFloat(gate[i]), bf16ToFloat(up[i])));
}

__global__ void __launch_bounds__(kThreads)
    swigluBackwardKernel(const uint16_t *gate, const uint16_t *up,
                         const uint16_t *dout, int64_t n, int64_t vectors,
                         uint16_t *dgate, uint16_t *dup) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  const int64_t first = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (int64_t k = first; k < vectors; k += stride) {
    float g[8], u[8], d[8], dg[8], du[8];
    unpack8(reinterpret_cast<const uint4 *>(gate)[k], g);
    unpack8(reinterpret_cast<const uint4 *>(up)[k], u);
    unpack8(reinterpret_cast<const uint4 *>(dout)[k], d);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      swigluGrad(g[j], u[j], d[j], dg[j], du[j]);
    reinterpret_cast<uint4 *>(dgate)[k] = pack8(dg);
    reinterpret_cast<uint4 *>(dup)[k] = pack8(du);
  }
  for (int64_t i = vectors * 8 + first; i < n; i += stride) {
    float dg, du;
    swigluGrad(bf16ToFloat(gate[i]), bf16ToFloat(up[i]), bf16ToFloat(dout[i]),
               dg, du);
    dgate[i] = floatToBf16(dg);
    dup[i] = floatToBf16(du);
  }
}

/// The number of 8-element vectors to process as such: n / 8 when every
/// pointer is 16-byte aligned, else 0 (all scalar).
int64_t vectorCount(int64_t n, std::initializer_list<const void *> pointers) {
  return detail::aligned16(pointers) ? n / 8 : 0;
}

/// Enough blocks to give every thread one vector (or one element), capped:
/// the kernels stride over the rest.
unsigned blocksFor(int64_t n, int64_t vectors) {
  return detail::gridStrideBlocks(vectors > 0 ? vectors : n, kThreads);
}

} // namespace

Status swigluForward(const uint16_t *gate, const uint16_t *up, int64_t n,
                     uint16_t *out, cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  int64_t vectors = vectorCount(n, {gate, up, out});
  swigluForwardKernel<<<blocksFor(n, vectors), kThreads, 0, stream>>>(
      gate, up, n, vectors, out);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status swigluBackward(const uint16_t *gate, const uint16_t *up,
                      const uint16_t *dout, int64_t n, uint16_t *dgate,
                      uint16_t *dup, cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  int64_t vectors = vectorCount(n, {gate, up, dout, dgate, dup});
  swigluBackwardKernel<<<blocksFor(n, vectors), kThreads, 0, stream>>>(
      gate, up, dout, n, vectors, dgate, dup);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace qlora::cuda
