//===- CudaStep.cpp - What generated cuda training steps call ---------------===//
//
// Each function turns the step's constant offsets into typed device
// pointers and enqueues a library kernel (runtime/cuda) on the context's
// stream. Host code only.
//
//===----------------------------------------------------------------------===//
#include "runtime/step/CudaStep.h"

#include "runtime/cuda/AttentionKernels.h"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/CudnnAttention.h"
#include "runtime/cuda/Gemm.h"
#include "runtime/cuda/LmHeadLoss.h"
#include "runtime/cuda/LoraGemm.h"
#include "runtime/cuda/NF4Kernels.h"
#include "runtime/cuda/StepKernels.h"
#include "runtime/cuda/TrainingKernels.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace qlora::cuda_step {
namespace {

template <typename T> T *at(StepContext *c, int64_t offset) {
  return reinterpret_cast<T *>(c->arena + offset);
}
uint16_t *bf16(StepContext *c, int64_t offset) {
  return at<uint16_t>(c, offset);
}
float *f32(StepContext *c, int64_t offset) { return at<float>(c, offset); }
int32_t *i32(StepContext *c, int64_t offset) { return at<int32_t>(c, offset); }
cudaStream_t stream(StepContext *c) {
  return static_cast<cudaStream_t>(c->stream);
}
cublasHandle_t blas(StepContext *c) {
  return static_cast<cublasHandle_t>(c->blas);
}

/// Records a failed launch (later calls do nothing), and the end of the
/// kernel's work for the profiler.
void check(StepContext *c, const Status &status, const char *kernel) {
  if (!status)
    c->fail(std::string(kernel) + ": " + status.message());
  else if (c->profiler)
    c->profiler->mark(kernel, c->stream);
}

int log2Exact(int64_t value) {
  int shift = 0;
  while ((int64_t(1) << shift) < value)
    ++shift;
  return shift;
}

/// The library's view of an NF4 weight in the arena.
cuda::NF4DeviceWeight weightOf(StepContext *c, const NF4Parts &w) {
  cuda::NF4DeviceWeight view;
  view.packed = at<uint8_t>(c, w.codes);
  if (w.absmax >= 0)
    view.absmax = f32(c, w.absmax);
  if (w.absmaxCodes >= 0) {
    view.absmaxCodes = at<uint8_t>(c, w.absmaxCodes);
    view.absmaxScales = f32(c, w.absmaxScales);
    view.offsetOnDevice = f32(c, w.absmaxOffset);
    view.dqBlockSize = w.dqBlockSize;
  }
  view.rows = w.rows;
  view.cols = w.cols;
  view.blockSize = w.blockSize;
  view.blockShift = log2Exact(w.blockSize);
  view.dqBlockShift = log2Exact(view.dqBlockSize);
  return view;
}

} // namespace

int runEntry(QLoRAStepContext *host, void (*body)(StepContext *)) {
  if (!step_abi::accepts(host))
    return 2;
  StepContext context;
  context.arena = host->arena;
  context.stream = host->stream;
  context.blas = host->blas;
  context.profiler = static_cast<StepProfiler *>(host->profiler);
  context.hostArena = host->host_arena;
  context.hostArenaBytes = host->host_arena_bytes;
  context.copyStream = host->copy_stream;
  context.events = host->events;
  context.transfers = host->transfers;
  if (context.profiler)
    context.profiler->mark("start", context.stream);
  Status bound =
      blas(&context)
          ? cuda::cublasStatus(cublasSetStream(blas(&context), stream(&context)),
                               "cublasSetStream", __FILE__, __LINE__)
          : Status::ok();
  check(&context, bound, "the step's cuBLAS handle");
  if (!context.failed())
    body(&context);
  if (!context.failed())
    return 0;
  step_abi::reportError(host, context.error);
  return 1;
}

void finishLaunch(StepContext *c, const char *kernel) {
  check(c,
        cuda::cudaStatus(cudaGetLastError(), kernel, __FILE__, __LINE__),
        kernel);
}

// --- Elementwise and data movement -------------------------------------------

