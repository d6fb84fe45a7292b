//===- qlora-bench.cpp - Figures for the runtime's kernels ------------------===//
//
// usage: qlora-bench [nf4] [kernels] [--shapes 4096x4096,11008x4096]
//                    [--repeats N] [--l2_flush clean|dirty]
//
// Prints medians of repeated timings. `nf4` measures the CPU NF4 codec
// (quantize with double quant, dequantize to bf16) on Llama-7B weight shapes,
// single-threaded and with all threads; `kernels` the GPU kernels beside
// bf16 cuBLAS (KernelBench.cpp).
//
//===----------------------------------------------------------------------===//
#include "runtime/BnbFormat.h"
#include "runtime/Float16.h"
#include "runtime/NF4.h"
#include "runtime/Parallel.h"
#include "tools/common/CommandLine.h"
#ifdef QLORA_HAVE_CUDA
#include "KernelBench.h"
#include "StepBench.h"
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

using namespace qlora;

namespace {

double medianSeconds(int repeats, const std::function<void()> &body) {
  body(); // warm-up: page faults, pool start-up
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    body();
    times.push_back(std::chrono::duration<double>(
                        std::chrono::steady_clock::now() - start)
                        .count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

Expected<std::vector<int64_t>> parseShape(const std::string &text) {
  size_t x = text.find('x');
  if (x == std::string::npos)
    return makeError("expects a shape like 4096x4096, got '{}'", text);
  char *end = nullptr;
  long long rows = std::strtoll(text.c_str(), &end, 10);
  long long cols = std::strtoll(text.c_str() + x + 1, &end, 10);
  if (rows <= 0 || cols <= 0 || *end != '\0')
    return makeError("expects a shape like 4096x4096, got '{}'", text);
  return std::vector<int64_t>{rows, cols};
}

void benchNF4(const std::vector<std::vector<int64_t>> &shapes, int repeats) {
  std::printf("NF4 codec on the CPU (%d hardware threads), median of %d\n",
              numThreads(), repeats);
  std::printf("%-12s %-8s %-26s %10s %12s\n", "shape", "threads", "operation",
              "ms", "GB/s");
  for (const std::vector<int64_t> &shape : shapes) {
    int64_t n = shape[0] * shape[1];
    std::vector<uint16_t> weights(n);
    uint64_t state = 12345;
    for (uint16_t &w : weights) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      w = floatToBf16(float(int64_t(state >> 40) - (1 << 23)) * 2.4e-9f);
    }
    std::string shapeText =
        std::to_string(shape[0]) + "x" + std::to_string(shape[1]);
    int allThreads = numThreads();
    for (int threads : {1, allThreads}) {
      setNumThreads(threads);
      Expected<NF4Weight> weight(Error("not run"));
      double quantize = medianSeconds(repeats, [&] {
        weight = quantizeWeight(weights.data(), ElementType::BF16, shape, 64,
                                /*doubleQuant=*/true);
      });
      std::vector<uint16_t> restored(n);
      double dequantize = medianSeconds(repeats, [&] {
        dequantizeWeight(*weight, ElementType::BF16, restored.data());
      });
      double bf16Bytes = double(n) * 2.0;
      double nf4Bytes = double(weight->storageBytes());
      // Effective bandwidth counts the bf16 side plus the NF4 side.
      std::printf("%-12s %-8d %-26s %10.2f %12.2f\n", shapeText.c_str(),
                  threads, "quantize bf16->nf4+dq", quantize * 1e3,
                  (bf16Bytes + nf4Bytes) / quantize / 1e9);
      std::printf("%-12s %-8d %-26s %10.2f %12.2f\n", shapeText.c_str(),
                  threads, "dequantize nf4+dq->bf16", dequantize * 1e3,
                  (bf16Bytes + nf4Bytes) / dequantize / 1e9);
      if (allThreads == 1)
        break;
    }
    setNumThreads(0);
  }
}

} // namespace

int main(int argc, char **argv) {
  std::string shapeList = "4096x4096,11008x4096,4096x11008";
  int64_t repeats = 5;
  std::string l2Flush = "clean", stepDir;
  int64_t warmup = 3, steps = 10, accumulation = 1;
  bool profile = false;
  cli::CommandLine commandLine(
      "qlora-bench", "[nf4] [kernels] [step] [options]",
      "Prints timing figures (medians) for the runtime's kernels.\n"
      "Benchmarks: nf4 (CPU NF4 quantize/dequantize throughput), kernels\n"
      "(GPU: NF4 dequantize, forward and dX products beside bf16 cuBLAS),\n"
      "step (a compiled cuda step on random weights: tokens/s, model\n"
      "TFLOP/s, memory, and with --profile each kernel's time).");
  commandLine.option("step_dir", "DIR",
                     "step: a cuda step from qlora-compile (for example "
                     "--config llama2-7b)",
                     &stepDir);
  commandLine.option("warmup", "N", "step: untimed steps first", &warmup);
  commandLine.option("steps", "N", "step: timed optimizer steps", &steps);
  commandLine.option("gradient_accumulation_steps", "N",
                     "step: micro-batches per optimizer step", &accumulation);
  commandLine.flag("profile",
                   "step: also time each kernel (the step then runs without "
                   "CUDA graphs)",
                   &profile);
  commandLine.option("shapes", "RxC,...", "weight shapes to time", &shapeList);
  commandLine.option("repeats", "N", "timed repetitions per figure", &repeats);
  commandLine.option("l2_flush", "clean|dirty",
                     "kernels: how the L2 is emptied before each timed run: "
                     "by reading (the default: the timed kernel pays only "
                     "for its own traffic) or by writing (it also pays for "
                     "writing those lines back)",
                     &l2Flush);
  if (std::optional<int> code = commandLine.parseOrExit(argc, argv))
    return *code;
  std::vector<std::vector<int64_t>> shapes;
  for (const std::string &text : cli::splitList(shapeList)) {
    Expected<std::vector<int64_t>> shape = parseShape(text);
    if (!shape) {
      std::fprintf(stderr, "qlora-bench: error: --shapes: %s\n",
                   shape.message().c_str());
      return 1;
    }
    shapes.push_back(*shape);
  }
  if (repeats < 1) {
    std::fprintf(stderr, "qlora-bench: error: --repeats must be >= 1\n");
    return 1;
  }
  std::vector<std::string> benches = commandLine.positional();
  if (benches.empty())
    benches = {"nf4"};
  for (const std::string &bench : benches) {
    if (bench == "nf4") {
      benchNF4(shapes, int(repeats));
    } else if (bench == "kernels") {
#ifdef QLORA_HAVE_CUDA
      Expected<bench::L2Flush::Mode> flushMode =
          bench::L2Flush::parseMode(l2Flush);
      if (!flushMode) {
        std::fprintf(stderr, "qlora-bench: error: --l2_flush: %s\n",
                     flushMode.message().c_str());
        return 1;
      }
      int code = bench::runKernelBench(shapes, int(repeats), *flushMode);
      if (code != 0)
        return code;
#else
      std::fprintf(stderr, "qlora-bench: built without CUDA; the kernels "
                           "benchmark needs nvcc at build time\n");
      return 1;
#endif
    } else if (bench == "step") {
#ifdef QLORA_HAVE_CUDA
      if (stepDir.empty() || steps < 1 || warmup < 0) {
        std::fprintf(stderr, "qlora-bench: error: step needs --step_dir, "
                             "--steps >= 1 and --warmup >= 0\n");
        return 1;
      }
      int code = bench::runStepBench(
          {stepDir, warmup, steps, accumulation, profile});
      if (code != 0)
        return code;
#else
      std::fprintf(stderr, "qlora-bench: built without CUDA; the step "
                           "benchmark needs nvcc at build time\n");
      return 1;
#endif
    } else {
      std::fprintf(stderr, "qlora-bench: error: unknown benchmark '%s' "
                           "(known: nf4, kernels, step)\n",
                   bench.c_str());
      return 1;
    }
  }
  return 0;
}
