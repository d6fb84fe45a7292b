//===- KernelBench.cpp - `qlora-bench kernels`: GPU figures -----------------===//
//
// Medians of CUDA-event timings after a warm-up, for the Llama-7B weight
// shapes: NF4 dequantization (effective GB/s: bytes read plus written), the
// forward product y = x·Wᵀ and the input gradient dX = dY·W at several M,
// each beside bf16 cuBLAS on a pre-dequantized weight. GEMV rows name their
// tiling: "2w4s" is 2 warps a row, 4 words loaded ahead (GemvTiling).
//
//===----------------------------------------------------------------------===//
#include "KernelBench.h"
#include "L2Flush.h"

#include "runtime/BnbFormat.h"
#include "runtime/Float16.h"
#include "runtime/cuda/AttentionKernels.h"
#include "runtime/cuda/DeviceNF4.h"
#include "runtime/cuda/TrainingKernels.h"
#include "runtime/cuda/NF4Kernels.h"

#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <cmath>
#include <random>

namespace qlora::bench {
namespace {

using cuda::DeviceBuffer;
using cuda::DeviceNF4;

/// Median milliseconds of `body` over `repeats` timed runs after 3 warm-ups,
/// each preceded by an L2 flush (L2Flush.h: which kind, and why it matters).
Expected<double> timeMs(int repeats, const L2Flush &flush,
                        const std::function<Status()> &body) {
  cudaEvent_t start, stop;
  QLORA_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  QLORA_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i)
    QLORA_RETURN_IF_ERROR(body());
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    QLORA_RETURN_IF_ERROR(flush.run());
    QLORA_CUDA_RETURN_IF_ERROR(cudaEventRecord(start));
    QLORA_RETURN_IF_ERROR(body());
    QLORA_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop));
    QLORA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
    float ms = 0.0f;
    QLORA_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

Status cublasBf16(cublasHandle_t blas, bool gradInput, int64_t M, int64_t N,
                  int64_t K, const uint16_t *w, const uint16_t *in,
                  uint16_t *out) {
  const float alpha = 1.0f, beta = 0.0f;
  cublasStatus_t status =
      gradInput
          ? cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, int(K), int(M), int(N),
                         &alpha, w, CUDA_R_16BF, int(K), in, CUDA_R_16BF,
                         int(N), &beta, out, CUDA_R_16BF, int(K),
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
          : cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K),
                         &alpha, w, CUDA_R_16BF, int(K), in, CUDA_R_16BF,
                         int(K), &beta, out, CUDA_R_16BF, int(N),
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  return cuda::cublasStatus(status, "cublasGemmEx", __FILE__, __LINE__);
}

using namespace ::qlora::cuda;

