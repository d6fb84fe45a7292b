//===- AttentionTest.cpp - Causal GQA attention against float64 -------------===//
//
// A direct float64 softmax(q k^T * scale) v with the causal mask, its
// analytic backward, and finite differences of the float64 forward. Shapes
// cover several query and key tiles, partial tiles and GQA.
//
//===----------------------------------------------------------------------===//
#include "KernelTestUtil.h"

#include "runtime/Parallel.h"
#include "runtime/cpu/Kernels.h"

#include <cstring>

namespace qlora {
namespace cpu {
namespace {

using namespace testing;

struct AttentionShape {
  int64_t batch, seq, heads, kvHeads, headDim;
};

void PrintTo(const AttentionShape &s, std::ostream *os) {
  *os << "batch " << s.batch << " seq " << s.seq << " heads " << s.heads << "/"
      << s.kvHeads << " headDim " << s.headDim;
}

struct Grads {
  std::vector<double> dq, dk, dv;
};

/// Forward (out, lse) and, when dout is given, the backward, in float64.
struct Reference {
  std::vector<double> out, lse;
  Grads grads;
};

Reference attentionReference(const std::vector<double> &q,
                             const std::vector<double> &k,
                             const std::vector<double> &v,
                             const AttentionShape &s, double scale,
                             const std::vector<float> *dout = nullptr) {
  int64_t d = s.headDim, group = s.heads / s.kvHeads;
  Reference ref;
  ref.out.assign(q.size(), 0.0);
  ref.lse.assign(size_t(s.batch * s.heads * s.seq), 0.0);
  if (dout) {
    ref.grads.dq.assign(q.size(), 0.0);
    ref.grads.dk.assign(k.size(), 0.0);
    ref.grads.dv.assign(v.size(), 0.0);
  }
  auto qAt = [&](int64_t b, int64_t i, int64_t h) {
    return size_t(((b * s.seq + i) * s.heads + h) * d);
  };
  auto kvAt = [&](int64_t b, int64_t j, int64_t g) {
    return size_t(((b * s.seq + j) * s.kvHeads + g) * d);
  };
  std::vector<double> p(size_t(s.seq)), dp(size_t(s.seq));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      int64_t g = h / group;
      for (int64_t i = 0; i < s.seq; ++i) {
        double max = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0.0;
          for (int64_t e = 0; e < d; ++e)
            dot += q[qAt(b, i, h) + size_t(e)] * k[kvAt(b, j, g) + size_t(e)];
          p[size_t(j)] = dot * scale;
          max = std::max(max, p[size_t(j)]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j)
          sum += std::exp(p[size_t(j)] - max);
        ref.lse[size_t((b * s.heads + h) * s.seq + i)] = max + std::log(sum);
        for (int64_t j = 0; j <= i; ++j) {
          p[size_t(j)] = std::exp(p[size_t(j)] - max) / sum;
          for (int64_t e = 0; e < d; ++e)
            ref.out[qAt(b, i, h) + size_t(e)] +=
                p[size_t(j)] * v[kvAt(b, j, g) + size_t(e)];
        }
        if (!dout)
          continue;
        // dp_j = dO . v_j; ds_j = p_j (dp_j - sum_l p_l dp_l).
        double weighted = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0.0;
          for (int64_t e = 0; e < d; ++e)
            dot += double((*dout)[qAt(b, i, h) + size_t(e)]) *
                   v[kvAt(b, j, g) + size_t(e)];
          dp[size_t(j)] = dot;
          weighted += p[size_t(j)] * dot;
        }
        for (int64_t j = 0; j <= i; ++j) {
          double ds = p[size_t(j)] * (dp[size_t(j)] - weighted);
          for (int64_t e = 0; e < d; ++e) {
            ref.grads.dq[qAt(b, i, h) + size_t(e)] +=
                scale * ds * k[kvAt(b, j, g) + size_t(e)];
            ref.grads.dk[kvAt(b, j, g) + size_t(e)] +=
                scale * ds * q[qAt(b, i, h) + size_t(e)];
            ref.grads.dv[kvAt(b, j, g) + size_t(e)] +=
                p[size_t(j)] * double((*dout)[qAt(b, i, h) + size_t(e)]);
          }
        }
      }
    }
  return ref;
}

class AttentionTest : public ::testing::TestWithParam<AttentionShape> {
protected:
  void SetUp() override {
    const AttentionShape &s = GetParam();
    size_t qSize = size_t(s.batch * s.seq * s.heads * s.headDim);
    size_t kvSize = size_t(s.batch * s.seq * s.kvHeads * s.headDim);
    // Spread of 2 makes the softmax far from uniform.
    q = randomVector(qSize, 1, -2.0f, 2.0f);
    k = randomVector(kvSize, 2, -2.0f, 2.0f);
    v = randomVector(kvSize, 3);
    scale = 1.0f / std::sqrt(float(s.headDim));
  }
  std::vector<float> q, k, v;
  float scale = 1.0f;
};

TEST_P(AttentionTest, ForwardMatchesFloat64) {
  const AttentionShape &s = GetParam();
  std::vector<float> out = poisoned(q.size());
  std::vector<float> lse = poisoned(size_t(s.batch * s.heads * s.seq));
  attention(q.data(), k.data(), v.data(), s.batch, s.seq, s.heads, s.kvHeads,
            s.headDim, scale, out.data(), lse.data());
  Reference ref = attentionReference(toDouble(q), toDouble(k), toDouble(v), s, scale);
  EXPECT_LT(relativeError(out, ref.out), 1e-4);
  EXPECT_LT(relativeError(lse, ref.lse), 1e-5);
}

TEST_P(AttentionTest, BackwardMatchesFloat64AndFiniteDifferences) {
  const AttentionShape &s = GetParam();
  std::vector<float> out(q.size()), lse(size_t(s.batch * s.heads * s.seq));
  attention(q.data(), k.data(), v.data(), s.batch, s.seq, s.heads, s.kvHeads,
            s.headDim, scale, out.data(), lse.data());
  std::vector<float> dout = randomVector(q.size(), 4);
  std::vector<float> dq = poisoned(q.size()), dk = poisoned(k.size()),
                     dv = poisoned(v.size());
  attentionBackward(q.data(), k.data(), v.data(), out.data(), lse.data(),
                    dout.data(), s.batch, s.seq, s.heads, s.kvHeads, s.headDim,
                    scale, dq.data(), dk.data(), dv.data());
  std::vector<double> qd = toDouble(q), kd = toDouble(k), vd = toDouble(v);
  Reference ref = attentionReference(qd, kd, vd, s, scale, &dout);
  EXPECT_LT(relativeError(dq, ref.grads.dq), 1e-4);
  EXPECT_LT(relativeError(dk, ref.grads.dk), 1e-4);
  EXPECT_LT(relativeError(dv, ref.grads.dv), 1e-4);

  auto loss = [&](const std::vector<double> &qv, const std::vector<double> &kv,
                  const std::vector<double> &vv) {
    return project(attentionReference(qv, kv, vv, s, scale).out, dout);
  };
  expectFiniteDifferences("dq", dq.data(), qd,
                          [&](const std::vector<double> &x) { return loss(x, kd, vd); },
                          4, 5);
  expectFiniteDifferences("dk", dk.data(), kd,
                          [&](const std::vector<double> &x) { return loss(qd, x, vd); },
                          4, 6);
  expectFiniteDifferences("dv", dv.data(), vd,
                          [&](const std::vector<double> &x) { return loss(qd, kd, x); },
                          4, 7);
}

TEST_P(AttentionTest, ResultsDoNotDependOnTheThreadCount) {
  const AttentionShape &s = GetParam();
  size_t lseSize = size_t(s.batch * s.heads * s.seq);
  std::vector<float> dout = randomVector(q.size(), 8);
  std::vector<std::vector<float>> results[2];
  for (int run = 0; run < 2; ++run) {
    setNumThreads(run == 0 ? 1 : 3);
    std::vector<float> out(q.size()), lse(lseSize), dq(q.size()), dk(k.size()),
        dv(v.size());
    attention(q.data(), k.data(), v.data(), s.batch, s.seq, s.heads, s.kvHeads,
              s.headDim, scale, out.data(), lse.data());
    attentionBackward(q.data(), k.data(), v.data(), out.data(), lse.data(),
                      dout.data(), s.batch, s.seq, s.heads, s.kvHeads,
                      s.headDim, scale, dq.data(), dk.data(), dv.data());
    results[run] = {out, lse, dq, dk, dv};
  }
  setNumThreads(0);
  for (size_t t = 0; t < results[0].size(); ++t)
    EXPECT_EQ(0, std::memcmp(results[0][t].data(), results[1][t].data(),
                             results[0][t].size() * sizeof(float)))
        << "output " << t;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(AttentionShape{2, 64, 4, 2, 64},  // tiny-llama, GQA
                      AttentionShape{2, 37, 4, 2, 64},  // partial tiles
                      AttentionShape{1, 100, 2, 2, 16}, // several key tiles
                      AttentionShape{1, 1, 3, 1, 8}));  // one token, 3 per kv

} // namespace
} // namespace cpu
} // namespace qlora
