//===- CudaBackend.cpp - A cuda step's arena on the GPU ---------------------===//
//
// One device allocation for the whole arena, one stream, one cuBLAS handle
// bound to the stream with the plan's workspace. Each entry point is
// captured into a CUDA graph on its first call and replayed afterwards (set
// QLORA_CUDA_GRAPHS=0 to launch the kernels one by one instead). Host
// copies into the arena are ordered on the same stream; readLater() lands in
// pinned memory, so that a step's loss, norm and status cost one wait.
//
//===----------------------------------------------------------------------===//
#include "runtime/train/StepBackend.h"

#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/TrainingKernels.h"

#include <cstdlib>
#include <cstring>
#include <map>

namespace qlora {
namespace {

/// "sm_90a" -> 90; "sm_80" -> 80.
int archNumber(const std::string &arch) {
  size_t digits = arch.find_first_of("0123456789");
  return digits == std::string::npos ? -1 : std::atoi(arch.c_str() + digits);
}

/// Whether machine code for `arch` runs on a device of compute capability
/// major.minor: the same major version and no newer minor, and the
/// architecture-specific "a" targets only on their exact version.
bool archRuns(const std::string &arch, int major, int minor) {
  int number = archNumber(arch);
  if (number < 0 || number / 10 != major)
    return false;
  bool specific = !arch.empty() && arch.back() == 'a';
  return specific ? number % 10 == minor : number % 10 <= minor;
}

class CudaBackend : public StepBackend {
public:
  explicit CudaBackend(const StepLibrary &library) : library_(library) {}

  ~CudaBackend() override {
    for (auto &[role, graph] : graphs_)
      cudaGraphExecDestroy(graph);
    if (blas_)
      cublasDestroy(blas_);
    if (stream_)
      cudaStreamDestroy(stream_);
    cudaFree(arena_);
    cudaFree(snapshot_);
    cudaFree(counter_);
    cudaFreeHost(staging_);
    for (void *event : events_)
      cudaEventDestroy(static_cast<cudaEvent_t>(event));
    if (copyStream_)
      cudaStreamDestroy(copyStream_);
    cudaFreeHost(hostArena_);
  }

