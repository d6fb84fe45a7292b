//===- Rope.cu - Llama rotary position embedding on the GPU -----------------===//
//
// HF LlamaRotaryEmbedding ("default" type) with rotate_half, as
// runtime/cpu/Rope.cpp computes it: pairs (i, i + headDim/2) of each head
// rotate by pos * inv_freq[i]. inv_freq is computed on the host with the same
// expression as the CPU (so it is the same float), the angle is the same fp32
// product, and cos/sin come from sincosf (within 2 ulp of the CPU's libm).
// The rotation uses explicitly rounded products and sums, never FMA, as the
// CPU reference does.
//
// A thread takes one chunk of V consecutive pair indices of one position and
// rotates it in up to kHeadsPerThread heads: the V sincosf are shared by those
// heads. V is 8 (16-byte loads of both halves) when headDim / 2 is a multiple
// of 8 and the tensors are 16-byte aligned, else 1.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/Bf16.cuh"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/GridStride.h"
#include "runtime/cuda/TrainingKernels.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace qlora::cuda {
namespace {

using detail::bf16ToFloat;
using detail::floatToBf16;

constexpr int kThreads = 256;
constexpr int kHeadsPerThread = 4;
constexpr int kMaxHalf = int(kMaxRopeHeadDim / 2);

/// inv_freq by value: 1 KiB of kernel arguments, copied to shared memory.
struct InvFreq {
  float values[kMaxHalf];
};

template <int V>
__device__ __forceinline__ void load(const uint16_t *p, float *out) {
  if constexpr (V == 8) {
    uint4 v = *reinterpret_cast<const uint4 *>(p);
    uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      out[2 * k] = __uint_as_float(words[k] << 16);
      out[2 * k + 1] = __uint_as_float(words[k] & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k)
      out[k] = bf16ToFloat(p[k]);
  }
}

template <int V>
__device__ __forceinline__ void store(uint16_t *p, const float *in) {
  if constexpr (V == 8) {
    uint32_t words[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      __nv_bfloat162 pair = __floats2bfloat162_rn(in[2 * k], in[2 * k + 1]);
      words[k] = *reinterpret_cast<const uint32_t *>(&pair);
    }
    *reinterpret_cast<uint4 *>(p) = make_uint4(words[0], words[1], words[2],
                                               words[3]);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k)
      p[k] = floatToBf16(in[k]);
  }
}

/// in and out are not __restrict__: out may alias in. Each (row, head,
/// chunk) is read and written by one thread only, reads first.
template <int V, bool kInverse>
__global__ void __launch_bounds__(kThreads)
    ropeKernel(const uint16_t *in, int64_t rows, int64_t seq, int heads,
               int headDim, const __grid_constant__ InvFreq invFreq,
               uint16_t *out) {
  __shared__ float freq[kMaxHalf];
  const int half = headDim / 2;
  for (int i = threadIdx.x; i < half; i += blockDim.x)
    freq[i] = invFreq.values[i];
  __syncthreads();

  const int64_t chunks = half / V;
  const int64_t groups = (heads + kHeadsPerThread - 1) / kHeadsPerThread;
  const int64_t total = rows * groups * chunks;
  const int64_t width = int64_t(heads) * headDim;
  for (int64_t item = int64_t(blockIdx.x) * kThreads + threadIdx.x;
       item < total; item += int64_t(gridDim.x) * kThreads) {
    // Chunks vary fastest: neighbouring threads touch neighbouring bytes.
    const int64_t chunk = item % chunks;
    const int64_t rest = item / chunks;
    const int group = int(rest % groups);
    const int64_t row = rest / groups;
    const float pos = float(row % seq);

    float c[V], s[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      // cpu::rope: angle = float(pos) * inv_freq[i], then cos and sin.
      float angle = __fmul_rn(pos, freq[chunk * V + k]);
      sincosf(angle, &s[k], &c[k]);
    }
    const int firstHead = group * kHeadsPerThread;
    const int lastHead = min(heads, firstHead + kHeadsPerThread);
    for (int h = firstHead; h < lastHead; ++h) {
      const int64_t offset = row * width + int64_t(h) * headDim + chunk * V;
      float x1[V], x2[V], y1[V], y2[V];
      load<V>(in + offset, x1);
      load<V>(in + offset + half, x2);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        if constexpr (!kInverse) {
          // y = x * cos + cat(-x2, x1) * sin
          y1[k] = __fsub_rn(__fmul_rn(x1[k], c[k]), __fmul_rn(x2[k], s[k]));
          y2[k] = __fadd_rn(__fmul_rn(x2[k], c[k]), __fmul_rn(x1[k], s[k]));
        } else {
          // dx = dy * cos + cat(dy2, -dy1) * sin
          y1[k] = __fadd_rn(__fmul_rn(x1[k], c[k]), __fmul_rn(x2[k], s[k]));
          y2[k] = __fsub_rn(__fmul_rn(x2[k], c[k]), __fmul_rn(x1[k], s[k]));
        }
      }
      store<V>(out + offset, y1);
      store<V>(out + offset + half, y2);
    }
  }
}

