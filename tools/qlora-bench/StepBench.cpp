//===- StepBench.cpp - `qlora-bench step`: a compiled step's figures --------===//
//
// The step runs as qlora-train runs it (StepBackend: one device arena, CUDA
// graphs, one wait per optimizer step), on weights that do not need a
// checkpoint: NF4 codes and double-quantized block constants drawn on the
// GPU in the ranges real weights have, bf16 weights uniform with the
// standard deviation of a Llama initialization (0.02), norms at one, the
// adapters as PEFT initializes lora_A and lora_B small but non-zero, so that
// every gradient path runs on real numbers.
//
//===----------------------------------------------------------------------===//
#include "StepBench.h"

#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/CudnnAttention.h"
#include "runtime/cuda/RandomFill.h"
#include "runtime/step/CudaStep.h"
#include "runtime/train/StepBackend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

namespace qlora::bench {
namespace {

int fail(const std::string &message) {
  std::fprintf(stderr, "qlora-bench: error: %s\n", message.c_str());
  return 1;
}

int64_t modelInt(const StepManifest &manifest, const char *key) {
  const json::Value *value = manifest.model.find(key);
  return value && value->isInt() ? value->asInt() : 0;
}

/// What serves the step's attention (asked after the timed steps, so that
/// this process's own cuDNN plans stay out of the memory figure).
std::string attentionLine(const StepManifest &manifest) {
  const int64_t heads = modelInt(manifest, "num_attention_heads");
  int64_t kvHeads = modelInt(manifest, "num_key_value_heads");
  if (kvHeads == 0)
    kvHeads = heads;
  int64_t headDim = modelInt(manifest, "head_dim");
  if (headDim == 0 && heads > 0)
    headDim = modelInt(manifest, "hidden_size") / heads;
  if (heads <= 0 || headDim <= 0)
    return "unknown (the manifest's model has no head count)";
  return cuda::attentionImplementation(
      {manifest.batchSize, manifest.seqLen, heads, kvHeads, headDim,
       1.0f / std::sqrt(float(headDim))});
}

/// Model FLOPs per token as ../shared/PEERS.md counts them: the forward and
/// the input gradient of every frozen linear layer (lm_head included), six
/// per adapter parameter (its forward, its input and weight gradients), and
/// causal attention's score and value products in the forward and once more
/// for the backward; recomputation is not credited. (At 17,456 tokens/s this
/// gives PEERS.md's 484 TFLOP/s for Unsloth.)
double flopsPerToken(const StepManifest &manifest) {
  double linear = 0.0, adapters = 0.0;
  for (const BufferInfo &buffer : manifest.buffers) {
    bool frozenMatrix = buffer.shape.size() == 2 &&
                        (buffer.role == BufferRole::NF4 ||
                         buffer.name.find("lm_head") != std::string::npos);
    if (frozenMatrix)
      linear += double(buffer.numElements());
    if (buffer.role == BufferRole::Trainable)
      adapters += double(buffer.numElements());
  }
  double attention = 4.0 * double(manifest.seqLen) *
                     double(modelInt(manifest, "hidden_size")) *
                     double(modelInt(manifest, "num_hidden_layers"));
  return 4.0 * linear + 6.0 * adapters + attention;
}

/// Random weights in the arena, drawn on the GPU.
Status fillWeights(StepBackend &backend, const StepManifest &manifest) {
  uint8_t *arena = backend.deviceArena();
  auto stream = static_cast<cudaStream_t>(backend.deviceStream());
  uint64_t seed = 1;
  auto f32 = [&](const BufferPart &part) {
    return reinterpret_cast<float *>(arena + part.offset);
  };
  auto bf16 = [&](const BufferPart &part) {
    return reinterpret_cast<uint16_t *>(arena + part.offset);
  };
  for (const BufferInfo &buffer : manifest.buffers) {
    for (const BufferPart &part : buffer.parts) {
      ++seed;
      Status filled = Status::ok();
      if (buffer.role == BufferRole::NF4) {
        if (part.name == part::kCodes || part.name == part::kAbsmaxCodes)
          filled = cuda::fillRandomBytes(arena + part.offset,
                                         int64_t(part.bytes()), seed, stream);
        else if (part.name == part::kAbsmax)
          filled = cuda::fillUniform(f32(part), nullptr, part.elements, 0.01f,
                                     0.05f, seed, stream);
        else if (part.name == part::kAbsmaxScales)
          // Block maxima of about 0.03 +- 0.02 from codes in [-1, 1].
          filled = cuda::fillUniform(f32(part), nullptr, part.elements, 0.015f,
                                     0.025f, seed, stream);
        else if (part.name == part::kAbsmaxOffset)
          filled = cuda::fillUniform(f32(part), nullptr, 1, 0.03f, 0.031f,
                                     seed, stream);
      } else if (buffer.role == BufferRole::Frozen) {
        bool norm = buffer.name.find("norm") != std::string::npos;
        // Uniform with standard deviation 0.02.
        filled = cuda::fillUniform(nullptr, bf16(part), part.elements,
                                   norm ? 1.0f : -0.0346f,
                                   norm ? 1.0f : 0.0346f, seed, stream);
      } else if (buffer.role == BufferRole::Trainable) {
        // lora_A: PEFT's U(-1/sqrt(K), 1/sqrt(K)); lora_B: small, not zero.
        bool isA = buffer.name.find(".lora_A.") != std::string::npos;
        float bound = isA ? 1.0f / std::sqrt(float(buffer.shape.back()))
                          : 1e-3f;
        uint64_t values = seed - (&part - buffer.parts.data());
        filled = part.dtype == DType::F32
                     ? cuda::fillUniform(f32(part), nullptr, part.elements,
                                         -bound, bound, values, stream)
                     : cuda::fillUniform(nullptr, bf16(part), part.elements,
                                         -bound, bound, values, stream);
      }
      QLORA_RETURN_IF_ERROR(filled);
    }
  }
  QLORA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return Status::ok();
}

/// Writes random ids (and labels equal to them) and the step's scalars.
Status writeInputs(StepBackend &backend, const StepManifest &manifest,
                   std::mt19937 &random, int64_t micro, int64_t step) {
  int64_t vocab = modelInt(manifest, "vocab_size");
  std::uniform_int_distribution<int32_t> token(0, int32_t(vocab) - 1);
  std::vector<int32_t> ids(size_t(manifest.batchSize * manifest.seqLen));
  for (int32_t &id : ids)
    id = token(random);
  for (const char *name : {slot::kInputIds, slot::kLabels}) {
    Expected<const BufferInfo *> buffer = manifest.get(name);
    if (!buffer)
      return buffer.error();
    QLORA_RETURN_IF_ERROR(backend.write((*buffer)->parts.front().offset,
                                        ids.data(), ids.size() * 4));
  }
  auto scalar = [&](const char *name, float value) -> Status {
    if (const BufferInfo *buffer = manifest.find(name))
      return backend.write(buffer->parts.front().offset, &value, 4);
    return Status::ok();
  };
  QLORA_RETURN_IF_ERROR(scalar(slot::kGradScale, 1.0f / float(micro)));
  QLORA_RETURN_IF_ERROR(scalar(slot::kLearningRate, 1e-4f));
  QLORA_RETURN_IF_ERROR(scalar(slot::kStep, float(step)));
  if (const BufferInfo *seed = manifest.find(slot::kDropoutSeed)) {
    int32_t value = int32_t(random());
    QLORA_RETURN_IF_ERROR(
        backend.write(seed->parts.front().offset, &value, 4));
  }
  return Status::ok();
}

double gib(double bytes) { return bytes / double(1ull << 30); }

} // namespace

int runStepBench(const StepBenchOptions &options) {
  size_t freeBefore = 0, total = 0;
  if (cudaMemGetInfo(&freeBefore, &total) != cudaSuccess)
    return fail("no CUDA device");
  Expected<StepLibrary> opened = StepLibrary::open(options.stepDir);
  if (!opened)
    return fail(opened.message());
  StepLibrary library = opened.take();
  const StepManifest &manifest = library.manifest();
  if (manifest.target != "cuda")
    return fail(options.stepDir + " is a " + manifest.target +
                " step; qlora-bench step runs cuda steps");
  Expected<std::unique_ptr<StepBackend>> backend = openCudaBackend(library);
  if (!backend)
    return fail(backend.message());
  if (Status filled = fillWeights(**backend, manifest); !filled)
    return fail(filled.message());

  const int64_t micro = std::max<int64_t>(options.gradientAccumulationSteps, 1);
  const BufferInfo *loss = manifest.find(slot::kLoss);
  std::mt19937 random(7);
  std::vector<double> seconds;
  std::vector<uint8_t> lossBytes;
  cuda_step::StepProfiler profiler;
  for (int64_t step = 1; step <= options.warmup + options.steps; ++step) {
    bool timed = step > options.warmup;
    if (timed && options.profile && step == options.warmup + 1)
      if (Status set = (*backend)->setProfiler(&profiler); !set)
        return fail(set.message());
    auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < micro; ++i) {
      Status status = writeInputs(**backend, manifest, random, micro, step);
      if (status)
        status = (*backend)->call("train_step");
      if (!status)
        return fail(status.message());
    }
    Status status = (*backend)->call("apply_gradients");
    if (status && loss)
      status = (*backend)->readLater(loss->parts.front().offset, 4, &lossBytes);
    if (status)
      status = (*backend)->synchronize();
    if (!status)
      return fail(status.message());
    double elapsed = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start)
                         .count();
    float lossValue = 0.0f;
    std::memcpy(&lossValue, lossBytes.data(), 4);
    if (!std::isfinite(lossValue))
      return fail("the loss is not finite at step " + std::to_string(step));
    if (timed)
      seconds.push_back(elapsed);
    if (timed && options.profile && !profiler.collect())
      return fail("reading the profile's events failed");
  }
  size_t freeAfter = 0;
  cudaMemGetInfo(&freeAfter, &total);

  std::sort(seconds.begin(), seconds.end());
  double median = seconds[seconds.size() / 2];
  double tokens = double(micro * manifest.batchSize * manifest.seqLen);
  double tokensPerSecond = tokens / median;
  std::printf("%s: %lld x %lld tokens%s, %s\n", options.stepDir.c_str(),
              (long long)manifest.batchSize, (long long)manifest.seqLen,
              micro > 1 ? (" x " + std::to_string(micro) + " micro-batches")
                              .c_str()
                        : "",
              (*backend)->description().c_str());
  std::printf("  step time (median of %zu%s): %.1f ms   tokens/s: %.0f   "
              "model TFLOP/s: %.0f\n",
              seconds.size(), options.profile ? ", profiled, no graphs" : "",
              median * 1e3, tokensPerSecond,
              flopsPerToken(manifest) * tokensPerSecond / 1e12);
  std::printf("  device memory held: %.2f GiB (the plan's arena: %.2f GiB)\n",
              gib(double(freeBefore - freeAfter)),
              gib(double(manifest.arenaBytes)));
  if (manifest.hostArenaBytes)
    std::printf("  pinned host memory for offloaded activations: %.2f GiB "
                "(%llu copies a step)\n",
                gib(double(manifest.hostArenaBytes)),
                (unsigned long long)manifest.transfers);
  std::printf("  attention: %s\n", attentionLine(manifest).c_str());
  if (options.profile) {
    double sum = 0.0;
    for (const cuda_step::StepProfiler::Total &entry : profiler.totals())
      sum += entry.milliseconds;
    std::printf("  %-24s %10s %8s %7s\n", "kernel", "ms/step", "calls", "share");
    for (const cuda_step::StepProfiler::Total &entry : profiler.totals())
      std::printf("  %-24s %10.2f %8lld %6.1f%%\n", entry.kernel.c_str(),
                  entry.milliseconds / double(seconds.size()),
                  (long long)(entry.calls / int64_t(seconds.size())),
                  100.0 * entry.milliseconds / sum);
  }
  return 0;
}

} // namespace qlora::bench
