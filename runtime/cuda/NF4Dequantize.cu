//===- NF4Dequantize.cu - NF4 (+ double quant) to bf16 ----------------------===//
//
// Memory-bound: each thread turns 16 packed bytes (32 codes, within one
// block for every supported block size) into 64 bytes of bf16, with 16-byte
// loads and stores. The 16 code values sit in shared memory, where distinct
// nibbles hit distinct banks.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/NF4Device.cuh"

namespace qlora::cuda {
namespace {

using detail::blockAbsmax;
using detail::decodeBf16;

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    dequantizeKernel(NF4DeviceWeight w, detail::NF4Tables tables,
                     uint16_t *__restrict__ out) {
  __shared__ float code[16];
  __shared__ float dynamicMap[256];
  detail::loadTables(tables, code, dynamicMap);
  __syncthreads();

  const int64_t n = w.rows * w.cols;
  const int64_t chunks = n / 32;
  const uint4 *packed = reinterpret_cast<const uint4 *>(w.packed);
  uint4 *output = reinterpret_cast<uint4 *>(out);
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks;
       c += int64_t(gridDim.x) * blockDim.x) {
    uint4 bytes = __ldg(&packed[c]);
    float absmax = blockAbsmax(w, (c * 32) / w.blockSize, dynamicMap);
    uint32_t words[4] = {bytes.x, bytes.y, bytes.z, bytes.w};
    uint32_t result[16];
#pragma unroll
    for (int word = 0; word < 4; ++word)
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        uint32_t byte = (words[word] >> (8 * b)) & 0xffu;
        uint32_t first = decodeBf16(code, byte >> 4, absmax);
        uint32_t second = decodeBf16(code, byte & 0xfu, absmax);
        result[word * 4 + b] = first | (second << 16);
      }
#pragma unroll
    for (int v = 0; v < 4; ++v)
      output[c * 4 + v] = make_uint4(result[4 * v], result[4 * v + 1],
                                     result[4 * v + 2], result[4 * v + 3]);
  }
  // The last partial chunk, element by element.
  if (blockIdx.x == 0) {
    for (int64_t i = chunks * 32 + threadIdx.x; i < n; i += blockDim.x) {
      uint32_t byte = w.packed[i / 2];
      uint32_t q = (i % 2 == 0) ? byte >> 4 : byte & 0xfu;
      out[i] = decodeBf16(code, q, blockAbsmax(w, i / w.blockSize, dynamicMap));
    }
  }
}

} // namespace

Status dequantizeNF4(const NF4DeviceWeight &weight, uint16_t *out,
                     cudaStream_t stream) {
  if (weight.blockSize % 32 != 0)
    return makeError("dequantizeNF4: expects a block size multiple of 32, "
                     "got {}",
                     weight.blockSize);
  int64_t chunks = weight.numElements() / 32;
  int device = 0, sms = 0;
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  QLORA_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  int64_t blocks = std::min<int64_t>((chunks + kThreads - 1) / kThreads,
                                     int64_t(sms) * 8);
  dequantizeKernel<<<std::max<int64_t>(blocks, 1), kThreads, 0, stream>>>(
      weight, detail::hostTables(), out);
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

} // namespace qlora::cuda