/// Elementwise kernels against the copy bandwidth measured in the same run,
/// and attention in TFLOP/s, at the Llama-7B training shape: 4 x 2048
/// tokens, hidden 4096, MLP 11008, 32 heads of 128, vocab 32000.
Status benchTrainingKernels(int repeats, const L2Flush &flush) {
  const int64_t batch = 4, seq = 2048, tokens = batch * seq;
  const int64_t hidden = 4096, mlp = 11008, heads = 32, headDim = 128;
  const int64_t vocab = 32000, lossRows = 2048;
  std::mt19937_64 random(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto randomBf16 = [&](int64_t n) {
    std::vector<uint16_t> values(n);
    for (uint16_t &value : values)
      value = floatToBf16(normal(random));
    return DeviceBuffer<uint16_t>::upload(values);
  };
  Expected<DeviceBuffer<uint16_t>> a = randomBf16(tokens * mlp);
  Expected<DeviceBuffer<uint16_t>> b = randomBf16(tokens * mlp);
  Expected<DeviceBuffer<uint16_t>> c = randomBf16(tokens * mlp);
  Expected<DeviceBuffer<uint16_t>> d = DeviceBuffer<uint16_t>::allocate(tokens * mlp);
  Expected<DeviceBuffer<uint16_t>> e = DeviceBuffer<uint16_t>::allocate(tokens * mlp);
  Expected<DeviceBuffer<uint16_t>> norm = randomBf16(hidden);
  Expected<DeviceBuffer<float>> rstd = DeviceBuffer<float>::allocate(tokens);
  Expected<DeviceBuffer<float>> logits =
      DeviceBuffer<float>::allocate(lossRows * vocab);
  Expected<DeviceBuffer<float>> rowLoss = DeviceBuffer<float>::allocate(lossRows);
  Expected<DeviceBuffer<float>> loss = DeviceBuffer<float>::allocate(1);
  Expected<DeviceBuffer<int32_t>> status =
      DeviceBuffer<int32_t>::allocate(kCrossEntropyStatusWords);
  std::vector<int32_t> hostLabels(lossRows);
  for (int64_t i = 0; i < lossRows; ++i)
    hostLabels[i] = int32_t((i * 7919) % vocab);
  Expected<DeviceBuffer<int32_t>> labels =
      DeviceBuffer<int32_t>::upload(hostLabels);
  for (const Status &s : {a.status(), b.status(), c.status(), d.status(),
                          e.status(), norm.status(), rstd.status(),
                          logits.status(), rowLoss.status(), loss.status(),
                          status.status(), labels.status()})
    if (!s)
      return s;
  QLORA_CUDA_RETURN_IF_ERROR(
      cudaMemset(logits->data(), 0, lossRows * vocab * sizeof(float)));

  const size_t copyBytes = size_t(tokens * mlp * 2);
  Expected<double> copy = timeMs(repeats, flush, [&]() -> Status {
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        d->data(), a->data(), copyBytes, cudaMemcpyDeviceToDevice));
    return Status::ok();
  });
  if (!copy)
    return copy.error();
  double copyRate = 2.0 * double(copyBytes) / (*copy * 1e-3) / 1e9;
  std::printf("\nTraining kernels, 4 x 2048 tokens (Llama-7B shapes); copy "
              "bandwidth in this run: %.0f GB/s (read + write)\n",
              copyRate);
  std::printf("%-34s %10s %12s %12s\n", "kernel", "us", "GB/s", "of copy");
  struct Figure {
    const char *name;
    double bytes;
    std::function<Status()> body;
  };
  const double activation = double(tokens * hidden * 2);
  const double wide = double(tokens * mlp * 2);
  std::vector<Figure> figures = {
      {"rms_norm forward (hidden 4096)", 2 * activation,
       [&] {
         return rmsNormForward(a->data(), norm->data(), tokens, hidden, 1e-5f,
                               d->data(), rstd->data(), nullptr);
       }},
      {"rms_norm backward", 3 * activation,
       [&] {
         return rmsNormBackward(a->data(), norm->data(), b->data(),
                                rstd->data(), tokens, hidden, d->data(),
                                nullptr);
       }},
      {"rope forward (32 x 128)", 2 * activation,
       [&] {
         return ropeForward(a->data(), batch, seq, heads, headDim, 10000.0f,
                            d->data(), nullptr);
       }},
      {"rope backward", 2 * activation,
       [&] {
         return ropeBackward(a->data(), batch, seq, heads, headDim, 10000.0f,
                             d->data(), nullptr);
       }},
      {"swiglu forward (MLP 11008)", 3 * wide,
       [&] {
         return swigluForward(a->data(), b->data(), tokens * mlp, d->data(),
                              nullptr);
       }},
      {"swiglu backward", 5 * wide,
       [&] {
         return swigluBackward(a->data(), b->data(), c->data(), tokens * mlp,
                               d->data(), e->data(), nullptr);
       }},
      {"cross-entropy fwd+bwd (fp32, 32000)", 2.0 * lossRows * vocab * 4,
       [&] {
         return crossEntropyAsync(logits->data(), labels->data(), lossRows,
                                  vocab, -100, 1.0f, logits->data(),
                                  rowLoss->data(), loss->data(),
                                  status->data(), nullptr);
       }},
  };
  for (Figure &figure : figures) {
    Expected<double> ms = timeMs(repeats, flush, figure.body);
    if (!ms)
      return ms.error();
    double rate = figure.bytes / (*ms * 1e-3) / 1e9;
    std::printf("%-34s %10.1f %12.0f %11.0f%%\n", figure.name, *ms * 1e3,
                rate, 100.0 * rate / copyRate);
  }

  // Causal attention at seq 2048, one sequence, 32 heads of 128.
  const int64_t attnTokens = seq * heads * headDim;
  Expected<DeviceBuffer<float>> lse = DeviceBuffer<float>::allocate(seq * heads);
  Expected<DeviceBuffer<uint8_t>> scratch = DeviceBuffer<uint8_t>::allocate(
      attentionBackwardScratchBytes(1, seq, heads, heads, headDim));
  if (!lse || !scratch)
    return lse ? scratch.error() : lse.error();
  const uint16_t *q = a->data(), *k = a->data() + attnTokens,
                 *v = a->data() + 2 * attnTokens, *dout = b->data();
  uint16_t *out = c->data(), *dq = d->data(), *dk = e->data(),
           *dv = e->data() + attnTokens;
  const float scale = 1.0f / std::sqrt(float(headDim));
  Expected<double> forward = timeMs(repeats, flush, [&] {
    return attentionForward(q, k, v, 1, seq, heads, heads, headDim, scale, out,
                            lse->data(), nullptr);
  });
  Expected<double> backward = timeMs(repeats, flush, [&] {
    return attentionBackward(q, k, v, out, lse->data(), dout, 1, seq, heads,
                             heads, headDim, scale, scratch->data(), dq, dk,
                             dv, nullptr);
  });
  if (!forward || !backward)
    return forward ? backward.error() : forward.error();
  // GQA 32:8 (Llama-3 / Mistral heads), where one sequence gives only 256
  // key-block CTAs and the backward splits each group over several.
  const int64_t kvHeads = heads / 4;
  Expected<DeviceBuffer<uint8_t>> gqaScratch = DeviceBuffer<uint8_t>::allocate(
      attentionBackwardScratchBytes(1, seq, heads, kvHeads, headDim));
  if (!gqaScratch)
    return gqaScratch.error();
  // The backward's out and lse from this GQA forward, untimed.
  QLORA_RETURN_IF_ERROR(attentionForward(q, k, v, 1, seq, heads, kvHeads,
                                         headDim, scale, out, lse->data(),
                                         nullptr));
  Expected<double> gqaBackward = timeMs(repeats, flush, [&] {
    return attentionBackward(q, k, v, out, lse->data(), dout, 1, seq, heads,
                             kvHeads, headDim, scale, gqaScratch->data(), dq,
                             dk, dv, nullptr);
  });
  if (!gqaBackward)
    return gqaBackward.error();
  // Causal: half of the 4 * seq^2 * headDim * heads of the full products.
  double flops = 2.0 * double(seq) * double(seq) * double(headDim * heads);
  std::printf("%-34s %10.1f %9.0f TF/s\n", "attention forward (seq 2048)",
              *forward * 1e3, flops / (*forward * 1e-3) / 1e12);
  std::printf("%-34s %10.1f %9.0f TF/s\n", "attention backward",
              *backward * 1e3, 2.5 * flops / (*backward * 1e-3) / 1e12);
  std::printf("%-34s %10.1f %9.0f TF/s (%lld-way head split)\n",
              "attention backward, GQA 32:8", *gqaBackward * 1e3,
              2.5 * flops / (*gqaBackward * 1e-3) / 1e12,
              (long long)attentionBackwardSplits(1, seq, heads, kvHeads));
  return Status::ok();
}