template <int V>
void launch(bool inverse, const uint16_t *in, int64_t rows, int64_t seq,
            int heads, int headDim, const InvFreq &invFreq, uint16_t *out,
            cudaStream_t stream) {
  int64_t groups = (heads + kHeadsPerThread - 1) / kHeadsPerThread;
  int64_t total = rows * groups * (headDim / 2 / V);
  unsigned blocks = detail::gridStrideBlocks(total, kThreads);
  if (inverse)
    ropeKernel<V, true><<<blocks, kThreads, 0, stream>>>(
        in, rows, seq, heads, headDim, invFreq, out);
  else
    ropeKernel<V, false><<<blocks, kThreads, 0, stream>>>(
        in, rows, seq, heads, headDim, invFreq, out);
}

Status rotate(const char *name, bool inverse, const uint16_t *in,
              int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
              float theta, const RopeScaling &scaling, uint16_t *out,
              cudaStream_t stream) {
  if (headDim <= 0 || headDim % 2 != 0 || headDim > kMaxRopeHeadDim)
    return makeError("{}: expects an even headDim of at most {}, got {}", name,
                     kMaxRopeHeadDim, headDim);
  if (batch <= 0 || seq <= 0 || heads <= 0)
    return Status::ok();
  const int64_t half = headDim / 2;
  // cpu::rope's frequencies, so that the GPU rotates by the same fp32
  // angles.
  InvFreq invFreq{};
  std::vector<float> frequencies =
      ropeInverseFrequencies(headDim, theta, scaling);
  for (int64_t i = 0; i < half; ++i)
    invFreq.values[i] = frequencies[size_t(i)];
  const bool aligned = ((reinterpret_cast<uintptr_t>(in) |
                         reinterpret_cast<uintptr_t>(out)) & 15u) == 0;
  if (half % 8 == 0 && aligned)
    launch<8>(inverse, in, batch * seq, seq, int(heads), int(headDim), invFreq,
              out, stream);
  else
    launch<1>(inverse, in, batch * seq, seq, int(heads), int(headDim), invFreq,
              out, stream);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace

Status ropeForward(const uint16_t *x, int64_t batch, int64_t seq,
                   int64_t heads, int64_t headDim, float theta, uint16_t *y,
                   cudaStream_t stream, const RopeScaling &scaling) {
  return rotate("ropeForward", /*inverse=*/false, x, batch, seq, heads,
                headDim, theta, scaling, y, stream);
}

Status ropeBackward(const uint16_t *dy, int64_t batch, int64_t seq,
                    int64_t heads, int64_t headDim, float theta, uint16_t *dx,
                    cudaStream_t stream, const RopeScaling &scaling) {
  return rotate("ropeBackward", /*inverse=*/true, dy, batch, seq, heads,
                headDim, theta, scaling, dx, stream);
}

} // namespace qlora::cuda
