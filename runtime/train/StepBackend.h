//===- StepBackend.h - Where a compiled step's arena lives and runs ---------===//
//
// The trainer fills, runs and reads a compiled step through this interface,
// the same way on both targets: the cpu backend keeps the arena in host
// memory and runs an entry point when called; the cuda backend keeps it in
// one device allocation, enqueues the entry points on one stream (captured
// once as CUDA graphs and replayed), and waits only in synchronize().
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"
#include "runtime/train/StepLibrary.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qlora {

class StepBackend {
public:
  virtual ~StepBackend() = default;
  /// "cpu" or "cuda", and a line describing the device for the log.
  virtual std::string device() const = 0;
  virtual std::string description() const = 0;

  /// Copies host bytes into the arena (ordered before later calls).
  virtual Status write(uint64_t offset, const void *data, size_t bytes) = 0;
  /// Sets `bytes` arena bytes to `byte`.
  virtual Status fill(uint64_t offset, int byte, size_t bytes) = 0;
  /// Copies arena bytes to the host now (waits for the work before it).
  virtual Status read(uint64_t offset, void *data, size_t bytes) = 0;
  /// Copies arena bytes to `out` once synchronize() returns: several reads
  /// cost one wait.
  virtual Status readLater(uint64_t offset, size_t bytes,
                           std::vector<uint8_t> *out) = 0;
  /// Runs (cpu) or enqueues (cuda) the entry point for `role`.
  virtual Status call(const std::string &role) = 0;
  /// Waits for everything enqueued and completes readLater().
  virtual Status synchronize() = 0;

  /// cuda: the base address of the device arena and the stream its work is
  /// ordered on, for tools that fill it with their own kernels; null on the
  /// cpu.
  virtual uint8_t *deviceArena() { return nullptr; }
  virtual void *deviceStream() { return nullptr; }
  /// cuda: hands the step a qlora::cuda_step::StepProfiler and runs its
  /// entries without graphs from now on (null: graphs again).
  virtual Status setProfiler(void *profiler) {
    return makeError("per-kernel profiles need a cuda step");
  }

  /// Keeps a copy of [offset, offset + bytes) to put back with restore():
  /// the adapter before an update that may fail.
  virtual Status snapshot(uint64_t offset, size_t bytes) = 0;
  virtual Status restore() = 0;
  /// A range of fp32 values in the arena.
  struct FloatRange {
    uint64_t offset;
    int64_t count;
  };
  /// How many values of `ranges` are NaN or infinite, after the work
  /// enqueued so far (the cuda backend counts on the device and waits once).
  virtual Status countNonFinite(const std::vector<FloatRange> &ranges,
                                int64_t *result) = 0;
};

/// An error unless [offset, offset + bytes) lies in an arena of
/// `arenaBytes`.
inline Status checkArenaRange(uint64_t offset, size_t bytes,
                              uint64_t arenaBytes) {
  if (offset + bytes > arenaBytes)
    return makeError("arena access [{}, {}) outside its {} bytes", offset,
                     offset + bytes, arenaBytes);
  return Status::ok();
}

/// The context of a call of a step's entry point on `arena`.
inline QLoRAStepContext stepContext(uint8_t *arena, uint64_t arenaBytes) {
  QLoRAStepContext context = {};
  context.abi_version = QLORA_STEP_ABI_VERSION;
  context.struct_size = sizeof context;
  context.arena = arena;
  context.arena_bytes = arenaBytes;
  return context;
}

/// A cpu step's backend: the arena in host memory.
Expected<std::unique_ptr<StepBackend>>
openCpuBackend(const StepLibrary &library);

/// A cuda step's backend on the current GPU. Refuses a step built for other
/// architectures and an arena larger than the free device memory (with both
/// numbers), before any allocation.
Expected<std::unique_ptr<StepBackend>>
openCudaBackend(const StepLibrary &library);

/// Whether this runtime was built with CUDA and sees a GPU.
bool cudaBackendAvailable();

} // namespace qlora