void fillF32(StepContext *c, int64_t out, int64_t n, float value) {
  if (!c->failed())
    check(c, cuda::fillF32(f32(c, out), n, value, stream(c)), "fillF32");
}

namespace {

/// Checks that a transfer fits the host arena and has its events.
bool transferArgs(StepContext *c, int64_t hostOffset, int64_t bytes,
                  int64_t transfer, const char *kernel) {
  if (c->failed())
    return false;
  if (!c->hostArena || !c->copyStream || !c->events || transfer < 0 ||
      uint64_t(transfer) >= c->transfers || hostOffset < 0 || bytes < 0 ||
      uint64_t(hostOffset) + uint64_t(bytes) > c->hostArenaBytes) {
    c->fail(std::string(kernel) + ": the host has no host arena, copy stream "
                                  "or events for transfer " +
            std::to_string(transfer));
    return false;
  }
  return true;
}

cudaEvent_t startEvent(StepContext *c, int64_t transfer) {
  return static_cast<cudaEvent_t>(c->events[2 * transfer]);
}
cudaEvent_t endEvent(StepContext *c, int64_t transfer) {
  return static_cast<cudaEvent_t>(c->events[2 * transfer + 1]);
}

/// `from` reaches this point of its work, then `to` waits for it.
void join(StepContext *c, cudaEvent_t event, cudaStream_t from,
          cudaStream_t to, const char *kernel) {
  check(c, cuda::cudaStatus(cudaEventRecord(event, from), "cudaEventRecord",
                            __FILE__, __LINE__),
        kernel);
  if (!c->failed())
    check(c, cuda::cudaStatus(cudaStreamWaitEvent(to, event, 0),
                              "cudaStreamWaitEvent", __FILE__, __LINE__),
          kernel);
}

/// One copy on the copy stream, after the step's work so far; its end
/// event marks the copy alone.
void transfer(StepContext *c, void *dst, const void *src, int64_t bytes,
              cudaMemcpyKind kind, int64_t index, const char *kernel) {
  cudaStream_t copies = static_cast<cudaStream_t>(c->copyStream);
  join(c, startEvent(c, index), stream(c), copies, kernel);
  if (!c->failed())
    check(c, cuda::cudaStatus(cudaMemcpyAsync(dst, src, size_t(bytes), kind,
                                              copies),
                              "cudaMemcpyAsync", __FILE__, __LINE__),
          kernel);
  if (!c->failed())
    check(c, cuda::cudaStatus(cudaEventRecord(endEvent(c, index), copies),
                              "cudaEventRecord", __FILE__, __LINE__),
          kernel);
}

/// The step's stream waits for transfer `index`'s copy.
void waitForTransfer(StepContext *c, int64_t index, const char *kernel) {
  if (transferArgs(c, 0, 0, index, kernel))
    check(c, cuda::cudaStatus(cudaStreamWaitEvent(stream(c),
                                                  endEvent(c, index), 0),
                              "cudaStreamWaitEvent", __FILE__, __LINE__),
          kernel);
}

} // namespace

void offload(StepContext *c, int64_t src, int64_t bytes, int64_t hostOffset,
             int64_t index) {
  if (transferArgs(c, hostOffset, bytes, index, "offload"))
    transfer(c, c->hostArena + hostOffset, at<uint8_t>(c, src), bytes,
             cudaMemcpyDeviceToHost, index, "offload");
}

void reload(StepContext *c, int64_t hostOffset, int64_t bytes, int64_t dst,
            int64_t index) {
  if (transferArgs(c, hostOffset, bytes, index, "reload"))
    transfer(c, at<uint8_t>(c, dst), c->hostArena + hostOffset, bytes,
             cudaMemcpyHostToDevice, index, "reload");
}

void offloadWait(StepContext *c, int64_t index) {
  waitForTransfer(c, index, "offloadWait");
}

void reloadWait(StepContext *c, int64_t index) {
  waitForTransfer(c, index, "reloadWait");
}