  Status open() {
    const StepManifest &manifest = library_.manifest();
    int device = 0;
    QLORA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
    cudaDeviceProp properties;
    QLORA_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&properties, device));
    bool runs = false;
    std::string archs;
    for (const std::string &arch : manifest.architectures) {
      runs |= archRuns(arch, properties.major, properties.minor);
      archs += (archs.empty() ? "" : ", ") + arch;
    }
    if (!runs)
      return makeError("the step in {} was compiled for {} and this GPU ({}) "
                       "is sm_{}{}; recompile it for this GPU",
                       library_.directory(), archs, properties.name,
                       properties.major, properties.minor);
    size_t freeBytes = 0, totalBytes = 0;
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&freeBytes, &totalBytes));
    bytes_ = manifest.arenaBytes;
    if (bytes_ > freeBytes)
      return makeError("the step's memory plan needs {:.2f} GiB of device "
                       "memory and {} has {:.2f} GiB free (of {:.2f} GiB)",
                       double(bytes_) / (1 << 30), properties.name,
                       double(freeBytes) / (1 << 30),
                       double(totalBytes) / (1 << 30));
    description_ = fmt::format("{} (sm_{}{}, {:.0f} GiB)", properties.name,
                               properties.major, properties.minor,
                               double(totalBytes) / (1 << 30));
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaMalloc(reinterpret_cast<void **>(&arena_), bytes_));
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemset(arena_, 0, bytes_));
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    QLORA_CUBLAS_RETURN_IF_ERROR(cublasCreate(&blas_));
    QLORA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas_, stream_));
    if (const BufferInfo *workspace = manifest.find(slot::kBlasWorkspace)) {
      const BufferPart &part = workspace->parts.front();
      QLORA_CUBLAS_RETURN_IF_ERROR(
          cublasSetWorkspace(blas_, arena_ + part.offset, part.bytes()));
    }
    QLORA_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void **>(&counter_),
                                          sizeof(unsigned long long)));
    // Offloaded activations: pinned host memory, so that the copies run
    // asynchronously on their own stream and the step's work overlaps them.
    if (manifest.hostArenaBytes) {
      hostArenaBytes_ = manifest.hostArenaBytes;
      if (cudaMallocHost(reinterpret_cast<void **>(&hostArena_),
                         hostArenaBytes_) != cudaSuccess) {
        cudaGetLastError();
        return makeError("the step offloads {:.2f} GiB of activations to "
                         "pinned host memory, and allocating it failed",
                         double(hostArenaBytes_) / (1 << 30));
      }
      QLORA_CUDA_RETURN_IF_ERROR(
          cudaStreamCreateWithFlags(&copyStream_, cudaStreamNonBlocking));
    }
    events_.assign(2 * manifest.transfers, nullptr);
    for (void *&event : events_)
      QLORA_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(
          reinterpret_cast<cudaEvent_t *>(&event), cudaEventDisableTiming));
    const char *graphs = std::getenv("QLORA_CUDA_GRAPHS");
    useGraphs_ = !(graphs && std::string(graphs) == "0");
    return Status::ok();
  }

  std::string device() const override { return "cuda"; }
  uint8_t *deviceArena() override { return arena_; }
  void *deviceStream() override { return stream_; }
  Status setProfiler(void *profiler) override {
    profiler_ = profiler;
    return Status::ok();
  }
  std::string description() const override { return description_; }

  Status write(uint64_t offset, const void *data, size_t bytes) override {
    QLORA_RETURN_IF_ERROR(check(offset, bytes));
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        arena_ + offset, data, bytes, cudaMemcpyHostToDevice, stream_));
    // Pageable host memory: the copy has been staged when this returns,
    // but wait so that the caller may reuse `data` at once.
    QLORA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return Status::ok();
  }
  Status fill(uint64_t offset, int byte, size_t bytes) override {
    QLORA_RETURN_IF_ERROR(check(offset, bytes));
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(arena_ + offset, byte, bytes, stream_));
    return Status::ok();
  }
  Status read(uint64_t offset, void *data, size_t bytes) override {
    QLORA_RETURN_IF_ERROR(check(offset, bytes));
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        data, arena_ + offset, bytes, cudaMemcpyDeviceToHost, stream_));
    QLORA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return Status::ok();
  }
  Status readLater(uint64_t offset, size_t bytes,
                   std::vector<uint8_t> *out) override {
    QLORA_RETURN_IF_ERROR(check(offset, bytes));
    size_t at = stagingUsed_;
    QLORA_RETURN_IF_ERROR(reserveStaging(at + bytes));
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staging_ + at, arena_ + offset,
                                               bytes, cudaMemcpyDeviceToHost,
                                               stream_));
    stagingUsed_ = at + bytes;
    pending_.push_back({at, bytes, out});
    return Status::ok();
  }
  Status call(const std::string &role) override {
    QLoRAStepContext context = stepContext(arena_, bytes_);
    context.stream = stream_;
    context.blas = blas_;
    context.profiler = profiler_;
    context.host_arena = hostArena_;
    context.host_arena_bytes = hostArenaBytes_;
    context.copy_stream = copyStream_;
    context.events = events_.data();
    context.transfers = events_.size() / 2;
    if (!useGraphs_ || profiler_)
      return library_.call(role, context);
    auto found = graphs_.find(role);
    if (found == graphs_.end()) {
      // Capture once: the step's offsets and launch data are constants, and
      // its inputs are read from the arena, so replays compute each call's
      // step.
      QLORA_CUDA_RETURN_IF_ERROR(
          cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      Status status = library_.call(role, context);
      cudaGraph_t graph = nullptr;
      cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
      if (!status) {
        if (graph)
          cudaGraphDestroy(graph);
        return status.error().withContext("capturing " + role +
                                          " as a CUDA graph");
      }
      QLORA_CUDA_RETURN_IF_ERROR(ended);
      cudaGraphExec_t exec = nullptr;
      cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      QLORA_CUDA_RETURN_IF_ERROR(instantiated);
      found = graphs_.emplace(role, exec).first;
    }
    QLORA_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(found->second, stream_));
    return Status::ok();
  }
  Status synchronize() override {
    cudaError_t code = cudaStreamSynchronize(stream_);
    if (code != cudaSuccess)
      return makeError("the step failed on the GPU: {} ({})",
                       cudaGetErrorString(code), cudaGetErrorName(code));
    for (const Pending &read : pending_) {
      read.out->resize(read.bytes);
      std::memcpy(read.out->data(), staging_ + read.at, read.bytes);
    }
    pending_.clear();
    stagingUsed_ = 0;
    return Status::ok();
  }
  Status snapshot(uint64_t offset, size_t bytes) override {
    QLORA_RETURN_IF_ERROR(check(offset, bytes));
    if (bytes > snapshotCapacity_) {
      cudaFree(snapshot_);
      snapshot_ = nullptr;
      QLORA_CUDA_RETURN_IF_ERROR(
          cudaMalloc(reinterpret_cast<void **>(&snapshot_), bytes));
      snapshotCapacity_ = bytes;
    }
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(snapshot_, arena_ + offset,
                                               bytes, cudaMemcpyDeviceToDevice,
                                               stream_));
    snapshotOffset_ = offset;
    snapshotBytes_ = bytes;
    return Status::ok();
  }
  Status restore() override {
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        arena_ + snapshotOffset_, snapshot_, snapshotBytes_,
        cudaMemcpyDeviceToDevice, stream_));
    return synchronize();
  }
  Status countNonFinite(const std::vector<FloatRange> &ranges,
                        int64_t *result) override {
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(counter_, 0, sizeof(unsigned long long), stream_));
    for (const FloatRange &range : ranges) {
      QLORA_RETURN_IF_ERROR(check(range.offset, size_t(range.count) * 4));
      QLORA_RETURN_IF_ERROR(cuda::countNonFinite(
          reinterpret_cast<const float *>(arena_ + range.offset), range.count,
          counter_, stream_));
    }
    unsigned long long count = 0;
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(&count, counter_, sizeof count,
                                               cudaMemcpyDeviceToHost,
                                               stream_));
    QLORA_RETURN_IF_ERROR(synchronize());
    *result = int64_t(count);
    return Status::ok();
  }

