//===- RandomFill.h - Random tensors made on the GPU -------------------------===//
//
// Benchmarks run compiled steps on random weights: these fill device memory
// with values drawn from a counter-based generator (Philox, the dropout
// masks' own), so that gigabytes of NF4 codes and bf16 weights need no host
// generation and no transfer. Element i of a fill depends only on (seed, i).
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <cuda_runtime_api.h>

namespace qlora::cuda {

/// `bytes` uniformly random bytes.
Status fillRandomBytes(uint8_t *out, int64_t bytes, uint64_t seed,
                       cudaStream_t stream);

/// n values uniform in [lo, hi), as fp32 (`f32`) or rounded to bf16
/// (`bf16`); the same seed gives the bf16 rounding of the same fp32 values.
Status fillUniform(float *f32, uint16_t *bf16, int64_t n, float lo, float hi,
                   uint64_t seed, cudaStream_t stream);

} // namespace qlora::cuda
