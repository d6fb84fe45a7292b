//===- CudaStep.h - What generated cuda training steps call -----------------===//
//
// Code generation lowers every qlora op of a cuda step to calls of the
// functions declared here from the kernel table runtime/step/CudaKernels.def
// (the compiler checks its calls against the same table). Arguments are
// compile-time constants: byte offsets into the device arena (buffers and
// the workspaces the planner placed), sizes and attributes; the only runtime
// value is the StepContext, which carries the arena, the stream and the
// cuBLAS handle. Every function enqueues its work and returns: nothing
// synchronizes, so the host captures a whole entry point as a CUDA graph.
// The first launch error is kept in the context, later calls are skipped,
// and the entry point returns it.
//
// The functions live in the runtime's step library (libQLoRAStepCuda.so),
// which the host that loads a step provides; the step's own library holds
// only its generated code.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/step/StepAbi.h"
#ifdef __CUDACC__
#include "runtime/step/GeneratedKernels.cuh"
#endif

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace qlora::cuda_step {

class StepProfiler;

/// The state of one call of an entry point.
struct StepContext {
  uint8_t *arena = nullptr;
  void *stream = nullptr; ///< cudaStream_t
  void *blas = nullptr;   ///< cublasHandle_t on `stream`
  StepProfiler *profiler = nullptr;
  uint8_t *hostArena = nullptr;
  uint64_t hostArenaBytes = 0;
  void *copyStream = nullptr; ///< cudaStream_t
  void **events = nullptr;    ///< cudaEvent_t[2 * transfers]
  uint64_t transfers = 0;
  std::string error;
  bool failed() const { return !error.empty(); }
  void fail(const std::string &message) {
    if (error.empty())
      error = message;
  }
};

/// An NF4 weight's parts in the arena (bitsandbytes' layout; -1 for parts
/// it has not: `absmax` with double quantization, the three others
/// without) and its shape.
struct NF4Parts {
  int64_t codes, absmax, absmaxCodes, absmaxScales, absmaxOffset;
  int64_t rows, cols, blockSize, dqBlockSize;
};

#define QLORA_STEP_KERNEL_TABLE "runtime/step/CudaKernels.def"
#define QLORA_STEP_KERNEL_SPECIFIER
#include "runtime/step/DeclareStepKernels.inc"

/// Runs `body` on the host's context and reports its error, for the
/// exported C symbols.
int runEntry(QLoRAStepContext *host, void (*body)(StepContext *));

/// After a launch of `kernel`: records a launch error, or the kernel's end
/// for the profiler.
void finishLaunch(StepContext *c, const char *kernel);

#ifdef __CUDACC__
/// Launches a kernel generated from a qlora.fused_elementwise over n
/// elements, its pointer arguments at `offsets` in the arena (the step's
/// generated code passes them as constants, like every call).
template <typename... Params, typename... Offsets>
void launchElementwise(StepContext *c, void (*kernel)(int64_t, Params...),
                       const char *name, int64_t n, Offsets... offsets) {
  static_assert(sizeof...(Params) == sizeof...(Offsets),
                "one arena offset per kernel argument");
  if (c->failed() || n <= 0)
    return;
  constexpr int64_t kThreads = 256, kMaxBlocks = 8192;
  int64_t blocks = (n + kThreads - 1) / kThreads;
  kernel<<<unsigned(blocks < kMaxBlocks ? blocks : kMaxBlocks), kThreads, 0,
           static_cast<cudaStream_t>(c->stream)>>>(
      n, reinterpret_cast<Params>(c->arena + offsets)...);
  finishLaunch(c, name);
}
#endif

/// Per-kernel device times of steps run without CUDA graphs (qlora-bench
/// step --profile): every function above records an event after what it
/// enqueued, so the time between consecutive events is that function's.
class StepProfiler {
public:
  StepProfiler() = default;
  StepProfiler(const StepProfiler &) = delete;
  StepProfiler &operator=(const StepProfiler &) = delete;
  ~StepProfiler();
  /// Records the end of `kernel`'s work on `stream` (the entry records
  /// "start" first).
  void mark(const char *kernel, void *stream);
  /// Waits for the marks so far and adds their times to the totals.
  bool collect();
  /// Milliseconds and calls per kernel, largest first.
  struct Total {
    std::string kernel;
    double milliseconds = 0.0;
    int64_t calls = 0;
  };
  std::vector<Total> totals() const;

private:
  std::vector<std::pair<std::string, void *>> marks_; ///< cudaEvent_t
  std::vector<Total> totals_;
};

} // namespace qlora::cuda_step

/// Exports `impl` (void(StepContext *)) as the C entry point `symbol`.
#define QLORA_CUDA_STEP_ENTRY(symbol, impl)                                    \
  extern "C" int symbol(QLoRAStepContext *context) {                           \
    return ::qlora::cuda_step::runEntry(context, impl);                        \
  }
