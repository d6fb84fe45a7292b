//===- Optimizer.cu - AdamW, the gradient norm and its scaling on the GPU ---===//
//
// torch.optim.AdamW on fp32 master weights, element by element in
// runtime/cpu/Optimizer.cpp's fp32 operation order with explicitly rounded
// intrinsics (no FMA contraction), so the GPU's update is the CPU's bit for
// bit. The sum of squares for global-norm clipping accumulates in fp64 over
// an assignment of elements to threads and a reduction tree that depend only
// on n. Memory-bound: float4 vectors where the pointers are 16-byte aligned.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/Bf16.cuh"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/GridStride.h"
#include "runtime/cuda/TrainingKernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>

namespace qlora::cuda {
namespace {

constexpr int kThreads = 256;

/// The per-step scalars, formed on the host as cpu::adamw forms them.
struct AdamWCoefficients {
  float decay, lerpWeight, oneMinusLerpWeight, beta2, oneMinusBeta2,
      negStepSize, biasCorrection2Sqrt, eps;
};

__device__ __forceinline__ void adamwElement(float &p, float g, float &m,
                                             float &v,
                                             const AdamWCoefficients &c) {
  // param.mul_(1 - lr * wd)
  float decayed = __fmul_rn(p, c.decay);
  // exp_avg.lerp_(grad, 1 - beta1), torch's two-sided lerp.
  float mi = c.lerpWeight < 0.5f
                 ? __fadd_rn(m, __fmul_rn(c.lerpWeight, __fsub_rn(g, m)))
                 : __fsub_rn(g, __fmul_rn(__fsub_rn(g, m), c.oneMinusLerpWeight));
  // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
  float vi = __fadd_rn(__fmul_rn(v, c.beta2),
                       __fmul_rn(__fmul_rn(c.oneMinusBeta2, g), g));
  // denom = sqrt(v) / sqrt(bc2) + eps; param.addcdiv_(m, denom, -step)
  float denom =
      __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), c.biasCorrection2Sqrt), c.eps);
  p = __fadd_rn(decayed, __fmul_rn(c.negStepSize, __fdiv_rn(mi, denom)));
  m = mi;
  v = vi;
}

__global__ void __launch_bounds__(kThreads)
    adamwKernel(float *__restrict__ param, const float *__restrict__ grad,
                float *__restrict__ m, float *__restrict__ v, int64_t n,
                int64_t vectors, AdamWCoefficients c) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  const int64_t first = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (int64_t k = first; k < vectors; k += stride) {
    float4 p = reinterpret_cast<float4 *>(param)[k];
    float4 g = __ldg(reinterpret_cast<const float4 *>(grad) + k);
    float4 mk = reinterpret_cast<float4 *>(m)[k];
    float4 vk = reinterpret_cast<float4 *>(v)[k];
    adamwElement(p.x, g.x, mk.x, vk.x, c);
    adamwElement(p.y, g.y, mk.y, vk.y, c);
    adamwElement(p.z, g.z, mk.z, vk.z, c);
    adamwElement(p.w, g.w, mk.w, vk.w, c);
    reinterpret_cast<float4 *>(param)[k] = p;
    reinterpret_cast<float4 *>(m)[k] = mk;
    reinterpret_cast<float4 *>(v)[k] = vk;
  }
  for (int64_t i = vectors * 4 + first; i < n; i += stride) {
    float p = param[i], mi = m[i], vi = v[i];
    adamwElement(p, __ldg(grad + i), mi, vi, c);
    param[i] = p;
    m[i] = mi;
    v[i] = vi;
  }
}

