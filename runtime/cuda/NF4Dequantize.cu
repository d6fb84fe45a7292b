//===- NF4Dequantize.cu - NF4 (+ double quant) to bf16 ----------------------===//
//
// Memory-bound: a thread turns packed 4-byte words (8 codes, within one block
// for every supported block size) into 16 bytes of bf16, so that each warp
// instruction reads 128 and writes 512 contiguous bytes. The 16 code values
// sit in shared memory, where distinct nibbles hit distinct banks.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Device.cuh"

namespace qlora::cuda {
namespace {

using detail::blockAbsmax;
using detail::decodeBf16;

constexpr int kThreads = 256;
/// Packed words (8 codes each) a thread converts per pass: the loads of one
/// pass are issued together to keep enough bytes in flight.
constexpr int kWordsPerThread = 8;

/// Converts one packed word (8 codes, one block) to 8 bf16 values.
__device__ __forceinline__ uint4 decodeWord(uint32_t word, const float *code,
                                            float absmax) {
  uint32_t result[4];
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    uint32_t byte = (word >> (8 * b)) & 0xffu;
    result[b] = uint32_t(decodeBf16(code, byte >> 4, absmax)) |
                uint32_t(decodeBf16(code, byte & 0xfu, absmax)) << 16;
  }
  return make_uint4(result[0], result[1], result[2], result[3]);
}

__global__ void __launch_bounds__(kThreads)
    dequantizeKernel(const __grid_constant__ NF4DeviceWeight w,
                     const __grid_constant__ detail::NF4Tables tables,
                     int64_t firstWord, int64_t endWord,
                     uint16_t *__restrict__ out) {
  __shared__ float code[16];
  __shared__ float dynamicMap[256];
  detail::loadTables(tables, code, dynamicMap);
  __syncthreads();

  const int64_t n = w.rows * w.cols;
  const int64_t words = n / 8;
  const uint32_t *packed = reinterpret_cast<const uint32_t *>(w.packed);
  uint4 *output = reinterpret_cast<uint4 *>(out);
  // A warp reads 128 contiguous bytes and writes 512 per instruction.
  const int64_t stride = int64_t(gridDim.x) * kThreads * kWordsPerThread;
  for (int64_t base = firstWord +
                      int64_t(blockIdx.x) * kThreads * kWordsPerThread +
                      threadIdx.x;
       base < endWord; base += stride) {
    uint32_t word[kWordsPerThread];
    detail::LoadedAbsmax absmax[kWordsPerThread];
#pragma unroll
    for (int k = 0; k < kWordsPerThread; ++k) {
      int64_t index = base + int64_t(k) * kThreads;
      if (index < endWord) {
        word[k] = __ldg(&packed[index]);
        absmax[k] = detail::loadAbsmax(w, (index * 8) >> w.blockShift);
      }
    }
#pragma unroll
    for (int k = 0; k < kWordsPerThread; ++k) {
      int64_t index = base + int64_t(k) * kThreads;
      if (index < endWord)
        output[index] = decodeWord(
            word[k], code, detail::decodeAbsmax(w, absmax[k], dynamicMap));
    }
  }
  // The elements after the last whole word, one by one.
  if (blockIdx.x == 0 && endWord == words) {
    for (int64_t i = words * 8 + threadIdx.x; i < n; i += blockDim.x) {
      uint32_t byte = w.packed[i / 2];
      uint32_t q = (i % 2 == 0) ? byte >> 4 : byte & 0xfu;
      out[i] = decodeBf16(code, q, blockAbsmax(w, i >> w.blockShift, dynamicMap));
    }
  }
}

} // namespace

Status dequantizeNF4Rows(const NF4DeviceWeight &weight, int64_t rowBegin,
                         int64_t rowEnd, uint16_t *out, cudaStream_t stream) {
  Expected<NF4DeviceWeight> prepared = detail::prepare(weight);
  if (!prepared)
    return prepared.error().withContext("dequantizeNF4");
  const int64_t K = weight.cols;
  if (rowBegin < 0 || rowEnd > weight.rows || rowBegin > rowEnd ||
      (rowBegin * K) % 8 != 0 || (rowEnd < weight.rows && (rowEnd * K) % 8))
    return makeError("dequantizeNF4: rows {}..{} of {} do not start and end "
                     "on whole packed words",
                     rowBegin, rowEnd, weight.rows);
  int64_t firstWord = rowBegin * K / 8;
  int64_t endWord = rowEnd == weight.rows ? weight.numElements() / 8
                                          : rowEnd * K / 8;
  Expected<int> sms = currentMultiprocessors();
  if (!sms)
    return sms.error();
  int64_t perBlock = int64_t(kThreads) * kWordsPerThread;
  int64_t blocks = std::min<int64_t>(
      (endWord - firstWord + perBlock - 1) / perBlock, int64_t(*sms) * 16);
  dequantizeKernel<<<std::max<int64_t>(blocks, 1), kThreads, 0, stream>>>(
      *prepared, detail::hostTables(), firstWord, endWord, out);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status dequantizeNF4(const NF4DeviceWeight &weight, uint16_t *out,
                     cudaStream_t stream) {
  return dequantizeNF4Rows(weight, 0, weight.rows, out, stream);
}

} // namespace qlora::cuda