private:
  struct Pending {
    size_t at, bytes;
    std::vector<uint8_t> *out;
  };

  Status check(uint64_t offset, size_t bytes) const {
    return checkArenaRange(offset, bytes, bytes_);
  }
  Status reserveStaging(size_t bytes) {
    if (bytes <= stagingCapacity_)
      return Status::ok();
    if (!pending_.empty())
      QLORA_RETURN_IF_ERROR(synchronize());
    cudaFreeHost(staging_);
    staging_ = nullptr;
    size_t capacity = std::max<size_t>(bytes, 4096) * 2;
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaMallocHost(reinterpret_cast<void **>(&staging_), capacity));
    stagingCapacity_ = capacity;
    return Status::ok();
  }

  const StepLibrary &library_;
  std::string description_;
  uint8_t *arena_ = nullptr;
  uint64_t bytes_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  bool useGraphs_ = true;
  void *profiler_ = nullptr;
  std::map<std::string, cudaGraphExec_t> graphs_;
  uint8_t *staging_ = nullptr;
  size_t stagingCapacity_ = 0, stagingUsed_ = 0;
  std::vector<Pending> pending_;
  uint8_t *snapshot_ = nullptr;
  size_t snapshotCapacity_ = 0, snapshotBytes_ = 0;
  uint64_t snapshotOffset_ = 0;
  unsigned long long *counter_ = nullptr;
  uint8_t *hostArena_ = nullptr;
  uint64_t hostArenaBytes_ = 0;
  cudaStream_t copyStream_ = nullptr;
  std::vector<void *> events_; ///< cudaEvent_t: each transfer's start, end
};

} // namespace

Expected<std::unique_ptr<StepBackend>>
openCudaBackend(const StepLibrary &library) {
  if (library.manifest().target != "cuda")
    return makeError("the step in {} targets {}, not cuda",
                     library.directory(), library.manifest().target);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    return makeError("the step in {} targets cuda and this machine has no "
                     "GPU (compile one with --target cpu to train here)",
                     library.directory());
  auto backend = std::make_unique<CudaBackend>(library);
  QLORA_RETURN_IF_ERROR(backend->open());
  return std::unique_ptr<StepBackend>(std::move(backend));
}

bool cudaBackendAvailable() {
  int devices = 0;
  return cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0;
}

} // namespace qlora