void copy(StepContext *c, int64_t src, int64_t bytes, int64_t dst) {
  if (c->failed() || src == dst)
    return;
  check(c,
        cuda::cudaStatus(cudaMemcpyAsync(at<uint8_t>(c, dst),
                                         at<uint8_t>(c, src), size_t(bytes),
                                         cudaMemcpyDeviceToDevice, stream(c)),
                         "cudaMemcpyAsync", __FILE__, __LINE__),
        "copy");
}

void addF32(StepContext *c, int64_t a, int64_t b, int64_t n, int64_t out) {
  if (!c->failed())
    check(c, cuda::addF32(f32(c, a), f32(c, b), n, f32(c, out), stream(c)),
          "addF32");
}

void addBf16(StepContext *c, int64_t a, int64_t b, int64_t n, int64_t out) {
  if (!c->failed())
    check(c, cuda::addBf16(bf16(c, a), bf16(c, b), n, bf16(c, out), stream(c)),
          "addBf16");
}

void mulF32(StepContext *c, int64_t a, int64_t b, int64_t n, int64_t out) {
  if (!c->failed())
    check(c, cuda::mulF32(f32(c, a), f32(c, b), n, f32(c, out), stream(c)),
          "mulF32");
}

void mulScalarF32(StepContext *c, int64_t x, int64_t s, int64_t n,
                  int64_t out) {
  if (!c->failed())
    check(c,
          cuda::mulScalarF32(f32(c, x), f32(c, s), n, f32(c, out), stream(c)),
          "mulScalarF32");
}

// --- The network ---------------------------------------------------------------

void embedding(StepContext *c, int64_t table, int64_t ids, int64_t tokens,
               int64_t hidden, int64_t vocab, int64_t status, int64_t out) {
  if (!c->failed())
    check(c,
          cuda::embeddingBf16(bf16(c, table), i32(c, ids), tokens, hidden,
                              vocab, i32(c, status), bf16(c, out), stream(c)),
          "embedding");
}

void rmsNorm(StepContext *c, int64_t x, int64_t weight, int64_t rows,
             int64_t hidden, float eps, int64_t y, int64_t rstd) {
  if (!c->failed())
    check(c,
          cuda::rmsNormForward(bf16(c, x), bf16(c, weight), rows, hidden, eps,
                               bf16(c, y), f32(c, rstd), stream(c)),
          "rmsNorm");
}

void rmsNormGrad(StepContext *c, int64_t x, int64_t weight, int64_t dy,
                 int64_t rstd, int64_t rows, int64_t hidden, int64_t dx) {
  if (!c->failed())
    check(c,
          cuda::rmsNormBackward(bf16(c, x), bf16(c, weight), bf16(c, dy),
                                f32(c, rstd), rows, hidden, bf16(c, dx),
                                stream(c)),
          "rmsNormGrad");
}

void rope(StepContext *c, int64_t x, int64_t batch, int64_t seq,
          int64_t heads, int64_t headDim, float theta, float factor,
          float lowFreqFactor, float highFreqFactor,
          int64_t originalMaxPositionEmbeddings, int64_t y) {
  if (!c->failed())
    check(c,
          cuda::ropeForward(bf16(c, x), batch, seq, heads, headDim, theta,
                            bf16(c, y), stream(c),
                            {factor, lowFreqFactor, highFreqFactor,
                             originalMaxPositionEmbeddings}),
          "rope");
}

void ropeGrad(StepContext *c, int64_t dy, int64_t batch, int64_t seq,
              int64_t heads, int64_t headDim, float theta, float factor,
              float lowFreqFactor, float highFreqFactor,
              int64_t originalMaxPositionEmbeddings, int64_t dx) {
  if (!c->failed())
    check(c,
          cuda::ropeBackward(bf16(c, dy), batch, seq, heads, headDim, theta,
                             bf16(c, dx), stream(c),
                             {factor, lowFreqFactor, highFreqFactor,
                              originalMaxPositionEmbeddings}),
          "ropeGrad");
}