/// cpu::adamw's scalars from the learning rate and step: Python doubles in
/// torch, rounded to fp32 where they meet the fp32 tensors. Shared by the
/// host (adamw) and the device (adamwOnDevice).
__host__ __device__ inline AdamWCoefficients
adamwCoefficients(float lr, float beta1, float beta2, float eps,
                  float weightDecay, double step) {
  double t = step < 1.0 ? 1.0 : step;
  double biasCorrection1 = 1.0 - pow(double(beta1), t);
  double biasCorrection2 = 1.0 - pow(double(beta2), t);
  AdamWCoefficients c;
  c.decay = float(1.0 - double(lr) * double(weightDecay));
  c.lerpWeight = float(1.0 - double(beta1));
  c.oneMinusLerpWeight = 1.0f - c.lerpWeight; // fp32, as the CPU rounds it
  c.beta2 = beta2;
  c.oneMinusBeta2 = float(1.0 - double(beta2));
  c.negStepSize = float(-(double(lr) / biasCorrection1));
  c.biasCorrection2Sqrt = float(sqrt(biasCorrection2));
  c.eps = eps;
  return c;
}

/// adamwKernel with the coefficients formed on the device from *lr and
/// *step (each block forms them once), and the bf16 copy written.
__global__ void __launch_bounds__(kThreads)
    adamwDeviceKernel(float *__restrict__ param, const float *__restrict__ grad,
                      float *__restrict__ m, float *__restrict__ v, int64_t n,
                      const float *__restrict__ lr,
                      const float *__restrict__ step, float beta1, float beta2,
                      float eps, float weightDecay,
                      uint16_t *__restrict__ compute) {
  __shared__ AdamWCoefficients shared;
  if (threadIdx.x == 0)
    shared = adamwCoefficients(*lr, beta1, beta2, eps, weightDecay,
                               double(rint(*step)));
  __syncthreads();
  const AdamWCoefficients c = shared;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += stride) {
    float p = param[i], mi = m[i], vi = v[i];
    adamwElement(p, __ldg(grad + i), mi, vi, c);
    param[i] = p;
    m[i] = mi;
    v[i] = vi;
    if (compute)
      compute[i] = detail::floatToBf16(p);
  }
}

__global__ void clipCoefficientKernel(const float *__restrict__ total,
                                      float maxNorm, float *__restrict__ out) {
  float norm = sqrtf(*total);
  *out = fminf(1.0f, maxNorm / (norm + 1e-6f));
}

__global__ void __launch_bounds__(kThreads)
    countNonFiniteKernel(const float *__restrict__ x, int64_t n,
                         unsigned long long *__restrict__ counter) {
  unsigned long long local = 0;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += stride)
    local += !isfinite(__ldg(x + i));
  for (int offset = 16; offset > 0; offset /= 2)
    local += __shfl_xor_sync(0xffffffffu, local, offset);
  if (threadIdx.x % 32 == 0 && local > 0)
    atomicAdd(counter, local);
}

/// Groups of 4 elements per thread and pass, at least, before another block
/// of the sum of squares is used: small tensors take few blocks.
constexpr int64_t kMinGroupsPerThread = 4;

/// Thread tid of the grid adds the squares of groups tid, tid + T, ... (T
/// threads in the grid), each group's 4 elements in order, in fp64: the
/// order is the same whether a group is loaded as a float4 or one by one.
__global__ void __launch_bounds__(kThreads)
    sumOfSquaresPartialKernel(const float *__restrict__ x, int64_t n,
                              bool vectorize, double *__restrict__ partials) {
  __shared__ double shared[kThreads];
  const int64_t groups = (n + 3) / 4;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  double sum = 0.0;
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < groups;
       k += stride) {
    if (vectorize && 4 * k + 3 < n) {
      float4 v = __ldg(reinterpret_cast<const float4 *>(x) + k);
      sum += double(v.x) * double(v.x);
      sum += double(v.y) * double(v.y);
      sum += double(v.z) * double(v.z);
      sum += double(v.w) * double(v.w);
    } else {
      for (int64_t i = 4 * k; i < min(n, 4 * k + 4); ++i) {
        double value = double(__ldg(x + i));
        sum += value * value;
      }
    }
  }
  shared[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width)
      shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0)
    partials[blockIdx.x] = shared[0];
}

