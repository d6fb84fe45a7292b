//===- Gemm.cpp - Blocked fp32 GEMM for the CPU backend ---------------------===//
//
// A BLIS-style SGEMM: op(B) is packed in kKc x NR micro-panels (shared by all
// threads), op(A) in MR x kKc micro-panels per thread, and an MR x NR
// register tile accumulates a kKc-long rank update. Products with few rows
// (the CPU backend's token counts) take a path with one parallel region per
// call instead. Packing reads each operand through detail::Operand, so an
// operand can be rounded to bf16 or decoded from NF4 on the way: the NF4
// linears never materialize their weight. The micro-kernel is
// written with GCC/Clang generic vector types (not intrinsics): GCC 12 does
// not keep a plain-loop register tile in registers (3-7 GFLOP/s measured),
// the vector types do. It is compiled three times, for baseline x86-64, AVX2
// and AVX-512F, and picked at run time, so the library runs on any x86-64
// machine. Every path adds the same products in the same order without FMA
// contraction, so all give bit-identical results.
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/GemmInternal.h"

#include "runtime/Float16.h"
#include "runtime/NF4.h"
#include "runtime/Parallel.h"

#include <algorithm>
#include <atomic>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QLORA_GEMM_X86 1
#else
#define QLORA_GEMM_X86 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define QLORA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define QLORA_ALWAYS_INLINE inline
#endif