Status run(const std::vector<std::vector<int64_t>> &shapes, int repeats,
           L2Flush::Mode flushMode) {
  cudaDeviceProp properties;
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&properties, 0));
  std::printf("GPU kernels on %s (%d SMs), median of %d runs, each after a "
              "%s L2 flush; beside bf16 cuBLAS in the same run\n",
              properties.name, properties.multiProcessorCount, repeats,
              L2Flush::name(flushMode));
  Expected<L2Flush> flush = L2Flush::create(flushMode);
  if (!flush)
    return flush.error();
  cublasHandle_t blas;
  if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS)
    return makeError("cublasCreate failed");
  std::mt19937_64 random(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::vector<int64_t> ms = {1, 2, 4, 8, 16, 256, 4096, 8192};
  int64_t maxM = *std::max_element(ms.begin(), ms.end());

  std::printf("\n%-12s %-26s %10s %12s %12s %10s\n", "shape NxK", "figure",
              "ours us", "ours", "cuBLAS us", "ratio");
  for (const std::vector<int64_t> &shape : shapes) {
    int64_t N = shape[0], K = shape[1];
    std::vector<uint16_t> values(N * K);
    for (uint16_t &value : values)
      value = floatToBf16(normal(random) * 0.02f);
    Expected<NF4Weight> weight =
        quantizeWeight(values.data(), ElementType::BF16, {N, K}, 64, true);
    if (!weight)
      return weight.error();
    Expected<DeviceNF4> device = DeviceNF4::upload(*weight);
    if (!device)
      return device.error();
    Expected<DeviceBuffer<uint16_t>> dense = DeviceBuffer<uint16_t>::allocate(N * K);
    Expected<DeviceBuffer<uint16_t>> scratch = DeviceBuffer<uint16_t>::allocate(N * K);
    std::vector<uint16_t> xs(maxM * std::max(N, K));
    for (uint16_t &x : xs)
      x = floatToBf16(normal(random));
    Expected<DeviceBuffer<uint16_t>> input = DeviceBuffer<uint16_t>::upload(xs);
    Expected<DeviceBuffer<uint16_t>> output =
        DeviceBuffer<uint16_t>::allocate(maxM * std::max(N, K));
    for (const Status &status : {dense.status(), scratch.status(),
                                 input.status(), output.status()})
      if (!status)
        return status;
    QLORA_RETURN_IF_ERROR(cuda::dequantizeNF4(device->view, dense->data(), nullptr));

    std::string name = std::to_string(N) + "x" + std::to_string(K);
    Expected<double> dequant = timeMs(repeats, *flush, [&] {
      return cuda::dequantizeNF4(device->view, scratch->data(), nullptr);
    });
    if (!dequant)
      return dequant.error();
    double bytes = double(weight->storageBytes()) + 2.0 * double(N * K);
    std::printf("%-12s %-26s %10.1f %9.0f GB/s %12s %10s\n", name.c_str(),
                "dequantize nf4+dq->bf16", *dequant * 1e3,
                bytes / (*dequant * 1e-3) / 1e9, "-", "-");

    // Forward by both strategies where both apply (small M), so that the
    // crossover is measured; then the input gradient.
    enum class Path { Gemv, SmallM, DequantGemm, Pipelined, Fused, GradInput };
    struct Row {
      Path path;
      int64_t M;
      cuda::GemvTiling tiling = {};
    };
    std::vector<Row> rows;
    for (int64_t M : ms) {
      // Every GEMV tiling, so that the best one per shape is measured.
      if (M <= 8)
        for (cuda::GemvTiling tiling : cuda::gemvTilings(M))
          rows.push_back({Path::Gemv, M, tiling});
      if (M <= 16 && K % 64 == 0)
        rows.push_back({Path::SmallM, M});
      rows.push_back({Path::DequantGemm, M});
      if (M >= 256)
        rows.push_back({Path::Pipelined, M});
      if (M >= 256 && K % 64 == 0 && cuda::haveFusedNF4Matmul())
        rows.push_back({Path::Fused, M});
    }
    // The input gradient at every M, as the forward (training runs it at
    // large M; small M shows what the dequantization alone costs).
    for (int64_t M : ms)
      rows.push_back({Path::GradInput, M});
    // cuBLAS once per product and M, beside every row of ours.
    std::map<std::pair<bool, int64_t>, double> references;
    for (const Row &row : rows) {
      bool gradInput = row.path == Path::GradInput;
      int64_t M = row.M;
      auto [cached, fresh] = references.try_emplace({gradInput, M}, 0.0);
      if (fresh) {
        Expected<double> reference = timeMs(repeats, *flush, [&] {
          return cublasBf16(blas, gradInput, M, N, K, dense->data(),
                            input->data(), output->data());
        });
        if (!reference)
          return reference.error();
        cached->second = *reference;
      }
      const double reference = cached->second;
      Expected<double> ours = timeMs(repeats, *flush, [&]() -> Status {
        switch (row.path) {
        case Path::Gemv:
          return cuda::nf4Gemv(input->data(), M, device->view, output->data(),
                               nullptr, row.tiling);
        case Path::SmallM:
          return cuda::nf4MatmulSmallM(input->data(), M, device->view,
                                       output->data(), nullptr);
        case Path::DequantGemm:
          return cuda::nf4MatmulDequantGemm(blas, input->data(), M,
                                            device->view, scratch->data(),
                                            output->data(), nullptr);
        case Path::Pipelined:
          return cuda::nf4MatmulDequantGemmPipelined(
              blas, input->data(), M, device->view, scratch->data(),
              output->data(), nullptr);
        case Path::Fused:
          return cuda::nf4MatmulFused(input->data(), M, device->view,
                                      output->data(), nullptr);
        case Path::GradInput:
          return cuda::nf4MatmulGradInput(blas, input->data(), M, device->view,
                                          scratch->data(), output->data(),
                                          nullptr);
        }
        return Status::ok();
      });
      if (!ours)
        return ours.error();
      double flops = 2.0 * double(M) * double(N) * double(K);
      std::string gemv = " (GEMV " + std::to_string(row.tiling.warpsPerRow) +
                         "w" + std::to_string(row.tiling.steps) + "s)";
      std::string figure =
          std::string(gradInput ? "dX  " : "fwd ") + "M=" + std::to_string(M) +
          (row.path == Path::Gemv        ? gemv
           : row.path == Path::SmallM    ? " (tensor cores)"
           : row.path == Path::Pipelined ? " (pipelined)"
           : row.path == Path::Fused     ? " (fused wgmma)"
                                         : " (dequant+GEMM)");
      std::printf("%-12s %-26s %10.1f %8.1f TF/s %12.1f %9.2fx\n",
                  name.c_str(), figure.c_str(), *ours * 1e3,
                  flops / (*ours * 1e-3) / 1e12, reference * 1e3,
                  reference / *ours);
    }
  }
  cublasDestroy(blas);
  return benchTrainingKernels(repeats, *flush);
}

} // namespace

int runKernelBench(const std::vector<std::vector<int64_t>> &shapes,
                   int repeats, L2Flush::Mode flushMode) {
  if (!cuda::haveCudaDevice()) {
    std::fprintf(stderr, "qlora-bench: no CUDA device; the kernels benchmark "
                         "needs a GPU\n");
    return 1;
  }
  Status status = run(shapes, repeats, flushMode);
  if (!status) {
    std::fprintf(stderr, "qlora-bench: error: %s\n", status.message().c_str());
    return 1;
  }
  return 0;
}

} // namespace qlora::bench