// Attention runs on cuDNN's fused kernels where QLORA_ATTENTION lets it and
// cuDNN runs the shape (CudnnAttention.h), else on the built-in kernels.
void attention(StepContext *c, int64_t q, int64_t k, int64_t v, int64_t batch,
               int64_t seq, int64_t heads, int64_t kvHeads, int64_t headDim,
               float scale, int64_t out, int64_t lse) {
  if (c->failed())
    return;
  bool ran = false;
  Status status = cuda::cudnnAttentionForward(
      bf16(c, q), bf16(c, k), bf16(c, v),
      {batch, seq, heads, kvHeads, headDim, scale}, bf16(c, out), f32(c, lse),
      stream(c), &ran);
  if (status && !ran)
    status = cuda::attentionForward(bf16(c, q), bf16(c, k), bf16(c, v), batch,
                                    seq, heads, kvHeads, headDim, scale,
                                    bf16(c, out), f32(c, lse), stream(c));
  check(c, status, "attention");
}

void attentionGrad(StepContext *c, int64_t q, int64_t k, int64_t v,
                   int64_t out, int64_t lse, int64_t dout, int64_t batch,
                   int64_t seq, int64_t heads, int64_t kvHeads,
                   int64_t headDim, float scale, int64_t workspace, int64_t dq,
                   int64_t dk, int64_t dv) {
  if (c->failed())
    return;
  bool ran = false;
  // The workspace (attentionBackwardScratchBytes) starts with room for the
  // fp32 dq accumulator either implementation needs.
  Status status = cuda::cudnnAttentionBackward(
      bf16(c, q), bf16(c, k), bf16(c, v), bf16(c, out), f32(c, lse),
      bf16(c, dout), {batch, seq, heads, kvHeads, headDim, scale},
      f32(c, workspace), bf16(c, dq), bf16(c, dk), bf16(c, dv), stream(c),
      &ran);
  if (status && !ran)
    status = cuda::attentionBackward(
        bf16(c, q), bf16(c, k), bf16(c, v), bf16(c, out), f32(c, lse),
        bf16(c, dout), batch, seq, heads, kvHeads, headDim, scale,
        at<uint8_t>(c, workspace), bf16(c, dq), bf16(c, dk), bf16(c, dv),
        stream(c));
  check(c, status, "attentionGrad");
}

void swiglu(StepContext *c, int64_t gate, int64_t up, int64_t n, int64_t out) {
  if (!c->failed())
    check(c,
          cuda::swigluForward(bf16(c, gate), bf16(c, up), n, bf16(c, out),
                              stream(c)),
          "swiglu");
}

void swigluGrad(StepContext *c, int64_t gate, int64_t up, int64_t dout,
                int64_t n, int64_t dgate, int64_t dup) {
  if (!c->failed())
    check(c,
          cuda::swigluBackward(bf16(c, gate), bf16(c, up), bf16(c, dout), n,
                               bf16(c, dgate), bf16(c, dup), stream(c)),
          "swigluGrad");
}

// --- Projections -----------------------------------------------------------------

void linear(StepContext *c, int64_t x, int64_t weight, int64_t M, int64_t N,
            int64_t K, int64_t y) {
  if (!c->failed())
    check(c,
          cuda::gemmBf16NT(blas(c), M, N, K, 1.0f, bf16(c, x),
                           bf16(c, weight), 0.0f, bf16(c, y)),
          "linear");
}

void linearGradInput(StepContext *c, int64_t dy, int64_t weight, int64_t M,
                     int64_t N, int64_t K, int64_t dx) {
  if (!c->failed())
    check(c,
          cuda::gemmBf16NN(blas(c), M, K, N, 1.0f, bf16(c, dy),
                           bf16(c, weight), 0.0f, bf16(c, dx)),
          "linearGradInput");
}

void nf4LinearDequantGemm(StepContext *c, int64_t x, const NF4Parts &weight,
                          int64_t M, int64_t scratch, int64_t y) {
  if (!c->failed())
    check(c,
          cuda::nf4MatmulDequantGemm(blas(c), bf16(c, x), M,
                                     weightOf(c, weight), bf16(c, scratch),
                                     bf16(c, y), stream(c)),
          "nf4LinearDequantGemm");
}

