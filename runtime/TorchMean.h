//===- TorchMean.h - torch.mean of an fp32 vector, in CUDA's summation order ===//
//
// bitsandbytes' double quantization subtracts `absmax.mean()` before coding the
// block constants, and stores that mean in the checkpoint. torch computes it on
// the GPU with a tree reduction whose fp32 rounding depends on the order of the
// additions, so a plain sum differs in the last bit. This file replays the
// order of torch's CUDA reduction kernel (Reduce.cuh) for a contiguous 1-D fp32
// tensor: 4-wide vectorized loads per thread, one block of up to 512 threads,
// a shared-memory fold and a warp shuffle tree, and for long inputs a split
// over several blocks whose partial sums the last block combines. The result
// is sum * float(1/n), as torch's MeanOps projects it.
//
// The split over blocks depends on the GPU's SM count, so the exact bits of a
// large tensor's mean are a property of the GPU bitsandbytes ran on.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>

namespace qlora {

/// The properties of the GPU whose reduction order is replayed.
struct CudaReduceDevice {
  int multiProcessorCount = 132;        ///< H100 SXM / H200
  int maxThreadsPerMultiProcessor = 2048;
};

/// torch.mean(x) for a contiguous fp32 CUDA tensor of n >= 1 elements.
float torchCudaMean(const float *x, int64_t n,
                    const CudaReduceDevice &device = CudaReduceDevice());

} // namespace qlora
