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
#include "Timer.h"

#include "runtime/BnbFormat.h"
#include "runtime/Float16.h"
#include "runtime/cuda/AttentionKernels.h"
#include "runtime/cuda/CudnnAttention.h"
#include "runtime/cuda/DeviceNF4.h"
#include "runtime/cuda/TrainingKernels.h"
#include "runtime/cuda/NF4Kernels.h"

#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <cmath>
#include <random>

namespace qlora::bench {
namespace {

using cuda::DeviceBuffer;
using cuda::DeviceNF4;

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

/// The same attention shapes through cuDNN's fused kernels, where the
/// steps would use them (CudnnAttention.h); the line says which serves.
Status timeCudnnAttention(const Timer &timer, int repeats, int64_t seq,
                          int64_t heads, int64_t headDim, const uint16_t *q,
                          const uint16_t *k, const uint16_t *v, uint16_t *out,
                          const uint16_t *dout, float *lse, void *scratch,
                          uint16_t *dq, uint16_t *dk, uint16_t *dv,
                          cudaStream_t stream, double flops) {
  const float scale = 1.0f / std::sqrt(float(headDim));
  const AttentionShape mha{1, seq, heads, heads, headDim, scale};
  const AttentionShape gqa{1, seq, heads, heads / 4, headDim, scale};
  std::printf("attention in steps: %s\n",
              attentionImplementation(mha).c_str());
  bool ran = true;
  auto timed = [&](const AttentionShape &shape, bool backward) {
    return timer.afterFlush(repeats, [&]() -> Status {
      bool served = false;
      Status status =
          backward ? cudnnAttentionBackward(q, k, v, out, lse, dout, shape,
                                            static_cast<float *>(scratch), dq,
                                            dk, dv, stream, &served)
                   : cudnnAttentionForward(q, k, v, shape, out, lse, stream,
                                           &served);
      ran = ran && served;
      return status;
    });
  };
  Expected<double> forward = timed(mha, false);
  if (!forward)
    return forward.error();
  if (!ran)
    return Status::ok();
  Expected<double> backward = timed(mha, true);
  // The GQA backward's out and lse from its own forward, as above.
  Expected<double> gqaForward = timed(gqa, false);
  Expected<double> gqaBackward = timed(gqa, true);
  for (const Expected<double> *figure :
       {&backward, &gqaForward, &gqaBackward})
    if (!*figure)
      return figure->error();
  if (!ran)
    return makeError("cuDNN ran the MHA forward but declined another shape");
  std::printf("%-34s %10.1f %9.0f TF/s\n", "cuDNN attention forward",
              *forward * 1e3, flops / (*forward * 1e-3) / 1e12);
  std::printf("%-34s %10.1f %9.0f TF/s\n", "cuDNN attention backward",
              *backward * 1e3, 2.5 * flops / (*backward * 1e-3) / 1e12);
  std::printf("%-34s %10.1f %9.0f TF/s\n", "cuDNN attention backward, GQA",
              *gqaBackward * 1e3, 2.5 * flops / (*gqaBackward * 1e-3) / 1e12);
  return Status::ok();
}

/// Elementwise kernels against the copy bandwidth measured in the same run,
/// and attention in TFLOP/s, at the Llama-7B training shape: 4 x 2048
/// tokens, hidden 4096, MLP 11008, 32 heads of 128, vocab 32000.
Status benchTrainingKernels(int repeats, const Timer &timer) {
  cudaStream_t stream = timer.stream();
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
  QLORA_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());

