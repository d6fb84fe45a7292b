//===- Attention.cpp - Causal GQA attention, flash-style --------------------===//
//
// softmax(q k^T * scale + causal mask) v per (batch, head), in fp32, computed
// over tiles of kBr queries x kBc keys with an online softmax (running max and
// sum), so no seq x seq matrix is ever held. The forward saves the log-sum-exp
// of each query row; the backward recomputes the probabilities from it:
//   P = exp(S - lse), dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(dO o O)),
//   dQ = scale dS K, dK = scale dS^T Q.
// The backward runs two passes, one over key tiles (dK, dV summed over the
// query heads of a kv head) and one over query tiles (dQ), so that every
// thread owns the rows it writes: no atomics, results independent of the
// thread count. That recomputes S and dP once more than FlashAttention-2's
// single pass, a fair price on a CPU.
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/Kernels.h"

#include "runtime/Parallel.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace qlora {
namespace cpu {
namespace {

constexpr int64_t kBr = 32; ///< query rows per tile
constexpr int64_t kBc = 64; ///< keys per tile

/// Strided views of the [batch, seq, heads * headDim] tensors.
struct Shape {
  int64_t batch, seq, heads, kvHeads, headDim;
  int64_t group() const { return heads / kvHeads; }
  int64_t qOffset(int64_t b, int64_t i, int64_t h) const {
    return ((b * seq + i) * heads + h) * headDim;
  }
  int64_t kvOffset(int64_t b, int64_t j, int64_t g) const {
    return ((b * seq + j) * kvHeads + g) * headDim;
  }
  int64_t lseOffset(int64_t b, int64_t h, int64_t i) const {
    return (b * heads + h) * seq + i;
  }
};

/// dst[dd * kBc + j] = src row (j0 + j)[dd]: a key or value tile transposed
/// so that the score loops run over contiguous keys.
void transposeTile(const float *base, const Shape &s, int64_t b, int64_t g,
                   int64_t j0, int64_t bc, float *dst) {
  for (int64_t j = 0; j < bc; ++j) {
    const float *row = base + s.kvOffset(b, j0 + j, g);
    for (int64_t dd = 0; dd < s.headDim; ++dd)
      dst[dd * kBc + j] = row[dd];
  }
}

/// scores[i * kBc + j] = sum_dd rows_i[dd] * tile[dd][j] for i < br, j < bc,
/// where rows_i = base + rowOffset(i).
template <typename RowPtr>
void tileProduct(RowPtr rowPtr, int64_t br, const float *tile, int64_t bc,
                 int64_t headDim, float *scores) {
  for (int64_t i = 0; i < br; ++i) {
    const float *row = rowPtr(i);
    float *out = scores + i * kBc;
    std::fill(out, out + bc, 0.0f);
    for (int64_t dd = 0; dd < headDim; ++dd) {
      float a = row[dd];
      const float *t = tile + dd * kBc;
      for (int64_t j = 0; j < bc; ++j)
        out[j] += a * t[j];
    }
  }
}

/// rowsum(dO o O) for the rows of a query tile.
void rowDots(const float *dout, const float *out, const Shape &s, int64_t b,
             int64_t h, int64_t i0, int64_t br, float *D) {
  for (int64_t i = 0; i < br; ++i) {
    const float *x = dout + s.qOffset(b, i0 + i, h);
    const float *y = out + s.qOffset(b, i0 + i, h);
    double sum = 0.0;
    for (int64_t dd = 0; dd < s.headDim; ++dd)
      sum += double(x[dd]) * double(y[dd]);
    D[i] = float(sum);
  }
}

/// P and dS of one tile from the scores S (overwritten by P) and dP
/// (overwritten by dS); masked entries become 0.
void probabilitiesAndScoreGrads(float *S, float *dP, const float *lse,
                                const float *D, int64_t i0, int64_t br,
                                int64_t j0, int64_t bc, float scale) {
  for (int64_t i = 0; i < br; ++i) {
    float *p = S + i * kBc;
    float *ds = dP + i * kBc;
    int64_t visible = std::min(bc, i0 + i - j0 + 1); // keys j0 + j <= i0 + i
    for (int64_t j = 0; j < bc; ++j) {
      if (j < visible) {
        p[j] = std::exp(p[j] * scale - lse[i]);
        ds[j] = p[j] * (ds[j] - D[i]);
      } else {
        p[j] = 0.0f;
        ds[j] = 0.0f;
      }
    }
  }
}

} // namespace

void attention(const float *q, const float *k, const float *v, int64_t batch,
               int64_t seq, int64_t heads, int64_t kvHeads, int64_t headDim,
               float scale, float *out, float *lse) {
  Shape s{batch, seq, heads, kvHeads, headDim};
  int64_t qTiles = (seq + kBr - 1) / kBr;
  const float kNegInf = -std::numeric_limits<float>::infinity();
  parallelFor(0, batch * heads * qTiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(size_t(headDim * kBc)), S(size_t(kBr * kBc)),
        acc(size_t(kBr * headDim)), rowMax(kBr), rowSum(kBr);
    for (int64_t task = begin; task < end; ++task) {
      int64_t qt = task % qTiles, bh = task / qTiles;
      int64_t b = bh / heads, h = bh % heads, g = h / s.group();
      int64_t i0 = qt * kBr, br = std::min(kBr, seq - i0);
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(rowMax.begin(), rowMax.end(), kNegInf);
      std::fill(rowSum.begin(), rowSum.end(), 0.0f);
      auto qRow = [&](int64_t i) { return q + s.qOffset(b, i0 + i, h); };
      for (int64_t j0 = 0; j0 < i0 + br; j0 += kBc) {
        int64_t bc = std::min(kBc, i0 + br - j0);
        transposeTile(k, s, b, g, j0, bc, kt.data());
        tileProduct(qRow, br, kt.data(), bc, headDim, S.data());
        for (int64_t i = 0; i < br; ++i) {
          int64_t visible = std::min(bc, i0 + i - j0 + 1);
          if (visible <= 0)
            continue;
          float *p = S.data() + i * kBc;
          float blockMax = kNegInf;
          for (int64_t j = 0; j < visible; ++j) {
            p[j] *= scale;
            blockMax = std::max(blockMax, p[j]);
          }
          float newMax = std::max(rowMax[size_t(i)], blockMax);
          float correction = std::exp(rowMax[size_t(i)] - newMax);
          float sum = 0.0f;
          for (int64_t j = 0; j < visible; ++j) {
            p[j] = std::exp(p[j] - newMax);
            sum += p[j];
          }
          rowSum[size_t(i)] = rowSum[size_t(i)] * correction + sum;
          rowMax[size_t(i)] = newMax;
          float *o = acc.data() + i * headDim;
          for (int64_t dd = 0; dd < headDim; ++dd)
            o[dd] *= correction;
          for (int64_t j = 0; j < visible; ++j) {
            const float *vr = v + s.kvOffset(b, j0 + j, g);
            float pj = p[j];
            for (int64_t dd = 0; dd < headDim; ++dd)
              o[dd] += pj * vr[dd];
          }
        }
      }
      for (int64_t i = 0; i < br; ++i) {
        float inv = 1.0f / rowSum[size_t(i)];
        float *o = out + s.qOffset(b, i0 + i, h);
        for (int64_t dd = 0; dd < headDim; ++dd)
          o[dd] = acc[size_t(i * headDim + dd)] * inv;
        lse[s.lseOffset(b, h, i0 + i)] =
            rowMax[size_t(i)] + std::log(rowSum[size_t(i)]);
      }
    }
  });
}

