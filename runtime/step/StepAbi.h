/*===- StepAbi.h - The C interface of a compiled step library -------------===//
//
// What a step library (step.so) and its host agree on, in C so that neither
// depends on the other's C++ ABI. The version covers this struct and the
// kernel tables (CpuKernels.def, CudaKernels.def): a step library reports
// the version it was generated for, and a host refuses any other, since the
// library calls the runtime's kernels by those signatures.
//
// Every step library exports:
//   uint32_t qlora_step_abi_version(void);
//   const char *qlora_step_target(void);        "cpu" or "cuda"
//   int qlora_train_step(QLoRAStepContext *);
//   int qlora_apply_gradients(QLoRAStepContext *);
// An entry returns 0 when its work was run (cpu) or enqueued on the stream
// (cuda), and otherwise writes a message into `error`.
//
//===----------------------------------------------------------------------===*/
#ifndef QLORA_RUNTIME_STEP_STEPABI_H
#define QLORA_RUNTIME_STEP_STEPABI_H

#include <stddef.h>
#include <stdint.h>

/* Bump when QLoRAStepContext or a kernel table changes. */
#define QLORA_STEP_ABI_VERSION 4u

#ifdef __cplusplus
extern "C" {
#endif

typedef struct QLoRAStepContext {
  uint32_t abi_version;   /* QLORA_STEP_ABI_VERSION of the host */
  uint32_t struct_size;   /* sizeof(QLoRAStepContext) of the host */
  uint8_t *arena;         /* host memory (cpu) or device memory (cuda) */
  uint64_t arena_bytes;
  void *stream;           /* cudaStream_t the step enqueues on (cuda) */
  void *blas;             /* cublasHandle_t bound to `stream` (cuda) */
  char *error;            /* receives a message when an entry fails */
  size_t error_capacity;
  void *profiler;         /* cuda: a qlora::cuda_step::StepProfiler, or null */
  uint8_t *host_arena;    /* offloaded activations: pinned host memory
                             (cuda) or host memory (cpu), of the manifest's
                             host_arena_bytes */
  uint64_t host_arena_bytes;
  void *copy_stream;      /* cudaStream_t the offload copies run on (cuda) */
  void **events;          /* cudaEvent_t[2 * transfers]: each transfer's
                             start and end (cuda) */
  uint64_t transfers;
} QLoRAStepContext;

typedef uint32_t (*QLoRAStepAbiVersionFn)(void);
typedef const char *(*QLoRAStepTargetFn)(void);
typedef int (*QLoRAStepEntryFn)(QLoRAStepContext *);

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
#include <algorithm>
#include <cstring>
#include <string>

namespace qlora::step_abi {

/// Whether a host's context has this library's layout.
inline bool accepts(const QLoRAStepContext *host) {
  return host && host->abi_version == QLORA_STEP_ABI_VERSION &&
         host->struct_size == sizeof(QLoRAStepContext);
}

/// Copies `message` into the host's error buffer (truncated to fit).
inline void reportError(QLoRAStepContext *host, const std::string &message) {
  if (!host->error || host->error_capacity == 0)
    return;
  size_t n = std::min(host->error_capacity - 1, message.size());
  std::memcpy(host->error, message.data(), n);
  host->error[n] = '\0';
}

} // namespace qlora::step_abi

/* The ABI version and target a step library reports; generated code
   expands it once. */
#define QLORA_STEP_LIBRARY_INFO(target)                                        \
  extern "C" uint32_t qlora_step_abi_version(void) {                           \
    return QLORA_STEP_ABI_VERSION;                                             \
  }                                                                            \
  extern "C" const char *qlora_step_target(void) { return target; }
#endif

#endif /* QLORA_RUNTIME_STEP_STEPABI_H */