void nf4LinearSmallM(StepContext *c, int64_t x, const NF4Parts &weight,
                     int64_t M, int64_t y) {
  if (c->failed())
    return;
  cuda::NF4DeviceWeight view = weightOf(c, weight);
  // The tiling depends on the SM count of the GPU it runs on.
  Expected<int> multiprocessors = cuda::currentMultiprocessors();
  if (!multiprocessors) {
    check(c, multiprocessors.error(), "nf4LinearSmallM");
    return;
  }
  check(c,
        cuda::nf4MatmulSmallM(bf16(c, x), M, view, bf16(c, y), stream(c),
                              cuda::chooseSmallMTiling(view, *multiprocessors)),
        "nf4LinearSmallM");
}

void nf4LinearGemv(StepContext *c, int64_t x, const NF4Parts &weight,
                   int64_t M, int64_t y) {
  if (!c->failed())
    check(c,
          cuda::nf4Gemv(bf16(c, x), M, weightOf(c, weight), bf16(c, y),
                        stream(c)),
          "nf4LinearGemv");
}

void nf4LinearGradInput(StepContext *c, int64_t dy, const NF4Parts &weight,
                        int64_t M, int64_t scratch, int64_t dx) {
  if (!c->failed())
    check(c,
          cuda::nf4MatmulGradInput(blas(c), bf16(c, dy), M,
                                   weightOf(c, weight), bf16(c, scratch),
                                   bf16(c, dx), stream(c)),
          "nf4LinearGradInput");
}

// --- LoRA branches -----------------------------------------------------------------

namespace {

/// The base product with its branch in dequantize + cuBLAS's epilogue; the
/// branch reads `input` (dropout(x)) when it is not the product's.
void loraLinear(StepContext *c, int64_t x, const NF4Parts &weight, int64_t a,
                int64_t b, int64_t M, int64_t r, float scale, int64_t input,
                int64_t scratch, int64_t xa, int64_t y, const char *kernel) {
  cuda::LoraTerm lora;
  lora.a = bf16(c, a);
  lora.b = bf16(c, b);
  lora.rank = r;
  lora.scale = scale;
  lora.input = input == x ? nullptr : bf16(c, input);
  lora.hidden = bf16(c, xa);
  cuda::GemmEpilogue epilogue;
  epilogue.lora = &lora;
  check(c,
        cuda::nf4MatmulDequantGemm(blas(c), bf16(c, x), M, weightOf(c, weight),
                                   bf16(c, scratch), bf16(c, y), stream(c),
                                   epilogue),
        kernel);
}

} // namespace

void nf4LoraLinear(StepContext *c, int64_t x, const NF4Parts &weight,
                   int64_t a, int64_t b, int64_t M, int64_t r, float scale,
                   int64_t scratch, int64_t xa, int64_t y) {
  if (!c->failed())
    loraLinear(c, x, weight, a, b, M, r, scale, x, scratch, xa, y,
               "nf4LoraLinear");
}

void nf4LoraLinearDropout(StepContext *c, int64_t x, const NF4Parts &weight,
                          int64_t a, int64_t b, int64_t M, int64_t r,
                          float scale, float p, int64_t dropoutStream,
                          int64_t seed, int64_t scratch, int64_t dropped,
                          int64_t xa, int64_t y) {
  if (c->failed())
    return;
  check(c,
        cuda::dropoutBf16(bf16(c, x), M * weight.cols, p, i32(c, seed),
                          uint32_t(dropoutStream), bf16(c, dropped), stream(c)),
        "nf4LoraLinearDropout");
  if (!c->failed())
    loraLinear(c, x, weight, a, b, M, r, scale, dropped, scratch, xa, y,
               "nf4LoraLinearDropout");
}