namespace qlora {
namespace cpu {
namespace {

/// Depth of a packed block: one B micro-panel (kKc x 16 floats, 16 KiB) stays
/// in L1 while the A block streams from L2.
constexpr int64_t kKc = 256;
/// Most rows of a packed A block (96 x 256 floats, 96 KiB: L2).
constexpr int64_t kMcMax = 96;
/// Most columns of a packed B block (up to 4 MiB: L3).
constexpr int64_t kNcMax = 4096;
/// Most columns of one work item; items are (A block, column tile) pairs.
constexpr int64_t kNtMax = 256;
/// Below this many flops a GEMM runs on the calling thread only.
constexpr double kParallelFlops = 1 << 20;

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t roundUp(int64_t a, int64_t b) { return ceilDiv(a, b) * b; }
inline float roundBf16(float x) { return bf16ToFloat(floatToBf16(x)); }

//===----------------------------------------------------------------------===//
// Packing
//===----------------------------------------------------------------------===//

/// Writes the flattened weight's elements [first, first + count) to
/// out[t * stride], from the per-block tables of decoded values (see
/// buildNF4Tables).
void decodeNF4(const NF4View &w, const float *tables, int64_t first,
               int64_t count, float *out, int64_t stride) {
  int64_t end = first + count;
  int64_t e = first;
  while (e < end) {
    int64_t block = e / w.blockSize;
    int64_t blockEnd = std::min(end, (block + 1) * w.blockSize);
    const float *table = tables + block * 16;
    if (e & 1) { // a low nibble first
      *out = table[w.packed[e >> 1] & 15];
      out += stride;
      ++e;
    }
    for (; e + 1 < blockEnd; e += 2, out += 2 * stride) {
      uint8_t byte = w.packed[e >> 1];
      out[0] = table[byte >> 4];
      out[stride] = table[byte & 15];
    }
    if (e < blockEnd) { // a high nibble last
      *out = table[w.packed[e >> 1] >> 4];
      out += stride;
      ++e;
    }
  }
}

/// The 16 values each block's codes decode to, as bitsandbytes'
/// dequantize_4bit to bf16 yields them: bf16(code * absmax), the product in
/// fp32. N*K/4 floats (a quarter of the dequantized weight), built once per
/// GEMM call: decoding while packing is then a table lookup.
std::vector<float> buildNF4Tables(const NF4View &w) {
  int64_t blocks = nf4::numBlocks(w.rows * w.cols, w.blockSize);
  std::vector<float> tables(size_t(blocks * 16));
  parallelFor(0, blocks, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block)
      for (int q = 0; q < 16; ++q)
        tables[size_t(block * 16 + q)] =
            roundBf16(nf4::kCode[q] * w.absmax[block]);
  });
  return tables;
}

/// Packs rows [r0, r0 + rows) x columns [c0, c0 + depth) of op(X) into a
/// micro-panel: panel[k * R + i] = op(X)(r0 + i, c0 + k), zero-padded to R
/// rows so that the micro-kernel never needs an edge case.
template <int R>
void packPanel(const detail::Operand &X, int64_t r0, int64_t rows, int64_t c0,
               int64_t depth, float *panel) {
  if (rows < R)
    for (int64_t k = 0; k < depth; ++k)
      for (int64_t i = rows; i < R; ++i)
        panel[k * R + i] = 0.0f;
  if (X.nf4) {
    const NF4View &w = *X.nf4;
    if (!X.trans) // op(X)(r, c) = W[r][c]: a row of W is a panel row.
      for (int64_t i = 0; i < rows; ++i)
        decodeNF4(w, X.nf4Tables, (r0 + i) * w.cols + c0, depth, panel + i, R);
    else // op(X)(r, c) = W[c][r]: a row of W is a panel column.
      for (int64_t k = 0; k < depth; ++k)
        decodeNF4(w, X.nf4Tables, (c0 + k) * w.cols + r0, rows, panel + k * R,
                  1);
    return;
  }
  if (!X.trans) {
    for (int64_t i = 0; i < rows; ++i) {
      const float *src = X.data + (r0 + i) * X.ld + c0;
      if (X.roundBf16)
        for (int64_t k = 0; k < depth; ++k)
          panel[k * R + i] = roundBf16(src[k]);
      else
        for (int64_t k = 0; k < depth; ++k)
          panel[k * R + i] = src[k];
    }
  } else {
    for (int64_t k = 0; k < depth; ++k) {
      const float *src = X.data + (c0 + k) * X.ld + r0;
      float *dst = panel + k * R;
      if (X.roundBf16)
        for (int64_t i = 0; i < rows; ++i)
          dst[i] = roundBf16(src[i]);
      else
        for (int64_t i = 0; i < rows; ++i)
          dst[i] = src[i];
    }
  }
}

/// op(B)(p, j) as op(B')(j, p): B' is B read with the opposite transpose,
/// so that B's panels pack with the same routine as A's.
detail::Operand transposed(detail::Operand X) {
  X.trans = !X.trans;
  return X;
}

/// A 64-byte-aligned view of a per-thread scratch buffer of `n` floats.
float *scratch(std::vector<float> &buffer, int64_t n) {
  if (int64_t(buffer.size()) < n + 16)
    buffer.resize(size_t(n + 16));
  uintptr_t address = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((64 - address % 64) % 64) / sizeof(float);
}

//===----------------------------------------------------------------------===//
// Micro- and macro-kernels
//===----------------------------------------------------------------------===//

/// One work item: an mc x nt block of C from a packed A block and the
/// item's run of packed B micro-panels.
struct MacroTask {
  const float *Ap;
  const float *Bp;
  int64_t mc, nt, kc;
  float *C;
  int64_t ldc;
  float alpha, beta;
  bool firstBlock; ///< the first kKc slice: apply beta, else accumulate
};
using MacroKernel = void (*)(const MacroTask &);

/// tile[MR][NR] = sum over k of a[k][i] * b[k][j], k ascending, from 0.
/// W is the vector width in floats; NR / W vectors per tile row.
template <int MR, int NR, int W>
QLORA_ALWAYS_INLINE void microKernel(int64_t kc, const float *__restrict a,
                                     const float *__restrict b,
                                     float *__restrict tile) {
  // aligned(4): loads and stores of packed panels need not be aligned.
  typedef float Vec __attribute__((vector_size(W * sizeof(float)), aligned(4)));
  constexpr int NV = NR / W;
  static_assert(NV * W == NR, "NR must be a multiple of the vector width");
  Vec acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j)
      acc[i][j] = Vec{};
  for (int64_t k = 0; k < kc; ++k) {
    const float *ak = a + k * MR;
    const float *bk = b + k * NR;
    Vec bv[NV];
    for (int j = 0; j < NV; ++j)
      bv[j] = *reinterpret_cast<const Vec *>(bk + j * W);
    for (int i = 0; i < MR; ++i) {
      float ai = ak[i];
      for (int j = 0; j < NV; ++j)
        acc[i][j] += ai * bv[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j)
      *reinterpret_cast<Vec *>(tile + i * NR + j * W) = acc[i][j];
}

/// Adds an mr x nr corner of the tile into C with alpha and, on the first
/// kKc slice, beta (beta == 0 never reads C).
template <int NR>
QLORA_ALWAYS_INLINE void storeTile(const float *tile, int64_t mr, int64_t nr,
                                   float *C, int64_t ldc, float alpha,
                                   float beta, bool firstBlock) {
  for (int64_t i = 0; i < mr; ++i) {
    float *c = C + i * ldc;
    const float *t = tile + i * NR;
    if (!firstBlock || beta == 1.0f)
      for (int64_t j = 0; j < nr; ++j)
        c[j] += alpha * t[j];
    else if (beta == 0.0f)
      for (int64_t j = 0; j < nr; ++j)
        c[j] = alpha * t[j];
    else
      for (int64_t j = 0; j < nr; ++j)
        c[j] = beta * c[j] + alpha * t[j];
  }
}

/// Column panels outside, row panels inside: the B micro-panel stays in L1
/// while the A block streams through.
template <int MR, int NR, int W>
QLORA_ALWAYS_INLINE void macroKernel(const MacroTask &t) {
  alignas(64) float tile[MR * NR];
  for (int64_t jr = 0; jr < t.nt; jr += NR) {
    int64_t nr = std::min<int64_t>(NR, t.nt - jr);
    for (int64_t ir = 0; ir < t.mc; ir += MR) {
      int64_t mr = std::min<int64_t>(MR, t.mc - ir);
      microKernel<MR, NR, W>(t.kc, t.Ap + ir * t.kc, t.Bp + jr * t.kc, tile);
      storeTile<NR>(tile, mr, nr, t.C + ir * t.ldc + jr, t.ldc, t.alpha,
                    t.beta, t.firstBlock);
    }
  }
}

/// Baseline x86-64 (SSE2: 16 registers) or another architecture: 6 x 8.
void macroKernelGeneric(const MacroTask &t) { macroKernel<6, 8, 4>(t); }

#if QLORA_GEMM_X86
/// AVX2: 12 of the 16 ymm registers hold the 6 x 16 tile.
__attribute__((target("avx2"))) void macroKernelAvx2(const MacroTask &t) {
  macroKernel<6, 16, 8>(t);
}
/// AVX-512F: the same 6 x 16 tile in 6 zmm registers; the adder ports, not
/// the registers, bound it (a wider tile measured no faster).
__attribute__((target("avx512f"))) void macroKernelAvx512(const MacroTask &t) {
  macroKernel<6, 16, 16>(t);
}
#endif

//===----------------------------------------------------------------------===//
// Driver
//===----------------------------------------------------------------------===//

thread_local std::vector<float> packedABuffer;
thread_local std::vector<float> packedBBuffer;
thread_local std::vector<float> tileBBuffer;

/// C = beta * C for the degenerate products (K == 0 or alpha == 0).
void scaleC(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
  parallelFor(0, M, std::max<int64_t>(1, 65536 / std::max<int64_t>(N, 1)),
              [&](int64_t begin, int64_t end) {
                for (int64_t i = begin; i < end; ++i)
                  for (int64_t j = 0; j < N; ++j)
                    C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
              });
}

/// Packs the rows [i0, i0 + mc) x depth [p0, p0 + kc) of op(A).
template <int MR>
void packABlock(const detail::Operand &A, int64_t i0, int64_t mc, int64_t p0,
                int64_t kc, float *Ap) {
  for (int64_t ir = 0; ir < mc; ir += MR)
    packPanel<MR>(A, i0 + ir, std::min<int64_t>(MR, mc - ir), p0, kc,
                  Ap + ir * kc);
}

/// Few rows (M <= 2 * kMcMax, as with the token counts of the CPU backend):
/// one parallel region per call, each work item a column tile of C that
/// packs its own B panels and re-packs the (small) A blocks. For products
/// this small, a shared packed B would cost two pool round trips per kKc
/// slice, which measured slower than the redundant A packing on 2 cores.
template <int MR, int NR>
void driveFewRows(int64_t M, int64_t N, int64_t K, float alpha,
                  const detail::Operand &A, const detail::Operand &B,
                  float beta, float *C, int64_t ldc, MacroKernel kernel,
                  int64_t mc, bool parallel) {
  // About two tiles per thread, each at least 4 micro-panels wide.
  int64_t threads = parallel ? numThreads() : 1;
  int64_t nt = roundUp(ceilDiv(N, 2 * threads), NR);
  nt = std::min(std::max<int64_t>(nt, 4 * NR), roundUp(kNtMax, NR));
  int64_t tiles = ceilDiv(N, nt);
  detail::Operand Bt = transposed(B);
  parallelFor(0, tiles, parallel ? 1 : tiles, [&](int64_t begin, int64_t end) {
    float *Ap = scratch(packedABuffer, mc * std::min(kKc, K));
    float *Bp = scratch(tileBBuffer, nt * std::min(kKc, K));
    for (int64_t tile = begin; tile < end; ++tile) {
      int64_t j0 = tile * nt, ncur = std::min(nt, N - j0);
      for (int64_t p0 = 0; p0 < K; p0 += kKc) {
        int64_t kc = std::min(kKc, K - p0);
        for (int64_t jr = 0; jr < ncur; jr += NR)
          packPanel<NR>(Bt, j0 + jr, std::min<int64_t>(NR, ncur - jr), p0, kc,
                        Bp + jr * kc);
        for (int64_t i0 = 0; i0 < M; i0 += mc) {
          int64_t mcur = std::min(mc, M - i0);
          packABlock<MR>(A, i0, mcur, p0, kc, Ap);
          kernel(MacroTask{Ap, Bp, mcur, ncur, kc, C + i0 * ldc + j0, ldc,
                           alpha, beta, p0 == 0});
        }
      }
    }
  });
}

/// BLIS order: for each kKc slice and kNcMax block of columns, op(B) is
/// packed once (in parallel) and shared; work items are (A block, column
/// tile) pairs, each packing its A block unless the previous item of its
/// chunk already did.
template <int MR, int NR>
void drive(int64_t M, int64_t N, int64_t K, float alpha,
           const detail::Operand &A, const detail::Operand &B, float beta,
           float *C, int64_t ldc, MacroKernel kernel) {
  // Split M into blocks of nearly equal size (whole micro-panels), so that
  // a small M still yields balanced items.
  int64_t mBlocks = ceilDiv(M, kMcMax);
  int64_t mc = roundUp(ceilDiv(M, mBlocks), MR);
  mBlocks = ceilDiv(M, mc);
  bool parallel = 2.0 * double(M) * double(N) * double(K) >= kParallelFlops;
  if (mBlocks <= 2) {
    driveFewRows<MR, NR>(M, N, K, alpha, A, B, beta, C, ldc, kernel, mc,
                         parallel);
    return;
  }
  detail::Operand Bt = transposed(B);

  for (int64_t p0 = 0; p0 < K; p0 += kKc) {
    int64_t kc = std::min(kKc, K - p0);
    for (int64_t j0 = 0; j0 < N; j0 += kNcMax) {
      int64_t nc = std::min(kNcMax, N - j0);
      int64_t panels = ceilDiv(nc, NR);
      float *Bp = scratch(packedBBuffer, panels * NR * kc);
      parallelFor(0, panels, parallel ? 4 : panels,
                  [&](int64_t begin, int64_t end) {
                    for (int64_t pj = begin; pj < end; ++pj)
                      packPanel<NR>(Bt, j0 + pj * NR,
                                    std::min<int64_t>(NR, nc - pj * NR), p0,
                                    kc, Bp + pj * NR * kc);
                  });

      int64_t nTiles = ceilDiv(nc, kNtMax);
      int64_t nt = roundUp(ceilDiv(nc, nTiles), NR);
      nTiles = ceilDiv(nc, nt);
      int64_t items = mBlocks * nTiles;
      parallelFor(0, items, parallel ? 1 : items, [&](int64_t begin,
                                                      int64_t end) {
        float *Ap = scratch(packedABuffer, mc * kc);
        int64_t packedBlock = -1; // consecutive items share an A block
        for (int64_t item = begin; item < end; ++item) {
          int64_t ib = item / nTiles, jt = item % nTiles;
          int64_t i0 = ib * mc, mcur = std::min(mc, M - i0);
          if (ib != packedBlock) {
            packABlock<MR>(A, i0, mcur, p0, kc, Ap);
            packedBlock = ib;
          }
          int64_t jt0 = jt * nt;
          kernel(MacroTask{Ap, Bp + jt0 * kc, mcur, std::min(nt, nc - jt0), kc,
                           C + i0 * ldc + j0 + jt0, ldc, alpha, beta,
                           p0 == 0});
        }
      });
    }
  }
}

Isa detectIsa() {
#if QLORA_GEMM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2"))
    return Isa::Avx2;
#endif
  return Isa::Generic;
}

/// -1: not pinned; else the pinned Isa.
std::atomic<int> pinnedIsa{-1};

} // namespace

Isa hostIsa() {
  static const Isa isa = detectIsa();
  return isa;
}

Isa gemmIsa() {
  int pinned = pinnedIsa.load(std::memory_order_relaxed);
  return pinned < 0 ? hostIsa() : Isa(pinned);
}

void setGemmIsa(Isa isa) {
  pinnedIsa.store(int(std::min(isa, hostIsa())), std::memory_order_relaxed);
}

const char *isaName(Isa isa) {
  switch (isa) {
  case Isa::Generic:
    return "generic";
  case Isa::Avx2:
    return "avx2";
  case Isa::Avx512:
    return "avx512";
  }
  return "unknown";
}

namespace detail {

void gemm(int64_t M, int64_t N, int64_t K, float alpha, const Operand &lhs,
          const Operand &rhs, float beta, float *C, int64_t ldc) {
  if (M <= 0 || N <= 0)
    return;
  if (K <= 0 || alpha == 0.0f) {
    scaleC(M, N, beta, C, ldc);
    return;
  }
  Operand A = lhs, B = rhs;
  std::vector<float> tablesA, tablesB;
  if (A.nf4) {
    tablesA = buildNF4Tables(*A.nf4);
    A.nf4Tables = tablesA.data();
  }
  if (B.nf4) {
    tablesB = buildNF4Tables(*B.nf4);
    B.nf4Tables = tablesB.data();
  }
  switch (gemmIsa()) {
#if QLORA_GEMM_X86
  case Isa::Avx512:
    drive<6, 16>(M, N, K, alpha, A, B, beta, C, ldc, macroKernelAvx512);
    return;
  case Isa::Avx2:
    drive<6, 16>(M, N, K, alpha, A, B, beta, C, ldc, macroKernelAvx2);
    return;
#endif
  default:
    drive<6, 8>(M, N, K, alpha, A, B, beta, C, ldc, macroKernelGeneric);
    return;
  }
}

void roundToBf16(float *x, int64_t n) {
  parallelFor(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      x[i] = roundBf16(x[i]);
  });
}

} // namespace detail

void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K,
          float alpha, const float *A, int64_t lda, const float *B,
          int64_t ldb, float beta, float *C, int64_t ldc) {
  detail::gemm(M, N, K, alpha, detail::Operand::dense(A, lda, transA),
               detail::Operand::dense(B, ldb, transB), beta, C, ldc);
}

} // namespace cpu
} // namespace qlora
