//===- LossKernels.cuh - What the cross-entropy kernels share ---------------===//
//
// Private to runtime/cuda: the online log-sum-exp the loss kernels reduce a
// row with (one value, four values or another partial at a time), and the
// mean of the row losses.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cmath>
#include <cstdint>

namespace qlora::cuda::detail {

/// Adds x to a running (max m, sum s of exp(. - m)). -inf terms add nothing
/// (and must not form -inf - -inf); NaN propagates into s.
__device__ __forceinline__ void onlineAdd(float x, float &m, float &s) {
  if (x > m) {
    s = s * expf(m - x) + 1.0f;
    m = x;
  } else if (x != -INFINITY) {
    s += expf(x - m);
  }
}

/// The same for 4 values: one rescale per vector instead of per element.
__device__ __forceinline__ void onlineAdd4(float4 v, float &m, float &s) {
  float top = fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w));
  if (top > m) {
    s *= expf(m - top);
    m = top;
  }
  if (m != -INFINITY)
    s += (expf(v.x - m) + expf(v.y - m)) + (expf(v.z - m) + expf(v.w - m));
  else if (v.x != v.x || v.y != v.y || v.z != v.z || v.w != v.w)
    s = NAN; // fmaxf dropped a NaN of an otherwise -inf vector
}

/// Merges (m2, s2) into (m, s).
__device__ __forceinline__ void combine(float &m, float &s, float m2,
                                        float s2) {
  float top = fmaxf(m, m2);
  if (top == -INFINITY) {
    s = s + s2;
    return;
  }
  s = s * expf(m - top) + s2 * expf(m2 - top);
  m = top;
}

/// Threads of meanLossKernel.
constexpr int kMeanLossThreads = 1024;

/// *loss = the sum of `rows` row losses over *count, summed in a fixed
/// tree (the same on every run), 0 when nothing counts (torch's mean over
/// nothing is NaN; a batch with no target tokens contributes nothing
/// instead, as on the cpu). One block of kMeanLossThreads.
__global__ void __launch_bounds__(kMeanLossThreads)
    meanLossKernel(const float *__restrict__ rowLoss, int64_t rows,
                   const int32_t *__restrict__ count,
                   float *__restrict__ loss) {
  __shared__ double partial[kMeanLossThreads];
  double sum = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += kMeanLossThreads)
    sum += double(rowLoss[r]);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kMeanLossThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width)
      partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    int counted = *count;
    *loss = counted > 0 ? float(partial[0] / double(counted)) : 0.0f;
  }
}

} // namespace qlora::cuda::detail