void lora(StepContext *c, int64_t x, int64_t a, int64_t b, int64_t M,
          int64_t N, int64_t K, int64_t r, float scale, int64_t accumulate,
          int64_t xa, int64_t y) {
  if (!c->failed())
    check(c,
          cuda::loraForward(blas(c), bf16(c, x), bf16(c, a), bf16(c, b), M, N,
                            K, r, scale, accumulate != 0, bf16(c, xa),
                            bf16(c, y), stream(c)),
          "lora");
}

void loraDropout(StepContext *c, int64_t x, int64_t a, int64_t b, int64_t M,
                 int64_t N, int64_t K, int64_t r, float scale, float p,
                 int64_t dropoutStream, int64_t seed, int64_t accumulate,
                 int64_t dropped, int64_t xa, int64_t y) {
  if (c->failed())
    return;
  check(c,
        cuda::dropoutBf16(bf16(c, x), M * K, p, i32(c, seed),
                          uint32_t(dropoutStream), bf16(c, dropped), stream(c)),
        "loraDropout");
  lora(c, dropped, a, b, M, N, K, r, scale, accumulate, xa, y);
}

void loraGrad(StepContext *c, int64_t x, int64_t a, int64_t b, int64_t dy,
              int64_t M, int64_t N, int64_t K, int64_t r, float scale,
              int64_t xa, int64_t t, int64_t dx, int64_t dA, int64_t dB) {
  if (!c->failed())
    check(c,
          cuda::loraBackward(blas(c), bf16(c, x), bf16(c, a), bf16(c, b),
                             bf16(c, dy), M, N, K, r, scale, bf16(c, xa),
                             bf16(c, t), bf16(c, dx), f32(c, dA), f32(c, dB),
                             stream(c)),
          "loraGrad");
}

void loraGradDropout(StepContext *c, int64_t x, int64_t a, int64_t b,
                     int64_t dy, int64_t M, int64_t N, int64_t K, int64_t r,
                     float scale, float p, int64_t dropoutStream, int64_t seed,
                     int64_t dropped, int64_t xa, int64_t t, int64_t dx,
                     int64_t dA, int64_t dB) {
  if (c->failed())
    return;
  // The forward's mask, redrawn; dx passes back through it.
  check(c,
        cuda::dropoutBf16(bf16(c, x), M * K, p, i32(c, seed),
                          uint32_t(dropoutStream), bf16(c, dropped), stream(c)),
        "loraGradDropout");
  loraGrad(c, dropped, a, b, dy, M, N, K, r, scale, xa, t, dx, dA, dB);
  if (!c->failed())
    check(c,
          cuda::dropoutBf16(bf16(c, dx), M * K, p, i32(c, seed),
                            uint32_t(dropoutStream), bf16(c, dx), stream(c)),
          "loraGradDropout");
}

// --- Loss -------------------------------------------------------------------------

void crossEntropy(StepContext *c, int64_t logits, int64_t labels,
                  int64_t batch, int64_t seq, int64_t vocab,
                  int64_t ignoreIndex, int64_t workspace, int64_t status,
                  int64_t loss) {
  if (!c->failed())
    check(c,
          cuda::crossEntropyBf16(bf16(c, logits), i32(c, labels), batch, seq,
                                 vocab, int32_t(ignoreIndex),
                                 at<uint8_t>(c, workspace), i32(c, status),
                                 f32(c, loss), nullptr, nullptr, stream(c)),
          "crossEntropy");
}

void crossEntropyGrad(StepContext *c, int64_t logits, int64_t labels,
                      int64_t dloss, int64_t batch, int64_t seq, int64_t vocab,
                      int64_t ignoreIndex, int64_t workspace,
                      int64_t dlogits) {
  if (!c->failed())
    check(c,
          cuda::crossEntropyBf16(bf16(c, logits), i32(c, labels), batch, seq,
                                 vocab, int32_t(ignoreIndex),
                                 at<uint8_t>(c, workspace), nullptr, nullptr,
                                 f32(c, dloss), bf16(c, dlogits), stream(c)),
          "crossEntropyGrad");
}

