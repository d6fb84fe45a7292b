//===- NF4Kernels.h - NF4 kernels on the GPU: host entry points -------------===//
//
// The kernels stay private to their .cu files; this header declares what the
// host calls. bf16 tensors are passed as uint16_t bit patterns so that host
// code needs no CUDA headers beyond the runtime API. Every entry point is
// asynchronous on `stream` and returns launch errors.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/cuda/NF4MatmulPath.h"

#include <cstdint>
#include <cuda_runtime_api.h>
#include <vector>

typedef struct cublasContext *cublasHandle_t;

namespace qlora::cuda {

/// A frozen NF4 weight [rows, cols] in device memory, laid out as
/// bitsandbytes lays it out: packed codes (first element in the high
/// nibble), and either fp32 block maxima or double-quantized 8-bit codes
/// with fp32 second-level scales and the mean offset.
struct NF4DeviceWeight {
  const uint8_t *packed = nullptr;
  const float *absmax = nullptr;          ///< plain form, or null
  const uint8_t *absmaxCodes = nullptr;   ///< double quant, or null
  const float *absmaxScales = nullptr;    ///< one per dqBlockSize codes
  float offset = 0.0f;
  /// The offset in device memory instead (a compiled step's arena holds it:
  /// its host never sees the weights' values); null: `offset`.
  const float *offsetOnDevice = nullptr;
  int64_t rows = 0, cols = 0;
  int64_t blockSize = 64, dqBlockSize = 256;
  /// log2 of the two block sizes, set by the entry points (both sizes are
  /// powers of two): a shift instead of a 64-bit division per element.
  int blockShift = 6, dqBlockShift = 8;
  int64_t numElements() const { return rows * cols; }
};

/// dequantize_4bit into bf16, bit-identical to the CPU reference
/// (nf4::dequantize after dq::dequantizeAbsmax).
Status dequantizeNF4(const NF4DeviceWeight &weight, uint16_t *out,
                     cudaStream_t stream);

/// dequantizeNF4 for rows [rowBegin, rowEnd) only, written at their place in
/// `out` (the whole weight's buffer). The range must start and end on whole
/// packed words (rowBegin * cols a multiple of 8, likewise rowEnd unless it
/// is the last row).
Status dequantizeNF4Rows(const NF4DeviceWeight &weight, int64_t rowBegin,
                         int64_t rowEnd, uint16_t *out, cudaStream_t stream);

/// How nf4Gemv divides its work; launch metadata that a caller (the code
/// generator, the benchmark) picks per shape from gemvTilings().
struct GemvTiling {
  /// Warps that share one output row's K range, their partial sums added in
  /// a fixed order: more warps in flight when N is small.
  int warpsPerRow = 1;
  /// Packed words a lane loads before using any (memory-level parallelism).
  int steps = 4;
};

/// How nf4MatmulSmallM divides its work (one of smallMTilings()): the warps
/// of a block, which split K. Above 8 rows the kernel runs 8 warps
/// whichever is asked (two activation tiles take the registers of 16).
struct SmallMTiling {
  int warps = 8;
};

/// The tilings nf4MatmulSmallM accepts.
inline std::vector<SmallMTiling> smallMTilings() { return {{8}, {16}}; }

/// The tiling nf4Matmul uses, by the H200 measurements in the README: 16
/// warps where the weight's 16-row tiles are fewer than two per SM and K
/// fits one stage of 16 warps (4096), 8 warps otherwise.
SmallMTiling chooseSmallMTiling(const NF4DeviceWeight &weight,
                                int multiprocessors);

/// Every tiling nf4Gemv accepts for M rows of activations.
std::vector<GemvTiling> gemvTilings(int64_t M);

/// y[M, N] = x[M, K] · Wᵀ for small M (decode, evaluation): streams the NF4
/// weight once, dequantizing in registers. bf16 in and out, fp32
/// accumulation; the weight enters as bf16(code) * fp32 absmax.
/// Supports M <= 8 and K a multiple of 8; `tiling` must be one of
/// gemvTilings(M).
Status nf4Gemv(const uint16_t *x, int64_t M, const NF4DeviceWeight &weight,
               uint16_t *y, cudaStream_t stream, GemvTiling tiling = {});

/// The same product for M <= 16 on tensor cores (mma m16n8k16), decoding
/// the NF4 weight in registers: bf16 codes and activations, fp32
/// accumulation, each block's fp32 maximum applied to its partial sums. K
/// and the block size must be multiples of 64.
Status nf4MatmulSmallM(const uint16_t *x, int64_t M,
                       const NF4DeviceWeight &weight, uint16_t *y,
                       cudaStream_t stream, SmallMTiling tiling = {});

/// A LoRA branch beside a frozen product, with PEFT's weights: lora_A
/// [rank, K] and lora_B [N, rank] for a weight [N, K], bf16.
struct LoraTerm {
  const uint16_t *a = nullptr;
  const uint16_t *b = nullptr;
  int64_t rank = 0;
  /// lora_alpha / rank (or / sqrt(rank) with rslora).
  float scale = 0.0f;
  /// The branch's input when it differs from the product's (dropout(x) in
  /// the forward); null: the same input.
  const uint16_t *input = nullptr;
  /// Scratch [M, rank] bf16 that receives the branch's inner product: x·Aᵀ
  /// in the forward (lora_B's gradient needs it), dY·B in the input gradient
  /// (lora_A's gradient needs it, times scale).
  uint16_t *hidden = nullptr;
};

/// What a product adds to its output beyond in · W: optionally a residual
/// [M, out] (which may be the output itself: accumulate in place) and a LoRA
/// branch. The product and the residual are added in fp32 and rounded once;
/// the LoRA term is added to that bf16 result (PEFT rounds at each step too).
struct GemmEpilogue {
  const uint16_t *residual = nullptr;
  const LoraTerm *lora = nullptr;
};

/// The large-M forward y = x · Wᵀ (+ epilogue: residual, and
/// scale · (x·Aᵀ)·Bᵀ): dequantizes W into `scratch` (rows*cols bf16, reused
/// across calls) and runs bf16 tensor-core GEMMs with fp32 accumulation
/// through cuBLAS.
Status nf4MatmulDequantGemm(cublasHandle_t blas, const uint16_t *x, int64_t M,
                            const NF4DeviceWeight &weight, uint16_t *scratch,
                            uint16_t *y, cudaStream_t stream,
                            const GemmEpilogue &epilogue = {});

/// The large-M forward with the dequantization inside the GEMM's main loop
/// (Hopper wgmma; the weight is decoded tile by tile into shared memory and
/// never written out): the measured alternative to nf4MatmulDequantGemm.
/// bf16 operands (the weight rounded as the reference does), fp32
/// accumulation. K and the block size must be multiples of 64, x and the
/// packed codes 16-byte aligned; needs haveFusedNF4Matmul().
Status nf4MatmulFused(const uint16_t *x, int64_t M,
                      const NF4DeviceWeight &weight, uint16_t *y,
                      cudaStream_t stream);

/// Whether nf4MatmulFused can run here: a compute capability 9.0 device and
/// sm_90a code in this build.
bool haveFusedNF4Matmul();

/// nf4MatmulDequantGemm with the dequantization hidden behind the GEMM: the
/// weight is dequantized in `panels` row panels on a side stream while the
/// GEMM of each panel runs on `stream` as soon as its panel is ready. Not
/// for concurrent use from several host threads on one device.
Status nf4MatmulDequantGemmPipelined(cublasHandle_t blas, const uint16_t *x,
                                     int64_t M, const NF4DeviceWeight &weight,
                                     uint16_t *scratch, uint16_t *y,
                                     cudaStream_t stream, int panels = 4);

/// The input gradient dX[M, K] = dY[M, N] · W (+ epilogue: residual, and
/// scale · (dY·B)·A, the LoRA branch's input gradient when it has no
/// dropout), from the same NF4 storage (no transposed copy): dequantize
/// into `scratch`, then GEMMs. LoraTerm::input does not apply here.
Status nf4MatmulGradInput(cublasHandle_t blas, const uint16_t *dy, int64_t M,
                          const NF4DeviceWeight &weight, uint16_t *scratch,
                          uint16_t *dx, cudaStream_t stream,
                          const GemmEpilogue &epilogue = {});

/// The strategy nf4Matmul uses for y = x · Wᵀ with M rows of x
/// (NF4MatmulPath.h's choice for this weight and epilogue).
NF4MatmulPath chooseNF4MatmulPath(int64_t M, const NF4DeviceWeight &weight,
                                  const GemmEpilogue &epilogue = {});

/// y = x · Wᵀ (+ epilogue) by chooseNF4MatmulPath's strategy. `scratch`
/// (rows*cols bf16) is used only by dequantize + cuBLAS, `blas` likewise.
Status nf4Matmul(cublasHandle_t blas, const uint16_t *x, int64_t M,
                 const NF4DeviceWeight &weight, uint16_t *scratch, uint16_t *y,
                 cudaStream_t stream, const GemmEpilogue &epilogue = {});

/// Whether a CUDA device is present (tests and tools skip without one).
bool haveCudaDevice();

/// The current device's SM count, which sizes grids and picks tilings.
Expected<int> currentMultiprocessors();

} // namespace qlora::cuda
