//===- Optimizer.cpp - AdamW and the gradient norm --------------------------===//
//
// torch.optim.AdamW (default foreach path, capturable=False): the bias
// corrections and step size are Python doubles, used as fp32 scalars by fp32
// elementwise ops in torch's order, which this file replays per element.
// sumOfSquares feeds the global gradient-norm clipping.
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/Kernels.h"

#include "runtime/Parallel.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace qlora {
namespace cpu {

void adamw(float *param, const float *grad, float *m, float *v, int64_t n,
           float lr, float beta1, float beta2, float eps, float weightDecay,
           int64_t step) {
  double t = double(std::max<int64_t>(step, 1));
  double biasCorrection1 = 1.0 - std::pow(double(beta1), t);
  double biasCorrection2 = 1.0 - std::pow(double(beta2), t);
  float decay = float(1.0 - double(lr) * double(weightDecay));
  float lerpWeight = float(1.0 - double(beta1));
  float oneMinusBeta2 = float(1.0 - double(beta2));
  float negStepSize = float(-(double(lr) / biasCorrection1));
  float biasCorrection2Sqrt = float(std::sqrt(biasCorrection2));
  parallelFor(0, n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float g = grad[i];
      float p = param[i] * decay; // param.mul_(1 - lr * wd)
      // exp_avg.lerp_(grad, 1 - beta1), with torch's two-sided lerp.
      float mi = m[i];
      mi = lerpWeight < 0.5f ? mi + lerpWeight * (g - mi)
                             : g - (g - mi) * (1.0f - lerpWeight);
      // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
      float vi = v[i] * beta2;
      vi = vi + oneMinusBeta2 * g * g;
      // denom = sqrt(v) / sqrt(bc2) + eps; param.addcdiv_(m, denom, -step)
      float denom = std::sqrt(vi) / biasCorrection2Sqrt + eps;
      param[i] = p + negStepSize * (mi / denom);
      m[i] = mi;
      v[i] = vi;
    }
  });
}

double sumOfSquares(const float *x, int64_t n) {
  // Fixed blocks summed in order: the same double whatever the thread count.
  constexpr int64_t kBlock = 4096;
  int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(size_t(std::max<int64_t>(blocks, 0)), 0.0);
  parallelFor(0, blocks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      double sum = 0.0;
      for (int64_t i = block * kBlock; i < std::min(n, (block + 1) * kBlock); ++i)
        sum += double(x[i]) * double(x[i]);
      partial[size_t(block)] = sum;
    }
  });
  double total = 0.0;
  for (double value : partial)
    total += value;
  return total;
}

} // namespace cpu
} // namespace qlora