void lmHeadLoss(StepContext *c, int64_t x, int64_t weight, int64_t labels,
                int64_t dloss, int64_t batch, int64_t seq, int64_t hidden,
                int64_t vocab, int64_t ignoreIndex, int64_t chunkRows,
                int64_t lossWorkspace, int64_t chunkLogits, int64_t status,
                int64_t loss, int64_t dx) {
  if (!c->failed())
    check(c,
          cuda::lmHeadLossChunked(
              blas(c), bf16(c, x), bf16(c, weight), i32(c, labels), batch,
              seq, hidden, vocab, int32_t(ignoreIndex), chunkRows,
              at<uint8_t>(c, lossWorkspace), bf16(c, chunkLogits),
              i32(c, status), f32(c, loss), f32(c, dloss), bf16(c, dx),
              stream(c)),
          "lmHeadLoss");
}

// --- Optimizer ----------------------------------------------------------------------

void adamw(StepContext *c, int64_t param, int64_t grad, int64_t m, int64_t v,
           int64_t lr, int64_t step, int64_t n, float beta1, float beta2,
           float eps, float weightDecay, int64_t paramOut, int64_t mOut,
           int64_t vOut, int64_t compute) {
  if (c->failed())
    return;
  copy(c, param, n * 4, paramOut);
  copy(c, m, n * 4, mOut);
  copy(c, v, n * 4, vOut);
  if (!c->failed())
    check(c,
          cuda::adamwOnDevice(f32(c, paramOut), f32(c, grad), f32(c, mOut),
                              f32(c, vOut), n, f32(c, lr), f32(c, step),
                              beta1, beta2, eps, weightDecay,
                              bf16(c, compute), stream(c)),
          "adamw");
}

void sumSquares(StepContext *c, int64_t x, int64_t n, int64_t workspace,
                int64_t out) {
  if (!c->failed())
    check(c,
          cuda::sumOfSquares(f32(c, x), n, at<double>(c, workspace),
                             f32(c, out), stream(c)),
          "sumSquares");
}

void clipCoefficient(StepContext *c, int64_t total, float maxNorm,
                     int64_t out) {
  if (!c->failed())
    check(c, cuda::clipCoefficient(f32(c, total), maxNorm, f32(c, out),
                                   stream(c)),
          "clipCoefficient");
}

// --- Profiling ------------------------------------------------------------------

StepProfiler::~StepProfiler() {
  for (auto &[kernel, event] : marks_)
    cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

void StepProfiler::mark(const char *kernel, void *stream) {
  cudaEvent_t event = nullptr;
  if (cudaEventCreate(&event) != cudaSuccess)
    return;
  cudaEventRecord(event, static_cast<cudaStream_t>(stream));
  marks_.emplace_back(kernel, event);
}

bool StepProfiler::collect() {
  bool ok = true;
  for (size_t i = 0; i < marks_.size(); ++i) {
    auto event = static_cast<cudaEvent_t>(marks_[i].second);
    ok &= cudaEventSynchronize(event) == cudaSuccess;
    if (i == 0 || marks_[i].first == "start")
      continue;
    float ms = 0.0f;
    ok &= cudaEventElapsedTime(
              &ms, static_cast<cudaEvent_t>(marks_[i - 1].second), event) ==
          cudaSuccess;
    auto found = std::find_if(totals_.begin(), totals_.end(),
                              [&](const Total &total) {
                                return total.kernel == marks_[i].first;
                              });
    if (found == totals_.end())
      found = totals_.insert(totals_.end(), Total{marks_[i].first, 0.0, 0});
    found->milliseconds += ms;
    ++found->calls;
  }
  for (auto &[kernel, event] : marks_)
    cudaEventDestroy(static_cast<cudaEvent_t>(event));
  marks_.clear();
  return ok;
}

std::vector<StepProfiler::Total> StepProfiler::totals() const {
  std::vector<Total> sorted = totals_;
  std::sort(sorted.begin(), sorted.end(), [](const Total &a, const Total &b) {
    return a.milliseconds > b.milliseconds;
  });
  return sorted;
}

#include "runtime/step/CheckStepKernels.inc"

} // namespace qlora::cuda_step