__global__ void __launch_bounds__(kSumOfSquaresPartials)
    sumOfSquaresFinalKernel(const double *__restrict__ partials, int blocks,
                            float *__restrict__ out) {
  __shared__ double shared[kSumOfSquaresPartials];
  shared[threadIdx.x] = int(threadIdx.x) < blocks ? partials[threadIdx.x] : 0.0;
  __syncthreads();
  for (int width = kSumOfSquaresPartials / 2; width > 0; width /= 2) {
    if (threadIdx.x < width)
      shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0)
    *out = float(shared[0]);
}

__global__ void __launch_bounds__(kThreads)
    scaleKernel(float *__restrict__ x, int64_t n, int64_t vectors,
                const float *__restrict__ factor) {
  const float s = __ldg(factor);
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  const int64_t first = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (int64_t k = first; k < vectors; k += stride) {
    float4 v = reinterpret_cast<float4 *>(x)[k];
    v.x *= s;
    v.y *= s;
    v.z *= s;
    v.w *= s;
    reinterpret_cast<float4 *>(x)[k] = v;
  }
  for (int64_t i = vectors * 4 + first; i < n; i += stride)
    x[i] *= s;
}

using detail::aligned16;

unsigned blocksFor(int64_t items) {
  return detail::gridStrideBlocks(items, kThreads);
}

} // namespace

Status adamw(float *param, const float *grad, float *m, float *v, int64_t n,
             float lr, float beta1, float beta2, float eps, float weightDecay,
             int64_t step, cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  AdamWCoefficients c = adamwCoefficients(lr, beta1, beta2, eps, weightDecay,
                                          double(step));
  int64_t vectors = aligned16({param, grad, m, v}) ? n / 4 : 0;
  adamwKernel<<<blocksFor(vectors > 0 ? vectors : n), kThreads, 0, stream>>>(
      param, grad, m, v, n, vectors, c);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status sumOfSquares(const float *x, int64_t n, double *partials, float *out,
                    cudaStream_t stream) {
  const int64_t groups = n > 0 ? (n + 3) / 4 : 0;
  const int64_t perBlock = int64_t(kThreads) * kMinGroupsPerThread;
  const int blocks = int(std::clamp<int64_t>((groups + perBlock - 1) / perBlock,
                                             1, kSumOfSquaresPartials));
  sumOfSquaresPartialKernel<<<blocks, kThreads, 0, stream>>>(
      x, std::max<int64_t>(n, 0), aligned16({x}), partials);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  sumOfSquaresFinalKernel<<<1, kSumOfSquaresPartials, 0, stream>>>(
      partials, blocks, out);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status scaleByDeviceScalar(float *x, int64_t n, const float *factor,
                           cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  int64_t vectors = aligned16({x}) ? n / 4 : 0;
  scaleKernel<<<blocksFor(vectors > 0 ? vectors : n), kThreads, 0, stream>>>(
      x, n, vectors, factor);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status adamwOnDevice(float *param, const float *grad, float *m, float *v,
                     int64_t n, const float *lr, const float *step,
                     float beta1, float beta2, float eps, float weightDecay,
                     uint16_t *compute, cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  adamwDeviceKernel<<<blocksFor(n), kThreads, 0, stream>>>(
      param, grad, m, v, n, lr, step, beta1, beta2, eps, weightDecay, compute);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status clipCoefficient(const float *total, float maxNorm, float *out,
                       cudaStream_t stream) {
  clipCoefficientKernel<<<1, 1, 0, stream>>>(total, maxNorm, out);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status countNonFinite(const float *x, int64_t n, unsigned long long *counter,
                      cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  countNonFiniteKernel<<<blocksFor(n), kThreads, 0, stream>>>(x, n, counter);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace qlora::cuda