void attentionBackward(const float *q, const float *k, const float *v,
                       const float *out, const float *lse, const float *dout,
                       int64_t batch, int64_t seq, int64_t heads,
                       int64_t kvHeads, int64_t headDim, float scale,
                       float *dq, float *dk, float *dv) {
  Shape s{batch, seq, heads, kvHeads, headDim};
  int64_t qTiles = (seq + kBr - 1) / kBr, kTiles = (seq + kBc - 1) / kBc;

  // Pass 1, one task per (batch, kv head, key tile): dK and dV over every
  // query head of the group and every query tile that sees these keys.
  parallelFor(0, batch * kvHeads * kTiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(size_t(headDim * kBc)), vt(size_t(headDim * kBc)),
        S(size_t(kBr * kBc)), dP(size_t(kBr * kBc)),
        dK(size_t(kBc * headDim)), dV(size_t(kBc * headDim)), D(kBr);
    for (int64_t task = begin; task < end; ++task) {
      int64_t kb = task % kTiles, bg = task / kTiles;
      int64_t b = bg / kvHeads, g = bg % kvHeads;
      int64_t j0 = kb * kBc, bc = std::min(kBc, seq - j0);
      transposeTile(k, s, b, g, j0, bc, kt.data());
      transposeTile(v, s, b, g, j0, bc, vt.data());
      std::fill(dK.begin(), dK.end(), 0.0f);
      std::fill(dV.begin(), dV.end(), 0.0f);
      for (int64_t h = g * s.group(); h < (g + 1) * s.group(); ++h) {
        for (int64_t i0 = (j0 / kBr) * kBr; i0 < seq; i0 += kBr) {
          int64_t br = std::min(kBr, seq - i0);
          auto qRow = [&](int64_t i) { return q + s.qOffset(b, i0 + i, h); };
          auto doRow = [&](int64_t i) {
            return dout + s.qOffset(b, i0 + i, h);
          };
          tileProduct(qRow, br, kt.data(), bc, headDim, S.data());
          tileProduct(doRow, br, vt.data(), bc, headDim, dP.data());
          rowDots(dout, out, s, b, h, i0, br, D.data());
          probabilitiesAndScoreGrads(S.data(), dP.data(),
                                     lse + s.lseOffset(b, h, i0), D.data(), i0,
                                     br, j0, bc, scale);
          for (int64_t i = 0; i < br; ++i) {
            const float *qi = qRow(i), *doi = doRow(i);
            for (int64_t j = 0; j < bc; ++j) {
              float p = S[size_t(i * kBc + j)], ds = dP[size_t(i * kBc + j)];
              if (p == 0.0f && ds == 0.0f)
                continue;
              float *dvj = dV.data() + j * headDim;
              float *dkj = dK.data() + j * headDim;
              for (int64_t dd = 0; dd < headDim; ++dd) {
                dvj[dd] += p * doi[dd];
                dkj[dd] += ds * qi[dd];
              }
            }
          }
        }
      }
      for (int64_t j = 0; j < bc; ++j) {
        float *dkj = dk + s.kvOffset(b, j0 + j, g);
        float *dvj = dv + s.kvOffset(b, j0 + j, g);
        for (int64_t dd = 0; dd < headDim; ++dd) {
          dkj[dd] = scale * dK[size_t(j * headDim + dd)];
          dvj[dd] = dV[size_t(j * headDim + dd)];
        }
      }
    }
  });

  // Pass 2, one task per (batch, head, query tile): dQ over the visible keys.
  parallelFor(0, batch * heads * qTiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(size_t(headDim * kBc)), vt(size_t(headDim * kBc)),
        S(size_t(kBr * kBc)), dP(size_t(kBr * kBc)),
        dQ(size_t(kBr * headDim)), D(kBr);
    for (int64_t task = begin; task < end; ++task) {
      int64_t qt = task % qTiles, bh = task / qTiles;
      int64_t b = bh / heads, h = bh % heads, g = h / s.group();
      int64_t i0 = qt * kBr, br = std::min(kBr, seq - i0);
      auto qRow = [&](int64_t i) { return q + s.qOffset(b, i0 + i, h); };
      auto doRow = [&](int64_t i) { return dout + s.qOffset(b, i0 + i, h); };
      rowDots(dout, out, s, b, h, i0, br, D.data());
      std::fill(dQ.begin(), dQ.end(), 0.0f);
      for (int64_t j0 = 0; j0 < i0 + br; j0 += kBc) {
        int64_t bc = std::min(kBc, i0 + br - j0);
        transposeTile(k, s, b, g, j0, bc, kt.data());
        transposeTile(v, s, b, g, j0, bc, vt.data());
        tileProduct(qRow, br, kt.data(), bc, headDim, S.data());
        tileProduct(doRow, br, vt.data(), bc, headDim, dP.data());
        probabilitiesAndScoreGrads(S.data(), dP.data(),
                                   lse + s.lseOffset(b, h, i0), D.data(), i0,
                                   br, j0, bc, scale);
        for (int64_t i = 0; i < br; ++i) {
          float *dqi = dQ.data() + i * headDim;
          for (int64_t j = 0; j < bc; ++j) {
            float ds = dP[size_t(i * kBc + j)];
            if (ds == 0.0f)
              continue;
            const float *kj = k + s.kvOffset(b, j0 + j, g);
            for (int64_t dd = 0; dd < headDim; ++dd)
              dqi[dd] += ds * kj[dd];
          }
        }
      }
      for (int64_t i = 0; i < br; ++i) {
        float *dqi = dq + s.qOffset(b, i0 + i, h);
        for (int64_t dd = 0; dd < headDim; ++dd)
          dqi[dd] = scale * dQ[size_t(i * headDim + dd)];
      }
    }
  });
}

} // namespace cpu
} // namespace qlora