  const size_t copyBytes = size_t(tokens * mlp * 2);
  Expected<double> copy = timer.afterFlush(repeats, [&]() -> Status {
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        d->data(), a->data(), copyBytes, cudaMemcpyDeviceToDevice, stream));
    return Status::ok();
  });
  if (!copy)
    return copy.error();
  double copyRate = 2.0 * double(copyBytes) / (*copy * 1e-3) / 1e9;
  std::printf("\nTraining kernels, 4 x 2048 tokens (Llama-7B shapes); copy "
              "bandwidth in this run: %.0f GB/s (read + write)\n",
              copyRate);
  // The host link the offloaded activations cross (qlora-rematerialize
  // plans with TargetDescription::hostLinkBytesPerSecond): one hidden-size
  // activation each way, to and from pinned memory.
  {
    const size_t linkBytes = size_t(tokens * hidden * 2);
    uint8_t *pinned = nullptr;
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaMallocHost(reinterpret_cast<void **>(&pinned), linkBytes));
    auto linkRate = [&](cudaMemcpyKind kind) -> Expected<double> {
      Expected<double> ms = timer.afterFlush(repeats, [&]() -> Status {
        void *dst = kind == cudaMemcpyDeviceToHost ? (void *)pinned
                                                   : (void *)d->data();
        const void *src = kind == cudaMemcpyDeviceToHost
                              ? (const void *)a->data()
                              : (const void *)pinned;
        QLORA_CUDA_RETURN_IF_ERROR(
            cudaMemcpyAsync(dst, src, linkBytes, kind, stream));
        return Status::ok();
      });
      if (!ms)
        return ms.error();
      return double(linkBytes) / (*ms * 1e-3) / 1e9;
    };
    Expected<double> down = linkRate(cudaMemcpyDeviceToHost);
    Expected<double> up = linkRate(cudaMemcpyHostToDevice);
    cudaFreeHost(pinned);
    if (!down)
      return down.error();
    if (!up)
      return up.error();
    std::printf("host link, pinned, %.0f MiB: device to host %.1f GB/s, "
                "host to device %.1f GB/s\n",
                double(linkBytes) / (1 << 20), *down, *up);
  }
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
                               d->data(), rstd->data(), stream);
       }},
      {"rms_norm backward", 3 * activation,
       [&] {
         return rmsNormBackward(a->data(), norm->data(), b->data(),
                                rstd->data(), tokens, hidden, d->data(),
                                stream);
       }},
      {"rope forward (32 x 128)", 2 * activation,
       [&] {
         return ropeForward(a->data(), batch, seq, heads, headDim, 10000.0f,
                            d->data(), stream);
       }},
      {"rope backward", 2 * activation,
       [&] {
         return ropeBackward(a->data(), batch, seq, heads, headDim, 10000.0f,
                             d->data(), stream);
       }},
      {"swiglu forward (MLP 11008)", 3 * wide,
       [&] {
         return swigluForward(a->data(), b->data(), tokens * mlp, d->data(),
                              stream);
       }},
      {"swiglu backward", 5 * wide,
       [&] {
         return swigluBackward(a->data(), b->data(), c->data(), tokens * mlp,
                               d->data(), e->data(), stream);
       }},
      {"cross-entropy fwd+bwd (fp32, 32000)", 2.0 * lossRows * vocab * 4,
       [&] {
         return crossEntropyAsync(logits->data(), labels->data(), lossRows,
                                  vocab, -100, 1.0f, logits->data(),
                                  rowLoss->data(), loss->data(),
                                  status->data(), stream);
       }},
  };
  for (Figure &figure : figures) {
    Expected<double> ms = timer.afterFlush(repeats, figure.body);
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
  Expected<double> forward = timer.afterFlush(repeats, [&] {
    return attentionForward(q, k, v, 1, seq, heads, heads, headDim, scale, out,
                            lse->data(), stream);
  });
  Expected<double> backward = timer.afterFlush(repeats, [&] {
    return attentionBackward(q, k, v, out, lse->data(), dout, 1, seq, heads,
                             heads, headDim, scale, scratch->data(), dq, dk,
                             dv, stream);
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
                                         stream));
  Expected<double> gqaBackward = timer.afterFlush(repeats, [&] {
    return attentionBackward(q, k, v, out, lse->data(), dout, 1, seq, heads,
                             kvHeads, headDim, scale, gqaScratch->data(), dq,
                             dk, dv, stream);
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
  return timeCudnnAttention(timer, repeats, seq, heads, headDim, q, k, v, out,
                            dout, lse->data(), scratch->data(), dq, dk, dv,
                            stream, flops);
}

/// The NF4 products we time, and what they compare against.
enum class Path { Gemv, SmallM, DequantGemm, Pipelined, Fused, GradInput };

struct Row {
  Path path;
  int64_t M;
  cuda::GemvTiling tiling = {};
  cuda::SmallMTiling smallM = {};
};

std::string figureName(const Row &row) {
  bool gradInput = row.path == Path::GradInput;
  std::string gemv = " (GEMV " + std::to_string(row.tiling.warpsPerRow) +
                     "w" + std::to_string(row.tiling.steps) + "s)";
  std::string smallM =
      " (tensor cores " + std::to_string(row.smallM.warps) + "w)";
  return std::string(gradInput ? "dX  " : "fwd ") +
         "M=" + std::to_string(row.M) +
         (row.path == Path::Gemv        ? gemv
          : row.path == Path::SmallM    ? smallM
          : row.path == Path::Pipelined ? " (pipelined)"
          : row.path == Path::Fused     ? " (fused wgmma)"
                                        : " (dequant+GEMM)");
}

/// Every product of one weight shape at each M: every GEMV tiling and the
/// small-M tensor-core kernel where they apply (so that the crossover is
/// measured), dequant+GEMM and its alternatives, then the input gradient.
std::vector<Row> rowsFor(const std::vector<int64_t> &ms, int64_t K) {
  std::vector<Row> rows;
  for (int64_t M : ms) {
    if (M <= 8)
      for (cuda::GemvTiling tiling : cuda::gemvTilings(M))
        rows.push_back({Path::Gemv, M, tiling});
    if (M <= 16 && K % 64 == 0)
      for (cuda::SmallMTiling tiling : cuda::smallMTilings())
        if (M <= 8 || tiling.warps == 8)
          rows.push_back({Path::SmallM, M, {}, tiling});
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
  return rows;
}

/// Products up to this M are also timed back to back over weight copies:
/// they are the decoding shapes, a few microseconds each.
constexpr int64_t kBackToBackMaxM = 16;
/// Runs in one back-to-back graph (rounded up to whole rounds of copies).
constexpr int kBackToBackRuns = 32;

/// One product's figures: once after a flush, and back to back where timed.
struct Timing {
  double once;
  std::optional<double> backToBack;
};

std::string formatUs(std::optional<double> ms) {
  char text[32];
  if (!ms)
    return "-";
  std::snprintf(text, sizeof(text), "%.1f", *ms * 1e3);
  return text;
}

std::string formatRatio(std::optional<double> reference,
                        std::optional<double> ours) {
  char text[32];
  if (!reference || !ours)
    return "-";
  std::snprintf(text, sizeof(text), "%.2fx", *reference / *ours);
  return text;
}

Status run(const std::vector<std::vector<int64_t>> &shapes, int repeats,
           L2Flush::Mode flushMode) {
  cudaDeviceProp properties;
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&properties, 0));
  Expected<Timer> timer = Timer::create(flushMode);
  if (!timer)
    return timer.error();
  cudaStream_t stream = timer->stream();
  std::printf(
      "GPU kernels on %s (%d SMs), median of %d runs; beside bf16 cuBLAS in "
      "the same run\n"
      "  once: one run after a %s L2 flush, between two events\n"
      "  b2b:  back to back in a CUDA graph, each run over the next of "
      "enough weight copies\n        to exceed the L2 twice (the steady "
      "cost per layer in decoding)\n",
      properties.name, properties.multiProcessorCount, repeats,
      L2Flush::name(flushMode));
  cublasHandle_t blas;
  if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS)
    return makeError("cublasCreate failed");
  if (cublasSetStream(blas, stream) != CUBLAS_STATUS_SUCCESS)
    return makeError("cublasSetStream failed");
  std::mt19937_64 random(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::vector<int64_t> ms = {1, 2, 4, 8, 16, 256, 4096, 8192};
  int64_t maxM = *std::max_element(ms.begin(), ms.end());

  std::printf("\n%-12s %-28s %9s %11s %9s %7s %9s %9s %7s\n", "shape NxK",
              "figure", "once us", "once", "cuBLAS", "ratio", "b2b us",
              "cuBLAS", "ratio");
  for (const std::vector<int64_t> &shape : shapes) {
    int64_t N = shape[0], K = shape[1];
    std::vector<uint16_t> values(N * K);
    for (uint16_t &value : values)
      value = floatToBf16(normal(random) * 0.02f);
    Expected<NF4Weight> weight =
        quantizeWeight(values.data(), ElementType::BF16, {N, K}, 64, true);
    if (!weight)
      return weight.error();
    // Copies of the weight, NF4 and bf16, for the back-to-back timings.
    const double nf4Bytes = double(weight->storageBytes());
    const double denseBytes = 2.0 * double(N * K);
    std::vector<DeviceNF4> nf4Copies;
    std::vector<DeviceBuffer<uint16_t>> denseCopies;
    for (int i = 0; i < timer->copiesToExceedL2(nf4Bytes); ++i) {
      Expected<DeviceNF4> device = DeviceNF4::upload(*weight);
      if (!device)
        return device.error();
      nf4Copies.push_back(device.take());
    }
    const cuda::NF4DeviceWeight &nf4 = nf4Copies.front().view;
    for (int i = 0; i < timer->copiesToExceedL2(denseBytes); ++i) {
      Expected<DeviceBuffer<uint16_t>> dense =
          DeviceBuffer<uint16_t>::allocate(N * K);
      if (!dense)
        return dense.error();
      QLORA_RETURN_IF_ERROR(
          cuda::dequantizeNF4(nf4, dense->data(), stream));
      denseCopies.push_back(dense.take());
    }
    Expected<DeviceBuffer<uint16_t>> scratch = DeviceBuffer<uint16_t>::allocate(N * K);
    std::vector<uint16_t> xs(maxM * std::max(N, K));
    for (uint16_t &x : xs)
      x = floatToBf16(normal(random));
    Expected<DeviceBuffer<uint16_t>> input = DeviceBuffer<uint16_t>::upload(xs);
    Expected<DeviceBuffer<uint16_t>> output =
        DeviceBuffer<uint16_t>::allocate(maxM * std::max(N, K));
    for (const Status &status :
         {scratch.status(), input.status(), output.status()})
      if (!status)
        return status;
    // Once after a flush and, where asked, back to back over the copies.
    auto measure = [&](bool backToBack, const std::function<Status(int)> &body,
                       int copies) -> Expected<Timing> {
      Expected<double> once =
          timer->afterFlush(repeats, [&] { return body(0); });
      if (!once)
        return once.error();
      if (!backToBack)
        return Timing{*once, std::nullopt};
      int runs = (kBackToBackRuns + copies - 1) / copies * copies;
      Expected<double> b2b = timer->backToBack(
          repeats, runs, [&](int run) { return body(run % copies); });
      if (!b2b)
        return b2b.error();
      return Timing{*once, *b2b};
    };
    const int nf4Count = int(nf4Copies.size());
    const int denseCount = int(denseCopies.size());

    std::string name = std::to_string(N) + "x" + std::to_string(K);
    auto dequant = measure(true, [&](int copy) {
      return cuda::dequantizeNF4(nf4Copies[copy].view, scratch->data(), stream);
    }, nf4Count);
    if (!dequant)
      return dequant.error();
    double bytes = nf4Bytes + denseBytes;
    std::printf("%-12s %-28s %9.1f %6.0f GB/s %9s %7s %9s %9s %7s   (b2b %.0f GB/s)\n",
                name.c_str(), "dequantize nf4+dq->bf16", dequant->once * 1e3,
                bytes / (dequant->once * 1e-3) / 1e9, "-", "-",
                formatUs(dequant->backToBack).c_str(), "-", "-",
                bytes / (*dequant->backToBack * 1e-3) / 1e9);

    // cuBLAS once per product and M, beside every row of ours.
    std::map<std::pair<bool, int64_t>, Timing> references;
    for (const Row &row : rowsFor(ms, K)) {
      bool gradInput = row.path == Path::GradInput;
      const int64_t M = row.M;
      const bool backToBack = M <= kBackToBackMaxM;
      auto cached = references.find({gradInput, M});
      if (cached == references.end()) {
        auto reference = measure(backToBack, [&](int copy) {
          return cublasBf16(blas, gradInput, M, N, K, denseCopies[copy].data(),
                            input->data(), output->data());
        }, denseCount);
        if (!reference)
          return reference.error();
        cached = references.emplace(std::make_pair(gradInput, M), *reference).first;
      }
      const Timing reference = cached->second;
      auto ours = measure(backToBack, [&](int copy) -> Status {
        const cuda::NF4DeviceWeight &w = nf4Copies[copy].view;
        switch (row.path) {
        case Path::Gemv:
          return cuda::nf4Gemv(input->data(), M, w, output->data(), stream,
                               row.tiling);
        case Path::SmallM:
          return cuda::nf4MatmulSmallM(input->data(), M, w, output->data(),
                                       stream, row.smallM);
        case Path::DequantGemm:
          return cuda::nf4MatmulDequantGemm(blas, input->data(), M, w,
                                            scratch->data(), output->data(),
                                            stream);
        case Path::Pipelined:
          return cuda::nf4MatmulDequantGemmPipelined(
              blas, input->data(), M, w, scratch->data(), output->data(),
              stream);
        case Path::Fused:
          return cuda::nf4MatmulFused(input->data(), M, w, output->data(),
                                      stream);
        case Path::GradInput:
          return cuda::nf4MatmulGradInput(blas, input->data(), M, w,
                                          scratch->data(), output->data(),
                                          stream);
        }
        return Status::ok();
      }, nf4Count);
      if (!ours)
        return ours.error();
      double flops = 2.0 * double(M) * double(N) * double(K);
      std::printf("%-12s %-28s %9.1f %6.1f TF/s %9.1f %6.2fx %9s %9s %7s\n",
                  name.c_str(), figureName(row).c_str(), ours->once * 1e3,
                  flops / (ours->once * 1e-3) / 1e12, reference.once * 1e3,
                  reference.once / ours->once,
                  formatUs(ours->backToBack).c_str(),
                  formatUs(reference.backToBack).c_str(),
                  formatRatio(reference.backToBack, ours->backToBack).c_str());
    }
  }
  cublasDestroy(blas);
  return benchTrainingKernels(repeats, *timer);
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
